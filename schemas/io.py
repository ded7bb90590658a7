"""Validation and Parquet read/write with the schema version check.

Writes are atomic (a temp name in the same folder, then rename) and zstd-compressed;
reads refuse files whose schema name or version this openwit does not know.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import columns as C
from schemas import fileio
from schemas.errors import SchemaError
from schemas.reasons import REASONS
from schemas.tables import KNOWN_VERSIONS, META_NAME, META_VERSION, MIN_VERSIONS, schema_name

PARQUET_SUFFIX = ".parquet"
COMPRESSION = "zstd"


def _where(where: str | os.PathLike | None) -> str:
    return f"{where}: " if where else ""


def validate(table: pa.Table, schema: pa.Schema, where: str | os.PathLike | None = None) -> pa.Table:
    """Check ``table`` against ``schema`` and return it in schema order with its metadata.

    Raises SchemaError naming the file (``where``) and the offending column: a missing or
    unexpected column, a wrong type, nulls in a required column, or an unknown reason code.
    """
    name = schema_name(schema) or "schema"
    prefix = _where(where)
    have = set(table.column_names)
    for field in schema:
        if field.name not in have:
            raise SchemaError(f"{prefix}missing column '{field.name}' ({name} expects {field.type})")
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise SchemaError(f"{prefix}unexpected column '{extra[0]}' (not in {name})")
    for field in schema:
        col = table.column(field.name)
        if col.type != field.type:
            raise SchemaError(
                f"{prefix}column '{field.name}' is {col.type}, {name} expects {field.type}"
            )
        if not field.nullable and col.null_count:
            raise SchemaError(
                f"{prefix}column '{field.name}' has {col.null_count} null(s); {name} requires a value"
            )
    if C.REASON in schema.names and len(table):
        codes = pc.unique(table.column(C.REASON).drop_null()).to_pylist()
        unknown = sorted(c for c in codes if c not in REASONS)
        if unknown:
            raise SchemaError(f"{prefix}column '{C.REASON}' has unknown reason code '{unknown[0]}'")
    return table.select(schema.names).cast(schema)


def check_metadata(file_schema: pa.Schema, schema: pa.Schema, where: str | os.PathLike) -> None:
    """Refuse a file written as another schema or by an unknown schema version."""
    meta = file_schema.metadata or {}
    want = schema_name(schema)
    got = meta.get(META_NAME, b"").decode()
    if not got:
        raise SchemaError(f"{where}: not an openwit {want} file (no schema metadata)")
    if got != want:
        raise SchemaError(f"{where}: is a {got} file, expected {want}")
    raw = meta.get(META_VERSION, b"").decode()
    try:
        version = int(raw)
    except ValueError:
        version = None
    known_here = {v for v in KNOWN_VERSIONS if v >= MIN_VERSIONS.get(want, 0)}
    if version not in known_here:
        known = ", ".join(str(v) for v in sorted(known_here))
        raise SchemaError(
            f"{where}: {want} schema version {raw or '?'} is not known to this openwit "
            f"(it reads version {known}); rerun the stage that wrote it with this version"
        )


def write_table(table: pa.Table, path: str | os.PathLike, schema: pa.Schema) -> str:
    """Validate and write ``table`` atomically as zstd Parquet carrying the schema metadata."""
    path = str(path)
    table = validate(table, schema, where=path)
    with fileio.atomic_local(path) as tmp:
        pq.write_table(table, tmp, compression=COMPRESSION)
    return path


def parquet_files(path: str | os.PathLike) -> list[str]:
    """The Parquet files of a path: itself, or the sorted ``*.parquet`` files in a folder."""
    path = str(path)
    if fileio.isdir(path):
        files = [fileio.join(path, n) for n in fileio.listdir(path)
                 if n.endswith(PARQUET_SUFFIX) and not n.startswith(".")]
        if not files:
            raise SchemaError(f"{path}: no {PARQUET_SUFFIX} files in this folder")
        return files
    if not fileio.exists(path):
        raise SchemaError(f"{path}: no such file or folder")
    return [path]


def read_table(path: str | os.PathLike, schema: pa.Schema) -> pa.Table:
    """Read one Parquet file or a folder of them as ``schema``, checking name and version."""
    tables = []
    for f in parquet_files(path):
        with fileio.open_read(f) as fh:
            try:
                pf = pq.ParquetFile(fh)
                check_metadata(pf.schema_arrow, schema, f)
                table = pf.read()
            except (pa.ArrowInvalid, OSError) as e:
                raise SchemaError(f"{f}: not a readable Parquet file ({e})") from None
        tables.append(validate(table, schema, where=f))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
