"""Run the openwit DAG for real with ``dag.test()`` on a generated crawl served on loopback.

    python -m tests.dags.run_dag WORK [RUNS]   (AIRFLOW_HOME and the metadata DB must be set up)

Runs the DAG RUNS times (default 1) with the same parameters, as retries of every task
would, and writes WORK/result.json: per run, its state, each task's state and tries, and
the sha256 of every output file that must not change when a task runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from pipeline import querylist
from pipeline.synth import benchmark, crawl
from pipeline.synth.server import SyntheticWeb, free_hosts

DAGS = Path(__file__).resolve().parents[2] / "dags"


# outputs a rerun must reproduce byte for byte (ledgers with timings and TensorBoard event
# files are not compared; checkpoints are covered by the final weights)
COMPARED = (".parquet", ".tar", ".pt", ".html", "results.json", "metrics.jsonl", "validate.json", "sizes.json",
            "README.md", "config.json")


def digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and p.name.endswith(COMPARED) and "/checkpoints/" not in f"/{rel}" and "/_staging/" not in f"/{rel}":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main(work: Path, runs: int = 1) -> int:
    from airflow.dag_processing.dagbag import DagBag

    cfg = crawl.CrawlConfig(pages=300, seed=3, pages_per_file=100, hosts=free_hosts(8))
    crawl.generate(cfg, work / "crawl")
    queries = querylist.write(querylist.frequent_words(50_000), work / "queries.txt")
    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("openwit")
    from tests.pipeline.test_score import random_model  # a filter model: the score task filters for real

    model = random_model(work / "filter_model")
    conf = {
        "input": str(work / "crawl" / crawl.WAT_PATHS),
        "output_root": str(work / "run"),
        "queries": str(queries),
        "t": 30,  # balanced last (the default): in shard, on the counts after download and dedupe
        "curate_t": 60,  # and loosely before download, with a larger t
        "download_processes": 2,
        "download_threads": 16,
        "image_size": 64,
        "samples_per_shard": 500,
        "download_options": ["--timeout=2", "--retries=1",
                             *sorted({f"--allow={h}" for h in cfg.hosts})],
        "eval_images": [f"heldout={work / 'crawl' / crawl.EVAL_IMAGES_DIR}"],
        "dedupe_options": ["--eval-radius=6"],
        "beam_options": ["--labels=openwit-test=dag", "--direct_num_workers=2"],
        "score_model": str(model),
        "score_keep_top": 0.9,
        "score_options": ["--batch-size=32"],
        "min_download_success": 0.6,
        "min_shards": 2,
        "recipe": "debug",
        "train_settings": ["epochs=1", "log_every=2", "eval_every=5"],
        "eval_suite": str(work / "crawl" / benchmark.BENCHMARK_DIR),
        "eval_options": [],  # the preprocessing comes from the shards, through the run
    }
    results = []
    with SyntheticWeb(cfg.hosts, slow_seconds=3.0, processes=2):
        for _ in range(runs):
            run = dag.test(run_conf=conf)
            tasks = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number}
                     for ti in run.get_task_instances()}
            results.append({"state": str(run.state), "tasks": tasks, "outputs": digests(work / "run")})
    (work / "result.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1))
