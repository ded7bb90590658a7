"""Stages on object storage: a real S3 server process on loopback (moto's standalone
server, an HTTP S3 endpoint), reached through the standard AWS environment variables.

extract and curate read their inputs from and write every output to s3:// URLs, on Beam's
FnApiRunner with worker processes, and write what the same commands write locally: the
same object names and the same bytes."""

from __future__ import annotations

import pytest

from schemas import UserError
from pipeline import curate, extract, validate
from schemas import fileio
from pipeline.synth import crawl

pytestmark = pytest.mark.slow
WORKERS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _tree(folder: str) -> dict[str, bytes]:
    """Every file under a local folder or an s3:// prefix, by path relative to it."""
    return {name: fileio.read_bytes(fileio.join(folder, name)) for name in fileio.walk(folder)}


def _comparable(name: str, data: bytes, source_root: str) -> tuple[str, bytes]:
    """(name, bytes) with the input's location taken out of the per-file reports, the one
    place that names where an input lay (rows name it relative to its input folder)."""
    return name, data.replace(source_root.encode(), b"") if name.startswith("extract/files/") else data


def test_extract_and_curate_on_s3_write_what_a_local_run_writes(s3, small_crawl, tmp_path):
    folder, _ = small_crawl
    fileio.put_tree(str(folder / crawl.WAT_DIR), f"{s3}/crawl")
    runs = {"local": (f"{folder / crawl.WAT_DIR}/", str(tmp_path / "run")),
            "s3": (f"{s3}/crawl/", f"{s3}/run")}
    trees, ledgers = {}, {}
    for name, (source, out) in runs.items():
        ex = extract.run(["--input", f"{source}*.wat.gz", "--output", fileio.join(out, "extract"), *WORKERS])
        cu = curate.run(["--input", fileio.join(out, "extract"), "--output", fileio.join(out, "curate"),
                         "--languages", "all", *WORKERS])
        assert ex["candidates"] > 0 and cu["curated"] > 0 and cu["ledger_ok"]
        tree = _tree(out)
        assert "extract/extract_stats.json" in tree and "curate/curate_stats.json" in tree
        trees[name] = dict(_comparable(k, v, source) for k, v in tree.items() if not k.endswith("_stats.json"))
        ledgers[name] = (ex["steps"], cu["steps"])
    local, remote = trees["local"], trees["s3"]
    assert sorted(local) == sorted(remote) and len(local) > 8, (sorted(local), sorted(remote))
    different = [k for k in local if local[k] != remote[k]]
    assert not different, different
    assert ledgers["local"] == ledgers["s3"]


def test_file_layer_on_s3_and_one_line_errors(s3, tmp_path):
    base = f"{s3}/layer"
    fileio.makedirs(base)  # a probe object, written and removed
    fileio.write_json(fileio.join(base, "a.json"), {"a": 1})
    fileio.write_json(fileio.join(base, "sub", "b.json"), {"b": 2})
    assert fileio.read_json(fileio.join(base, "a.json")) == {"a": 1}
    assert fileio.listdir(base) == ["a.json"] and fileio.isdir(fileio.join(base, "sub"))
    assert fileio.expand_inputs([f"{base}/*.json"]) == [f"{base}/a.json"]
    assert fileio.expand_inputs([f"{base}/"]) == [f"{base}/a.json", f"{base}/sub/b.json"]
    fileio.remove(fileio.join(base, "a.json"))
    assert fileio.listdir(base) == [] and not fileio.exists(fileio.join(base, "a.json"))
    odd = fileio.join(base, "odd", "é x[1].json")  # a key is any text: no URI parsing of it
    fileio.write_json(odd, {"é": 1})
    assert fileio.read_json(odd) == {"é": 1} and fileio.named_inputs([fileio.join(base, "odd/")]) == [
        (odd, "é x[1].json")]
    with pytest.raises(UserError, match="s3://no-such-bucket/out: cannot write here"):
        fileio.makedirs("s3://no-such-bucket/out")
    with pytest.raises(UserError, match="matches nothing"):
        fileio.expand_inputs(["s3://no-such-bucket/*.wat.gz"])


def test_validate_reads_a_run_on_s3(s3, tmp_path, capsys):
    from tests.pipeline.test_validate import _run

    local = _run(tmp_path / "run")
    fileio.put_tree(str(local), f"{s3}/vrun")
    assert validate.main([f"{s3}/vrun", "--min-shards", "2", "--min-samples", "40"]) == 0
    assert "validate: all 24 checks passed" in capsys.readouterr().out
    assert fileio.read_json(f"{s3}/vrun/validate.json")["ok"]
    fileio.remove(f"{s3}/vrun/shards/00001.tar")
    assert validate.main([f"{s3}/vrun"]) == 1
    assert "1 missing (first: 00001.tar)" in capsys.readouterr().err
