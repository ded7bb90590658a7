"""`openwit download --distributor pyspark` on a Spark standalone cluster: a master and two
workers started here from pyspark's own scripts (Java from the machine), img2dataset's
pyspark distributor running one task per shard in the executors, openwit's guards active
there, the same accounting as the multiprocessing distributor, and a rerun after the
driver is killed that finishes the job without redoing finished shards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyspark
import pytest

import schemas
from schemas import columns as C
from pipeline import download
from tests.servers import free_port
from tests.pipeline.faults import EXPECTED, FAULT_ARGS, curated, fault_run  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow
SPARK_HOME = Path(pyspark.__file__).parent


def _wait_for(log: Path, text: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def spark_master(tmp_path_factory):
    """spark://127.0.0.1:PORT of a standalone master with two one-core workers."""
    if not shutil.which("java"):
        pytest.fail("the Spark test needs Java (17 or later) on PATH")
    root = tmp_path_factory.mktemp("spark")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(root / "logs"), "PYSPARK_PYTHON": sys.executable}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = []
    try:
        log = root / "master.log"
        procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                       "--port", str(port), "--webui-port", str(free_port())],
                                      stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,  # noqa: SIM115
                                      start_new_session=True))
        _wait_for(log, "I have been elected leader", procs[0], "the Spark master")
        for i in range(2):
            log = root / f"worker{i}.log"
            procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host",
                                           "127.0.0.1", "--cores", "1", "--memory", "1g", "--webui-port",
                                           str(free_port()), "--work-dir", str(root / f"work{i}")],
                                          stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,  # noqa: SIM115
                                          start_new_session=True))
            _wait_for(log, "Successfully registered with master", procs[-1], f"Spark worker {i}")
        yield {"master": url, "work": [root / "work0", root / "work1"]}
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _spark(master: dict) -> list[str]:
    return ["--distributor", "pyspark", "--spark-master", master["master"], "--spark-conf", "spark.executor.memory=512m",
            "--spark-conf", "spark.executor.cores=1"]


def _records(folder: Path) -> list[tuple]:
    rows = schemas.read_table(folder / "downloaded", schemas.DOWNLOADED).to_pylist()
    return sorted((r[C.UID], r[C.STATUS], r[C.REASON], r[C.SHA256]) for r in rows)


def _executor_logs(master: dict) -> list[Path]:
    return [p for w in master["work"] if w.exists() for p in w.rglob("stderr")]


def test_download_on_spark_accounts_as_the_multiprocessing_run_with_the_guards_on(web, curated, fault_run,  # noqa: F811
                                                                                  spark_master, tmp_path):
    folder, faults = curated
    local, local_out, _, _, _ = fault_run  # the same list and settings on the multiprocessing distributor
    before = web.stats()
    logs_before = len(_executor_logs(spark_master))
    spark = download.run(["--input", str(folder), *FAULT_ARGS, *_spark(spark_master), "--output",
                          str(tmp_path / "spark")])
    after = web.stats()
    assert spark["ledger_ok"] and spark["missing_from_img2dataset"] == 0
    assert spark["shards_done"] == spark["shards_expected"] == local["shards_expected"]
    assert (spark["in"], spark["kept"], spark["rejected"]) == (local["in"], local["kept"], local["rejected"])
    assert _records(tmp_path / "spark") == _records(local_out)
    rejects = schemas.read_table(tmp_path / "spark" / "rejects", schemas.REJECT)
    assert rejects.num_rows == sum(spark["rejected"].values())
    for uid, _, reason, _ in _records(tmp_path / "spark"):  # every fault ends as its reason
        fault, kind = faults[uid]
        assert reason == ("bad_format" if kind == "svg" else EXPECTED[fault]), (fault, kind)
    # the guards ran in the executors: nothing forbidden was fetched
    assert after["canary_hits"] == before["canary_hits"] and after["private_hits"] == before["private_hits"]
    assert len(_executor_logs(spark_master)) > logs_before  # the work ran in the cluster's executors


def test_a_rerun_after_the_driver_is_killed_finishes_without_redoing_finished_shards(web, curated,  # noqa: F811
                                                                                     spark_master, tmp_path):
    folder, faults = curated
    out = tmp_path / "out"
    # a generous timeout: this test is about the rerun, and a loaded 2-core machine can take
    # more than a second to serve a good image (the slow fault, 2 s, then succeeds too)
    common = ["--input", str(folder), "--allow", "127.0.0.0/8", "--threads", "2", "--timeout", "10", "--retries", "1",
              "--image-size", "32", "--samples-per-shard", "4", "--hang-grace", "5", *_spark(spark_master),
              "--output", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "download", *common], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list((out / "shards").glob("*_stats.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the stage, as a scheduler kills them
    proc.wait()
    done = {p.name.removesuffix("_stats.json"): p.stat() for p in (out / "_staging").glob("*_stats.json")}
    tars = {s: (out / "_staging" / f"{s}.tar").stat() for s in done}
    expected_shards = -(-len(faults) // 4)
    assert 0 < len(done) < expected_shards
    resumed = download.run(common)
    assert resumed["shards_done"] == resumed["shards_expected"] == expected_shards and resumed["ledger_ok"]
    for s, st in tars.items():  # finished shards were not fetched or written again
        now = (out / "_staging" / f"{s}.tar").stat()
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size), s
    want = {uid for uid, (fault, kind) in faults.items()
            if kind != "svg" and (EXPECTED[fault] is None or fault == "slow")}
    got = {uid: (status, reason) for uid, status, reason, _ in _records(out)}
    wrong = {faults[uid]: got[uid] for uid in faults if (got[uid][0] == "success") != (uid in want)}
    assert not wrong, wrong
    assert resumed["in"] == len(faults) and resumed["missing_from_img2dataset"] == 0


@pytest.mark.parametrize("flags, message", [
    (["--spark-master", "spark://x:7077"], "apply to --distributor pyspark"),
    (["--distributor", "pyspark", "--workers", "2"], "applies to --distributor multiprocessing"),
    (["--distributor", "pyspark", "--spark-conf", "nokey"], "expected KEY=VALUE"),
])
def test_spark_flags_in_the_wrong_place_are_one_line(flags, message, tmp_path):
    with pytest.raises(schemas.UserError, match=message):
        download.run(["--input", str(tmp_path), "--output", str(tmp_path / "o"), *flags])
