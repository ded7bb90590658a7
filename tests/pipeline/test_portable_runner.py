"""The Beam jobs through Beam's portable Job API, as Flink, Spark and Dataflow run them.

Beam's own job service (``local_job_service_main``) and an external worker pool
(``worker_pool_main``) run as separate processes started here. Each job is submitted with
``--runner=PortableRunner --job_endpoint=... --environment_type=EXTERNAL``: the pipeline
is serialised, its artifacts staged to the job service, and every DoFn unpickled and set up
in SDK worker processes that the pool starts, none of them the launcher. extract, curate,
queries build, dedupe and shard write the same bytes as on the local FnApiRunner, and the
launcher's ledger (from the runner's counters) is the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import curate, dedupe, extract, queries, shard
from pipeline.synth import crawl
from schemas import fileio
from tests.pipeline import downloaded
from tests.servers import free_port, wait_for_port
from tests.pipeline.test_queries import TITLES, WORDNET, _corpus

pytestmark = pytest.mark.slow
LOCAL = ["--direct_num_workers=2"]
TIMING_KEYS = ("seconds", "elapsed", "started", "finished", "runner", "command")  # not-a-column: ledger keys


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """The flags that send a job to a Beam job service with an external worker pool."""
    logs = tmp_path_factory.mktemp("beam-services")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    job_port, pool_port = free_port(), free_port()
    procs = []
    try:
        for module, args, port in (
                ("apache_beam.runners.portability.local_job_service_main", ["--port", str(job_port)], job_port),
                ("apache_beam.runners.worker.worker_pool_main", ["--service_port", str(pool_port)], pool_port)):
            log = open(logs / f"{module.rsplit('.', 1)[1]}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen([sys.executable, "-m", module, *args], stdout=log,
                                           stderr=subprocess.STDOUT, env=env, cwd=logs), log))
            wait_for_port(port, procs[-1][0], module)
        yield {"flags": ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
                         "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"],
               "pool_log": logs / "worker_pool_main.log", "pids": [p.pid for p, _ in procs]}
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


COMMAND = re.compile(rb"openwit \w+ --[^\n\"]*")  # the command line a dataset card records


def _files(folder: str, source: str) -> dict[str, bytes]:
    """Every file's bytes (a local folder or an s3:// prefix), but for the recorded command
    line (its flags name the runner and the folders) and the input folder's location (the
    per-file reports name where an input lay)."""
    return {name: COMMAND.sub(b"COMMAND", fileio.read_bytes(fileio.join(folder, name))).replace(source.encode(), b"IN")
            for name in fileio.walk(folder)}


def _same(a: tuple[str, str], b: tuple[str, str]) -> None:
    fa, fb = _files(*a), _files(*b)
    assert sorted(fa) == sorted(fb) and fa
    differ = [name for name in fa if fa[name] != fb[name]]
    assert not differ, differ


def _ledger(stats: dict, *places: str) -> dict:
    """The ledger with the run's own folders and timings left out."""
    text = json.dumps({k: v for k, v in stats.items() if k not in TIMING_KEYS}, sort_keys=True)
    for place in places:
        text = text.replace(place, "PLACE")
    return json.loads(text)


def test_every_beam_job_on_the_portable_runner_writes_what_the_local_runner_writes(s3, portable, small_crawl,
                                                                                   tmp_path):
    """The same five jobs on the local FnApiRunner, and on the portable runner with every
    input and output on the S3 server, so the workers share no disk with the launcher
    (they reach the store through the AWS variables of their own environment)."""
    folder, _ = small_crawl
    built = tmp_path / "built"
    downloaded.build(built, pictures=80)
    titles = tmp_path / "views.tsv"
    titles.write_text(TITLES)
    corpus = _corpus(tmp_path)
    inputs = {"local": str(tmp_path / "in"), "portable-s3": f"{s3}/portable/in"}
    fileio.put_tree(str(folder / crawl.WAT_DIR), fileio.join(inputs["local"], "wat"))
    for sub in ("download", "curate", "eval"):
        fileio.put_tree(str(built / sub), fileio.join(inputs["local"], sub))
    fileio.put_tree(inputs["local"], inputs["portable-s3"])
    fileio.write_text(fileio.join(inputs["portable-s3"], "views.tsv"), TITLES)
    fileio.write_bytes(fileio.join(inputs["portable-s3"], "corpus.txt"), corpus.read_bytes())
    fileio.write_text(fileio.join(inputs["local"], "views.tsv"), TITLES)
    fileio.write_bytes(fileio.join(inputs["local"], "corpus.txt"), corpus.read_bytes())
    starts_before = portable["pool_log"].read_text().count("Starting worker")
    outs = {"local": str(tmp_path / "local"), "portable-s3": f"{s3}/portable/out"}
    ledgers = {}
    for name, flags in (("local", LOCAL), ("portable-s3", portable["flags"])):
        src, out = inputs[name], outs[name]
        stats = {
            "extract": extract.run(["--input", fileio.join(src, "wat", "*.wat.gz"),
                                    "--output", fileio.join(out, "extract"), *flags]),
            "curate": curate.run(["--input", fileio.join(out, "extract"), "--output", fileio.join(out, "curate"),
                                  "--languages", "all", "--t", "30", *flags]),
            "queries": queries.build(["--corpus", fileio.join(src, "corpus.txt"), "--wordnet", str(WORDNET),
                                      "--titles", fileio.join(src, "views.tsv"), "--min-count", "2",
                                      "--min-bigram-count", "2", "--min-pmi", "2.5",
                                      "--output", fileio.join(out, "queries"), *flags]),
            "dedupe": dedupe.run(["--input", fileio.join(src, "download"), "--output", fileio.join(out, "dedupe"),
                                  "--eval-images", f"heldout={fileio.join(src, 'eval')}", *flags]),
            "shards": shard.run(["--keep", fileio.join(out, "dedupe"), "--images", fileio.join(src, "download"),
                                "--curated", fileio.join(src, "curate"), "--output", fileio.join(out, "shards"),
                                "--samples-per-shard", "16", *([] if flags is LOCAL else flags)]),
        }
        ledgers[name] = {stage: _ledger(v, out, src) for stage, v in stats.items()}
    assert ledgers["local"] == ledgers["portable-s3"]
    for stage in ("extract", "curate", "queries", "dedupe", "shards"):
        _same((fileio.join(outs["local"], stage), inputs["local"]),
              (fileio.join(outs["portable-s3"], stage), inputs["portable-s3"]))
    assert ledgers["local"]["extract"]["kept"] > 0 and ledgers["local"]["shards"]["kept"] > 0
    # the work ran in SDK worker processes that the pool started, one or more per job
    started = portable["pool_log"].read_text().count("Starting worker") - starts_before
    assert started >= 5, started
