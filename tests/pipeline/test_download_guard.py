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


# -- decoding: what cannot be bounded is refused, what can is budgeted -------------------------

def _encoded(kind: str) -> bytes:
    import io

    import cv2
    import numpy as np
    from PIL import Image

    if kind == "hdr":  # Radiance RGBE, run-length coded: 1 MB that decodes to 192 MB
        return cv2.imencode(".hdr", np.full((4000, 4000, 3), 0.5, np.float32))[1].tobytes()
    if kind == "pfm":
        return b"PF\n300 300\n-1.0\n" + np.zeros((300, 300, 3), np.float32).tobytes()
    if kind == "pam":
        return (b"P7\nWIDTH 300\nHEIGHT 300\nDEPTH 4\nMAXVAL 255\nTUPLTYPE RGB_ALPHA\nENDHDR\n"
                + bytes(300 * 300 * 4))
    mode, side, fmt = {"rgba3000": ("RGBA", 3000, "PNG"), "rgb3000": ("RGB", 3000, "PNG")}[kind]
    buf = io.BytesIO()
    Image.new(mode, (side, side), (10, 20, 30, 128)[:len(mode)]).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("kind, refusal", [
    ("hdr", "bad_format"), ("pfm", "bad_format"), ("pam", "bad_format"),
    ("rgba3000", "too_large_pixels: decoding 3000x3000 RGBA"), ("rgb3000", None),
])
def test_pixel_cap_refuses_what_it_cannot_bound(kind, refusal):
    import io

    from pipeline.download_guard import PixelCapResizer

    calls = []
    guard = PixelCapResizer(lambda stream, *a: calls.append(1) or (b"ok", 1, 1, 1, 1, None), 64_000_000)
    out = guard(io.BytesIO(_encoded(kind)))
    if refusal is None:
        assert out[-1] is None and calls == [1]
    else:
        assert out[-1].startswith(refusal) and calls == []


@pytest.mark.parametrize("mode, fmt", [("RGBA", "PNG"), ("RGB", "PNG"), ("I;16", "PNG"), ("LA", "PNG"),
                                       ("RGB", "JPEG"), ("RGBA", "WEBP"), ("P", "GIF")])
def test_decode_budget_bounds_img2dataset_peak_memory(mode, fmt):
    """The estimate, from the header alone, is at least what img2dataset's resizer allocates."""
    import io
    import tracemalloc

    from img2dataset.resizer import Resizer
    from PIL import Image

    from pipeline.download_guard import decode_bytes

    buf = io.BytesIO()
    img = Image.new(mode, (700, 500))
    img.save(buf, fmt, **({"transparency": 0} if mode == "P" else {}))
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as probe:
        estimate, _ = decode_bytes(probe, data[:64])
    resizer = Resizer(image_size=64, resize_mode="border", resize_only_if_bigger=False)
    tracemalloc.start()
    try:
        assert resizer(io.BytesIO(data))[-1] is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= estimate, f"{mode} {fmt}: measured {peak}, estimated {estimate}"


def test_opencv_limit_reaches_spawned_workers_and_pillow_keeps_its_guard():
    import subprocess
    import sys

    from PIL import Image

    from pipeline.download_guard import install

    probe = ("import cv2, numpy as np; b = cv2.imencode('.png', np.zeros((1200, 1200), np.uint8))[1]\n"
             "try:\n    print(cv2.imdecode(b, cv2.IMREAD_UNCHANGED).shape)\nexcept cv2.error:\n    print('refused')")
    with guarded_img2dataset(max_pixels=1_000_000):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "refused"
    install({"allow_private": True, "max_pixels": 1_000_000})
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS >= 89_000_000
