"""The guards inside img2dataset's own (spawned) worker processes, against the loopback web."""

from __future__ import annotations

from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import columns as C
from pipeline.download_guard import guarded_img2dataset
from pipeline.synth import crawl

FAULTS = ("none", "redirect_forbidden", "bomb", "robots_disallow", "not_found", "redirect_loop")


@pytest.fixture(scope="module")
def url_list(small_crawl, tmp_path_factory):
    folder, _ = small_crawl
    truth = schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)
    rows = []
    for fault in FAULTS:
        kind = {"none": "clean", "robots_disallow": "opted_out"}.get(fault, "faulty")
        sel = truth.filter(pc.and_(pc.and_(pc.equal(truth[C.FAULT], fault), pc.equal(truth[C.KIND], kind)),
                                   pc.starts_with(truth[C.URL], "http")))
        rows += [(u, fault) for u in sel[C.URL].to_pylist()[:3]]
    out = tmp_path_factory.mktemp("urls")
    pq.write_table(pa.table({C.URL: [u for u, _ in rows], C.TEXT: [f for _, f in rows]}), out / "list.parquet")
    return out, rows


def _download(url_list, out, **guard):
    import img2dataset

    with guarded_img2dataset(**guard):
        img2dataset.download(
            url_list=str(url_list), input_format="parquet", url_col=C.URL, caption_col=C.TEXT,
            output_folder=str(out), output_format="webdataset", processes_count=1, thread_count=4,
            image_size=64, timeout=3, retries=0, number_sample_per_shard=100, enable_wandb=False,
            distributor="multiprocessing", compute_hash=C.SHA256)
    table = pq.read_table(next(out.glob("*.parquet")))
    return {(u, c): (s, e) for u, c, s, e in zip(table[C.URL].to_pylist(), table[C.CAPTION].to_pylist(),
                                                  table[C.STATUS].to_pylist(), table[C.ERROR_MESSAGE].to_pylist())}


@pytest.mark.slow
def test_guard_holds_inside_img2dataset_workers(web, url_list, tmp_path):
    folder, rows = url_list
    allow = sorted({f"{urlsplit(u).hostname}/32" for u, _ in rows})
    before = web.stats()
    results = _download(folder, tmp_path / "allowed", allow=allow, user_agent="openwit-test/1")
    after = web.stats()
    by_fault: dict[str, set] = {}
    for (url, fault), (status, error) in results.items():
        outcome = status if status == "success" else (error or "").split(":")[0]
        if "redirect_loop" in (error or ""):
            outcome = "redirect_loop"  # urllib words it "HTTP Error 302: redirect_loop: ..."
        by_fault.setdefault(fault, set()).add(outcome)
    assert by_fault["none"] == {"success"}
    assert by_fault["redirect_forbidden"] == {"forbidden_address"}
    assert by_fault["bomb"] == {"too_large_pixels"}
    assert by_fault["robots_disallow"] == {"robots_disallowed"}
    assert by_fault["redirect_loop"] == {"redirect_loop"}
    assert by_fault["not_found"] == {"HTTP Error 404"}
    assert after["canary_hits"] == before["canary_hits"]
    assert after["private_hits"] == before["private_hits"]


@pytest.mark.slow
def test_default_policy_refuses_every_loopback_url_without_a_request(web, url_list, tmp_path):
    folder, rows = url_list
    before = web.stats()["requests"]
    results = _download(folder, tmp_path / "default")
    assert {s for s, _ in results.values()} == {"failed_to_download"}
    assert all(e.startswith(("forbidden_address", "robots_disallowed")) for _, e in results.values())
    assert web.stats()["requests"] == before
