"""`openwit download` against the loopback web: every fault ends as the right reason, the
ledger holds, hosts are interleaved, a rerun skips finished shards."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import schemas
from schemas import columns as C
from pipeline import download
from pipeline.synth import crawl

# ground-truth fault -> reason (retries=1 turns the 503-then-ok fault into a success)
EXPECTED = {"none": None, "redirect": None, "unavailable_then_ok": None, "not_found": "not_found",
            "server_error": "server_error", "slow": "timeout", "redirect_loop": "redirect_loop",
            "redirect_forbidden": "forbidden_address", "wrong_content_type": "bad_format",
            "truncated": "truncated", "xrobots_noai": "opted_out", "xrobots_noimageai": "opted_out",
            "robots_disallow": "robots_disallowed", "bomb": "too_large_pixels", "too_small": "too_small"}


@pytest.fixture(scope="module")
def curated(small_crawl, tmp_path_factory):
    """A CURATED folder of 4 links per fault (and svg links), straight from the ground truth."""
    folder, _ = small_crawl
    truth = schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)
    truth = truth.filter(pc.starts_with(truth[C.URL], "http"))
    picked = []
    for fault in EXPECTED:
        kinds = ("clean",) if fault == "none" else ("faulty", "opted_out")
        sel = [r for r in truth.to_pylist() if r[C.FAULT] == fault and r[C.KIND] in kinds][:4]
        picked += sel
    picked += [r for r in truth.to_pylist() if r[C.KIND] == "svg"][:2]
    rows = [{C.UID: schemas.uid(r[C.URL], r[C.CLEAN_CAPTION]), C.URL: r[C.URL], C.TEXT: r[C.CLEAN_CAPTION],
             C.LANG: "en", C.LANG_PROB: 1.0, C.MATCHED_QUERIES: ["x"], C.PAGE_URL: r[C.PAGE_URL],
             C.SOURCE_FILE: r[C.SOURCE_FILE], C.SOURCE_OFFSET: r[C.SOURCE_OFFSET], C.SOURCE_FORMAT: "wat"}
            for r in picked]
    out = tmp_path_factory.mktemp("curated")
    schemas.write_table(pa.Table.from_pylist(rows, schema=schemas.CURATED), out / "part-00000-of-00001.parquet",
                        schemas.CURATED)
    faults = {row[C.UID]: (r[C.FAULT], r[C.KIND]) for row, r in zip(rows, picked)}
    return out, faults


def test_reason_mapping():
    assert download.reason_for("success", None) is None
    assert download.reason_for("failed_to_download", "HTTP Error 404: Not Found") == "not_found"
    assert download.reason_for("failed_to_download", "HTTP Error 503: x") == "server_error"
    assert download.reason_for("failed_to_download", "HTTP Error 302: redirect_loop: y") == "redirect_loop"
    assert download.reason_for("failed_to_download", "forbidden_address: 10.0.0.1 is private") == "forbidden_address"
    assert download.reason_for("failed_to_resize", "Image decoding error") == "bad_format"
    assert download.reason_for("failed_to_download", "something new") == "download_error"


def test_interleave_by_host():
    rows = [{C.URL: f"http://{h}/{i}"} for h in "aab" for i in range(2)]
    hosts = [r[C.URL].split("/")[2] for r in download.interleave_by_host(rows)]
    assert hosts == ["a", "b", "a", "b", "a", "a"] and len(hosts) == len(rows)


@pytest.mark.slow
def test_every_fault_ends_as_its_reason_and_the_ledger_holds(web, curated, tmp_path):
    folder, faults = curated
    argv = ["--input", str(folder), "--output", str(tmp_path), "--allow", "127.0.0.0/8", "--processes", "1",
            "--threads", "8", "--timeout", "1", "--retries", "1", "--image-size", "64", "--samples-per-shard", "20"]
    before = web.stats()
    stats = download.run(argv)
    after = web.stats()
    assert stats["ledger_ok"] and stats["in"] == len(faults) and stats["missing_from_img2dataset"] == 0
    rows = schemas.read_table(tmp_path / "downloaded", schemas.DOWNLOADED).to_pylist()
    assert len(rows) == len(faults)
    got = {}
    for r in rows:
        fault, kind = faults[r[C.UID]]
        want = "bad_format" if kind == "svg" else EXPECTED[fault]
        got.setdefault((fault, kind), Counter())[r[C.REASON]] += 1
        assert r[C.REASON] == want, (fault, kind, r[C.ERROR_MESSAGE])
        assert (r[C.STATUS] == "success") == (want is None)
    assert after["canary_hits"] == before["canary_hits"]
    assert after["private_hits"] == before["private_hits"]
    rejects = schemas.read_table(tmp_path / "rejects", schemas.REJECT)
    assert rejects.num_rows == sum(stats["rejected"].values())
    # a rerun skips the finished shards and accounts the same
    again = download.run(argv)
    assert again["kept"] == stats["kept"] and again["rejected"] == stats["rejected"]
    assert web.stats()["requests"] == after["requests"]


def _successes(folder) -> set[str]:
    rows = schemas.read_table(folder / "downloaded", schemas.DOWNLOADED).to_pylist()
    return {r[C.UID] for r in rows if r[C.STATUS] == "success"}


@pytest.mark.slow
def test_kill_9_then_rerun_equals_an_uninterrupted_run(web, curated, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    folder, faults = curated
    common = ["--input", str(folder), "--allow", "127.0.0.0/8", "--processes", "1", "--threads", "2",
              "--timeout", "1", "--retries", "1", "--image-size", "32", "--samples-per-shard", "4", "--hang-grace", "5"]
    full = download.run([*common, "--output", str(tmp_path / "full")])
    assert full["shards_done"] == full["shards_expected"] and full["ledger_ok"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "download", *common, "--output", str(killed)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((killed / "shards").glob("*_stats.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name.removesuffix("_stats.json") for p in (killed / "shards").glob("*_stats.json")}
    assert 0 < len(done_before) < full["shards_expected"]
    for f in (killed / "shards").iterdir():  # shards/ holds finished shards only, never a partial tar
        assert f.name.split(".")[0].split("_")[0] in done_before, f.name

    resumed = download.run([*common, "--output", str(killed)])
    assert resumed["shards_done"] == full["shards_expected"] and resumed["ledger_ok"]
    assert _successes(killed) == _successes(tmp_path / "full")
    assert resumed["kept"] == full["kept"] and resumed["rejected"] == full["rejected"]
