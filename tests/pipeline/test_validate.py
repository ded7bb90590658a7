"""`openwit validate`: the gate before training passes a consistent run and stops any
other with one line naming the check and its values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import schemas
from schemas import columns as C

OPENWIT = [sys.executable, "-m", "pipeline.cli"]


def _ledger(stage: str, steps: list[tuple]) -> dict:
    rejected: dict = {}
    for *_, r in steps:
        for k, v in r.items():
            rejected[k] = rejected.get(k, 0) + v
    return {C.STAGE: stage, "in": steps[0][1], "kept": steps[-1][2], "rejected": rejected,
            "steps": [{"step": n, "in": i, "kept": k, "rejected": r} for n, i, k, r in steps]}


def _run(root: Path) -> Path:
    files = {  # each stage's ledger as the run contract (schemas.run) shapes it
        "extract/extract_stats.json": _ledger("extract", [("links", 100, 90, {"empty_alt": 10})]),
        "curate/curate_stats.json": _ledger("curate", [("clean", 90, 80, {"boilerplate_text": 10}),
                                                       ("balance", 80, 60, {"balanced_out": 20})]),
        "download/download_stats.json": _ledger("download", [("fetch", 60, 45, {"not_found": 15})]),
        "dedupe/dedupe_stats.json": _ledger("dedupe", [("exact", 45, 40, {"exact_duplicate": 5})]),
        "shards/shard_stats.json": {**_ledger(schemas.run.SHARD, [("join", 40, 40, {})]), "shards": 2},
        "shards/sizes.json": {"00000.tar": 20, "00001.tar": 20},
    }
    for name, obj in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(obj))
    for n in ("00000.tar", "00001.tar"):
        (root / "shards" / n).write_bytes(b"\0" * 1024)
    return root


def validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*OPENWIT, "validate", *args], capture_output=True, text=True, timeout=60)


def test_a_consistent_run_passes(tmp_path):
    root = _run(tmp_path)
    proc = validate(str(root), "--min-download-success", "0.75", "--min-shards", "2", "--min-samples", "40")
    assert proc.returncode == 0, proc.stderr
    assert "validate: all 24 checks passed" in proc.stdout
    assert "ok   download success rate            75.0% (45 of 60), threshold 75.0%" in proc.stdout
    result = json.loads((root / "validate.json").read_text())
    assert result["ok"] and len(result["checks"]) == 24


def _edit(root: Path, name: str, **changes) -> None:
    obj = json.loads((root / name).read_text())
    obj.update(changes)
    (root / name).write_text(json.dumps(obj))


@pytest.mark.parametrize("change, args, line", [
    (lambda r: (r / "dedupe" / "dedupe_stats.json").unlink(), [],
     "check 'dedupe finished' failed: dedupe/dedupe_stats.json missing"),
    (lambda r: _edit(r, "extract/extract_stats.json", kept=91), [],
     "check 'extract ledger' failed: in 100, kept 91 + rejected 10 = 101"),
    (lambda r: _edit(r, "curate/curate_stats.json", steps=[
        {"step": "clean", "in": 90, "kept": 80, "rejected": {"boilerplate_text": 10}},
        {"step": "balance", "in": 81, "kept": 60, "rejected": {"balanced_out": 21}}],
        rejected={"boilerplate_text": 10, "balanced_out": 21}), [],
     "check 'curate ledger' failed: in 90, kept 60 + rejected 31 = 91 (and 1 more failed check(s)"),
    (lambda r: _edit(r, "download/download_stats.json", **{"in": 61, "rejected": {"not_found": 16}, "steps": [
        {"step": "fetch", "in": 61, "kept": 45, "rejected": {"not_found": 16}}]}), [],
     "check 'curate -> download' failed: curate kept 60, download read 61"),
    (None, ["--min-download-success", "0.8"],
     "check 'download success rate' failed: 75.0% (45 of 60), threshold 80.0%"),
    (None, ["--min-shards", "3", "--min-samples", "41"],
     "check 'shard count' failed: 2 shards, threshold 3 (and 1 more failed check(s); see "),
    (lambda r: (r / "shards" / "00001.tar").unlink(), [],
     "check 'shards on disk' failed: 2 listed in sizes.json (40 samples), 1 missing (first: 00001.tar)"),
])
def test_a_failed_check_stops_the_run_with_one_line(tmp_path, change, args, line):
    root = _run(tmp_path)
    if change:
        change(root)
    proc = validate(str(root), *args)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("openwit validate: " + line), lines[0]
    assert not json.loads((root / "validate.json").read_text())["ok"]


@pytest.mark.parametrize("args, words", [
    (["{root}/nope"], "no such run folder"),
    (["{root}", "--min-download-success", "2"], "between 0 and 1"),
    (["{root}", "--min-shards", "x"], "--min-shards"),
])
def test_bad_options_end_in_one_line(tmp_path, args, words):
    proc = validate(*[a.format(root=tmp_path) for a in args])
    assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc


def test_a_file_that_is_not_a_ledger_is_one_line(tmp_path):
    root = _run(tmp_path)
    (root / "curate" / "curate_stats.json").write_text(json.dumps({"candidates": 90, "curated": 60}))
    proc = validate(str(root))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc
    assert "curate_stats.json: not an openwit ledger (missing stage, in, kept, rejected, steps)" in proc.stderr
