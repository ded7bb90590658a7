"""openwit's data contracts: column names, one pyarrow schema per stage output, the
closed set of reject reasons, stable ids and purpose-tagged draws (``ids``), the run's
stages, layout and ledger (``run``), and Parquet I/O with a schema-version check.

This package imports only pyarrow (and the standard library).
"""

from schemas import columns
from schemas.errors import SchemaError, UserError
from schemas import ids, run
from schemas.ids import uid
from schemas.io import check_metadata, parquet_files, read_table, validate, write_table
from schemas.reasons import REASONS, describe
from schemas.tables import (
    ALL,
    CANDIDATE,
    CURATED,
    DOWNLOADED,
    GROUND_TRUTH,
    KEEP,
    KNOWN_VERSIONS,
    QUERY_COUNTS,
    QUERY_LIST,
    REJECT,
    SCHEMA_VERSION,
    SCORES,
    SHARD_INDEX,
    schema_name,
)

__all__ = [
    "ALL", "CANDIDATE", "CURATED", "DOWNLOADED", "GROUND_TRUTH", "KEEP", "KNOWN_VERSIONS",
    "QUERY_COUNTS", "QUERY_LIST", "REASONS", "REJECT", "SCHEMA_VERSION", "SCORES", "SHARD_INDEX", "SchemaError",
    "UserError", "check_metadata", "columns", "ids", "run", "describe", "parquet_files", "read_table",
    "schema_name", "uid", "validate", "write_table",
]
