"""The quick chain with every input and output on object storage, against a local run.

A real S3-compatible server process on loopback (the ``s3`` fixture), reached only through
the standard AWS environment variables, as a user's cluster would reach its store. The
chain runs as a user runs it, one ``openwit`` command per stage: extract -> curate ->
download -> dedupe -> score -> shard -> validate -> train -> export -> eval -> report, once
with a local run folder and once with an s3:// one (inputs too: the crawl's WAT files, the
evaluation images, the evaluation suite and the scoring model). The shards, the SHARD_INDEX, every other
Parquet output, the ledgers' counts, the trained weights and the exported model are the
same bytes in both (download's per-url records: the same outcome for every url).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time

import pyarrow.parquet as pq
import pytest

from schemas import columns as C
from schemas import fileio
from schemas import run as RUN
from pipeline.synth import benchmark, crawl
from tests.pipeline.test_object_store import _tree

pytestmark = pytest.mark.slow
BEAM = ["--direct_num_workers=2"]
LEDGER_KEYS = ("stage", "in", "kept", "rejected", "steps", "ledger_ok")  # not-a-column: ledger keys


def _openwit(*args: str) -> str:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])
    print(f"openwit {args[0]}: {time.monotonic() - t0:.1f}s", file=sys.stderr)  # where CI's minutes go
    return proc.stdout


def _chain(crawl_root: str, root: str, hosts: list[str], model: str) -> None:
    p = RUN.layout(root)
    _openwit("extract", "--input", fileio.join(crawl_root, crawl.WAT_DIR, "*.wat.gz"), "--output",
             p[RUN.EXTRACT], *BEAM)
    _openwit("curate", "--input", p[RUN.EXTRACT], "--output", p[RUN.CURATE], "--languages", "all", "--t", "30",
             *BEAM)
    _openwit("download", "--input", p[RUN.CURATE], "--output", p[RUN.DOWNLOAD], "--workers", "1",
             "--threads", "8", "--image-size", "64", "--samples-per-shard", "300", "--timeout", "1", "--hang-grace", "2",
             *[f"--allow={h}" for h in sorted(set(hosts))])
    _openwit("dedupe", "--input", p[RUN.DOWNLOAD], "--output", p[RUN.DEDUPE],
             "--eval-images", f"heldout={fileio.join(crawl_root, crawl.EVAL_IMAGES_DIR)}", *BEAM)
    _openwit("score", "--keep", p[RUN.DEDUPE], "--images", p[RUN.DOWNLOAD], "--model", model,
             "--output", p[RUN.SCORE], "--keep-top", "0.9", *BEAM)
    _openwit("shard", "--keep", p[RUN.SCORE], "--images", p[RUN.DOWNLOAD],  # not-a-column: the subcommand
             "--curated", p[RUN.CURATE],
             "--output", p[RUN.SHARD], "--samples-per-shard", "200")
    _openwit("validate", root, "--min-download-success", "0.5", "--min-shards", "2")
    _openwit("train", "--recipe", "debug", "--data", p[RUN.SHARD], "--output", p[RUN.TRAIN],
             "--set", "model=openwit-debug", "--set", "workers=1", "--set", "steps=4", "--set", "micro_batch=16",
             "--set", "checkpoint_every=2", "--set", "log_every=1")
    export = fileio.join(root, "export")
    _openwit("export", "--run", p[RUN.TRAIN], "--output", export)
    # letterboxing, as download's border resize made the training images: recorded from the shards
    # through the run into the export, so eval needs no --resize-mode
    assert fileio.read_json(fileio.join(export, "open_clip_config.json"))["preprocess_cfg"]["resize_mode"] == "longest"
    _openwit("eval", "--model", export, "--suite", fileio.join(crawl_root, benchmark.BENCHMARK_DIR),
             "--output", p[RUN.EVAL])
    _openwit("report", root)


def _content(name: str, data: bytes) -> object:
    """What must be equal: the bytes, but for download's per-url records, whose error text
    is the fetch's own (a timeout says which phase ran out): there, each url's outcome; and
    img2dataset's own shards, whose order is that in which fetches finish: there, the
    samples (the shards openwit writes are compared byte for byte)."""
    if name.startswith("download/") and name.endswith(".parquet"):
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
        return sorted((r[C.UID], r.get(C.STATUS), r.get(C.REASON), r.get(C.SHA256)) for r in rows)
    if name.startswith("download/") and name.endswith(".tar"):
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            return sorted((m.name, t.extractfile(m).read()) for m in t if m.isfile())
    return data


def test_the_quick_chain_on_s3_writes_what_a_local_run_writes(s3, small_crawl, web, tmp_path):
    folder, manifest = small_crawl
    remote_crawl = f"{s3}/crawl"
    for sub in (crawl.WAT_DIR, crawl.EVAL_IMAGES_DIR, benchmark.BENCHMARK_DIR):
        fileio.put_tree(str(folder / sub), fileio.join(remote_crawl, sub))
    from tests.pipeline.test_score import random_model

    model = str(random_model(tmp_path / "model"))
    fileio.put_tree(model, f"{s3}/model")
    runs = {"local": (str(folder), str(tmp_path / "run"), model), "s3": (remote_crawl, f"{s3}/run", f"{s3}/model")}
    files = {}
    for name, (crawl_root, root, scorer) in runs.items():
        saved = os.umask(0o027)  # a team's umask: every file of the run must follow it, as written in place
        try:
            _chain(crawl_root, root, manifest["hosts"], scorer)
        finally:
            os.umask(saved)
        files[name] = _tree(root)
    local, remote = files["local"], files["s3"]
    modes = {str(p.relative_to(tmp_path / "run")): oct(stat.S_IMODE(p.stat().st_mode))
             for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert {name: mode for name, mode in modes.items() if mode != oct(0o640)} == {}
    assert "export/open_clip_model.safetensors" in modes and "shards/00000.tar" in modes

    def compared(name: str) -> bool:
        return (name.endswith((".parquet", ".tar", ".pt", ".safetensors", "sizes.json", "open_clip_config.json"))
                and "/_staging/" not in f"/{name}" and "/checkpoints/" not in f"/{name}")

    same = sorted(n for n in local if compared(n))
    assert sorted(n for n in remote if compared(n)) == same
    for must in ("shards/00000.tar", "shards/index/00000.parquet", "train/final_weights.pt",
                 "score/scores/part-00000-of-00001.parquet", "score/keep/part-00000-of-00001.parquet",
                 "export/open_clip_model.safetensors", "download/downloaded/00000.parquet"):
        assert must in same, must
    different = [n for n in same if _content(n, local[n]) != _content(n, remote[n])]
    assert not different, different
    for stage in RUN.STAGES:
        name = f"{stage.folder}/{stage.ledger}"
        a, b = json.loads(local[name]), json.loads(remote[name])
        assert {k: a[k] for k in LEDGER_KEYS} == {k: b[k] for k in LEDGER_KEYS}, stage.name
        assert a["ledger_ok"] and a["kept"] > 0, stage.name
    assert json.loads(remote["validate.json"])["ok"]
    # a checkpoint on the store is complete (its sidecar last) and the run's files are all there
    assert "train/checkpoints/step00000004/openwit.json" in remote
    assert {"train/metrics.jsonl", "train/config.json", "train/train_stats.json", "eval/results.json",
            "report.html"} <= set(remote)
    assert local["train/metrics.jsonl"].count(b"\n") == remote["train/metrics.jsonl"].count(b"\n") == 4
    def scores(raw: bytes) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("model", "dataset", "command")} for r in json.loads(raw)]

    assert scores(remote["eval/results.json"]) == scores(local["eval/results.json"])
    assert len(scores(local["eval/results.json"])) >= 2
