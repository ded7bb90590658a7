"""The Airflow DAG: the folder imports with the expected task graph and parameters, and
``dag.test()`` runs the whole job for real (twice, so every task runs again as a retry
would and must reproduce its output) on a generated crawl served on loopback, with a
SQLite metadata DB set up here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.test_report import ALL_FIGURES, check_report_in_chromium

REPO = Path(__file__).resolve().parents[2]
CHAIN = ["extract", "curate", "download", "dedupe", "score", "shard", "validate", "train", "eval", "report"]  # not-a-column


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return env


GRAPH = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
dag = bag.get_dag("openwit")
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids),
    "params": sorted(dag.params.keys()),
    "tasks": {t.task_id: {"down": sorted(t.downstream_task_ids), "op": type(t).__name__, "retries": t.retries,
              "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None}
              for t in dag.tasks}}))
"""


def test_the_dag_folder_imports_with_the_expected_graph(airflow_env):
    proc = subprocess.run([sys.executable, "-c", GRAPH % str(REPO / "dags")], env=airflow_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["errors"] == {} and got["dags"] == ["openwit"]
    tasks = got["tasks"]
    assert sorted(tasks) == sorted(CHAIN)
    for a, b in zip(CHAIN, CHAIN[1:]):
        assert tasks[a]["down"] == [b], (a, tasks[a])
    assert tasks["report"]["down"] == []
    assert all(t["op"] == "BashOperator" for t in tasks.values())
    assert tasks["validate"]["retries"] == 0 and tasks["extract"]["retries"] == 2
    assert tasks["train"]["timeout"] >= 30 * 86400  # a multi-day run is not killed by a clock
    for p in ("input", "output_root", "queries", "balance", "t", "target_size", "curate_t", "per_language_t", "languages",
              "beam_runner", "beam_options",
              "download_processes", "recipe", "hostfile", "launcher", "eval_suite", "min_download_success", "min_shards",
              "score_model", "score_keep_top", "score_min_score", "score_options"):
        assert p in got["params"], p


@pytest.mark.slow
def test_dag_test_runs_the_whole_job_twice_with_the_same_outputs(airflow_env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tests.dags.run_dag", str(tmp_path), "2"], env=airflow_env,
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    first, second = json.loads((tmp_path / "result.json").read_text())
    for run in (first, second):
        assert run["state"] == "success", run
        assert {t: v["state"] for t, v in run["tasks"].items()} == {t: "success" for t in CHAIN}
    # every task ran again and reproduced its output: what Airflow's retries rely on
    assert first["outputs"] == second["outputs"]
    outputs = first["outputs"]
    for name in ("shards/00000.tar", "shards/00001.tar", "train/final_weights.pt", "eval/results.json",
                 "report.html", "validate.json"):
        assert name in outputs, sorted(outputs)
    run = tmp_path / "run"
    assert json.loads((run / "validate.json").read_text())["ok"]
    curated, sharded = (json.loads((run / f).read_text()) for f in ("curate/curate_stats.json", "shards/shard_stats.json"))
    assert curated["t"] == 60 and sharded["balance"] == "last" and sharded["t"] == 30
    assert sharded["rejected"].get("balanced_out", 0) > 0 and sharded["ledger_ok"]
    scored = json.loads((run / "score" / "score_stats.json").read_text())  # filtered by the model, then sharded
    assert scored["keep_top"] == 0.9 and scored["kept"] == int(0.9 * scored["in"] + 0.5) == sharded["in"]
    evals = json.loads((run / "eval" / "results.json").read_text())
    assert {Path(r["dataset"]).name for r in evals} >= {"zeroshot_shape", "zeroshot_colour", "retrieval"}
    assert any("eval" in json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines())
    check_report_in_chromium(run / "report.html", ALL_FIGURES, samples=24)
