"""schemas/: round trips, clear errors on mismatch, version check, atomic writes, uid."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import columns as C
from schemas.tables import META_NAME, META_VERSION

SAMPLE = {
    pa.string(): "x", pa.int64(): 1, pa.int32(): 2, pa.float32(): 0.5, pa.float64(): 0.25,
    pa.bool_(): True, pa.uint64(): (1 << 63) + 5, pa.list_(pa.string()): ["red", "red circle"],
}


def sample_table(schema: pa.Schema, rows: int = 3) -> pa.Table:
    data = {}
    for f in schema:
        value = SAMPLE[f.type]
        if f.name == C.REASON:
            value = "not_found"
        data[f.name] = pa.array([value] * rows, f.type)
    return pa.table(data, schema=schema)


@pytest.mark.parametrize("name", sorted(schemas.ALL))
def test_round_trip_keeps_data_and_metadata(tmp_path, name):
    schema = schemas.ALL[name]
    table = sample_table(schema)
    path = schemas.write_table(table, tmp_path / "t.parquet", schema)
    meta = pq.read_schema(path).metadata
    assert meta[META_NAME] == name.encode()
    assert meta[META_VERSION] == str(schemas.SCHEMA_VERSION).encode()
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    back = schemas.read_table(path, schema)
    assert back.equals(table)
    assert schemas.read_table(tmp_path, schema).num_rows == 3  # a folder of files reads too


def test_validate_reorders_columns_to_the_schema():
    table = sample_table(schemas.CANDIDATE)
    shuffled = table.select(list(reversed(table.column_names)))
    assert schemas.validate(shuffled, schemas.CANDIDATE).column_names == schemas.CANDIDATE.names


def test_missing_column_names_column_and_file(tmp_path):
    table = sample_table(schemas.CANDIDATE).drop_columns([C.TEXT])
    with pytest.raises(schemas.SchemaError, match=rf"^{re.escape(str(tmp_path / 'c.parquet'))}: missing column '{C.TEXT}'"):
        schemas.write_table(table, tmp_path / "c.parquet", schemas.CANDIDATE)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_wrong_type_is_named():
    table = sample_table(schemas.CANDIDATE).set_column(
        schemas.CANDIDATE.get_field_index(C.SOURCE_OFFSET), C.SOURCE_OFFSET, pa.array(["a", "b", "c"]))
    with pytest.raises(schemas.SchemaError, match=f"f.parquet: column '{C.SOURCE_OFFSET}' is string, CANDIDATE expects int64"):
        schemas.validate(table, schemas.CANDIDATE, where="f.parquet")


def test_unexpected_column_and_nulls_and_unknown_reason():
    table = sample_table(schemas.CANDIDATE)
    with pytest.raises(schemas.SchemaError, match="unexpected column 'extra'"):
        schemas.validate(table.append_column("extra", pa.array([1, 2, 3])), schemas.CANDIDATE)
    nulls = table.set_column(0, C.UID, pa.array([None, "a", None], pa.string()))
    with pytest.raises(schemas.SchemaError, match=f"column '{C.UID}' has 2 null"):
        schemas.validate(nulls, schemas.CANDIDATE)
    rejects = sample_table(schemas.REJECT)
    bad = rejects.set_column(rejects.schema.get_field_index(C.REASON), C.REASON, pa.array(["not_found", "because", "timeout"]))
    with pytest.raises(schemas.SchemaError, match="unknown reason code 'because'"):
        schemas.validate(bad, schemas.REJECT)


def test_unknown_version_is_refused_with_a_clear_message(tmp_path):
    table = sample_table(schemas.CURATED)
    future = table.replace_schema_metadata({META_NAME: b"CURATED", META_VERSION: b"99"})
    pq.write_table(future, tmp_path / "future.parquet")
    with pytest.raises(schemas.SchemaError, match=r"future.parquet: CURATED schema version 99 is not known to this openwit \(it reads version 2, 3, 4\)"):
        schemas.read_table(tmp_path / "future.parquet", schemas.CURATED)


def test_version_2_files_read_where_their_schema_did_not_change(tmp_path):
    table = sample_table(schemas.CURATED)
    pq.write_table(table.replace_schema_metadata({META_NAME: b"CURATED", META_VERSION: b"2"}), tmp_path / "v2.parquet")
    assert schemas.read_table(tmp_path / "v2.parquet", schemas.CURATED).num_rows == table.num_rows
    index = sample_table(schemas.SHARD_INDEX)  # version 3 added keep_prob to SHARD_INDEX, 4 clip_score
    for old in (b"2", b"3"):
        pq.write_table(index.replace_schema_metadata({META_NAME: b"SHARD_INDEX", META_VERSION: old}), tmp_path / "i.parquet")
        with pytest.raises(schemas.SchemaError, match=r"i.parquet: SHARD_INDEX schema version \d is not known to this "
                                                      r"openwit \(it reads version 4\); rerun the stage"):
            schemas.read_table(tmp_path / "i.parquet", schemas.SHARD_INDEX)


def test_other_schema_and_foreign_files_are_refused(tmp_path):
    schemas.write_table(sample_table(schemas.CANDIDATE), tmp_path / "c.parquet", schemas.CANDIDATE)
    with pytest.raises(schemas.SchemaError, match="c.parquet: is a CANDIDATE file, expected CURATED"):
        schemas.read_table(tmp_path / "c.parquet", schemas.CURATED)
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(schemas.SchemaError, match="not an openwit CANDIDATE file"):
        schemas.read_table(tmp_path / "foreign.parquet", schemas.CANDIDATE)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(schemas.SchemaError, match="junk.parquet: not a readable Parquet file"):
        schemas.read_table(tmp_path / "junk.parquet", schemas.CANDIDATE)
    with pytest.raises(schemas.SchemaError, match="no such file or folder"):
        schemas.read_table(tmp_path / "missing", schemas.CANDIDATE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(schemas.SchemaError, match="no .parquet files"):
        schemas.read_table(empty, schemas.CANDIDATE)


def test_every_reason_has_a_one_line_description():
    assert len(schemas.REASONS) >= 30
    for code, text in schemas.REASONS.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code), code
        assert text and "\n" not in text and len(text) < 120, code
        assert schemas.describe(code) == text


def test_uid_is_stable_and_unambiguous():
    assert schemas.uid("http://a/b.jpg", "a red star") == "77a6690ab6fd427ea055d12b20dbe42b"
    assert schemas.uid("ab", "c") != schemas.uid("a", "bc")
    assert len({schemas.uid(f"http://h/{i}", "t") for i in range(1000)}) == 1000
