"""The download stage's fault fixture: a CURATED list of links to every fault of the small
crawl's loopback web, the reason each must end as, and one multiprocessing download of it
shared by the tests that compare against it."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
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

FAULT_ARGS = ["--allow", "127.0.0.0/8", "--threads", "8", "--timeout", "1", "--retries", "1", "--image-size", "64",
              "--samples-per-shard", "20"]


@pytest.fixture(scope="session")
def fault_run(web, curated, tmp_path_factory):
    """One multiprocessing download of the fault list: (stats, output folder, argv, the
    web's counters before and after)."""
    folder, _ = curated
    out = tmp_path_factory.mktemp("fault-run")
    argv = ["--input", str(folder), "--output", str(out), "--workers", "1", *FAULT_ARGS]
    before = web.stats()
    stats = download.run(argv)
    return stats, out, argv, before, web.stats()
