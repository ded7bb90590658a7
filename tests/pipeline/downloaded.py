"""A small download --output folder built directly (no network): tars in img2dataset's
layout, DOWNLOADED tables and the CURATED rows behind them, with planted exact duplicates,
near duplicates, evaluation copies, a corrupt image, a missing image and failed rows."""

from __future__ import annotations

import io
import json
import random
import tarfile
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

import schemas
from schemas import columns as C
from pipeline.synth import world


def _jpeg(img, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _spec(rng: random.Random) -> world.ImageSpec:
    return world.ImageSpec(shape=rng.randrange(8), colour=rng.randrange(8), size=rng.randrange(3),
                           placement=rng.randrange(9), background=rng.randrange(6), jitter=rng.getrandbits(32))


def build(root: Path, pictures: int = 60, seed: int = 0) -> dict:
    """Write root/download (shards/, downloaded/), root/curate (curated/), root/eval (PNGs).
    Returns what was planted (uids by role)."""
    rng = random.Random(seed)
    samples: list[dict] = []  # uid, url, text, image bytes (None: missing), role
    planted: dict[str, list[str]] = {"exact": [], "near": [], "eval": [], "corrupt": [], "missing": [], "failed": []}
    originals = []
    for i in range(pictures):
        spec = _spec(rng)
        img = world.render_image(spec)
        originals.append((spec, img))
        samples.append({"link": f"http://h{i % 5}.test/img/{i}.jpg",
                        "alt": f"a {spec.colour_name} {spec.shape_name}, picture number {i}",
                        "image": _jpeg(img), "dims": img.size})
    for k in range(5):  # the same bytes under another url
        src = samples[k]
        samples.append({"link": f"http://copy.test/{k}.jpg", "alt": src["alt"], "image": src["image"], "dims": src["dims"],
                        "role": "exact"})
    for k in range(5, 10):  # the same picture re-encoded lower
        spec, img = originals[k]
        samples.append({"link": f"http://near.test/{k}.jpg", "alt": f"again number {k}", "image": _jpeg(img, 60),
                        "dims": img.size, "role": "near"})
    eval_dir = root / "eval"
    eval_dir.mkdir(parents=True)
    for k in range(3):
        spec = replace(_spec(rng), jitter=rng.getrandbits(32))
        img = world.render_image(spec)
        img.save(eval_dir / f"{k:03d}.png")
        if k < 2:  # two of the three evaluation images are in the pool
            samples.append({"link": f"http://eval.test/{k}.jpg", "alt": f"an evaluation picture {k}",
                            "image": _jpeg(img, 85 if k else 95), "dims": img.size, "role": "eval"})
    samples.append({"link": "http://bad.test/corrupt.jpg", "alt": "a corrupt picture", "image": b"\xff\xd8not a jpeg",
                    "dims": (100, 100), "role": "corrupt"})
    samples.append({"link": "http://bad.test/missing.jpg", "alt": "a missing picture", "image": None,
                    "dims": (100, 100), "role": "missing"})
    for k in range(2):
        samples.append({"link": f"http://bad.test/404-{k}.jpg", "alt": f"failed {k}", "image": None, "dims": None,
                        "role": "failed"})
    rng.shuffle(samples)

    shards_dir, down_dir = root / "download" / "shards", root / "download" / "downloaded"
    shards_dir.mkdir(parents=True)
    curated = []
    for s_index in range(2):
        part = samples[s_index::2]
        down = []
        with tarfile.open(shards_dir / f"{s_index:05d}.tar", "w") as tar:
            for j, s in enumerate(part):
                key = f"{s_index:05d}{j:04d}"
                uid = schemas.uid(s["link"], s["alt"])
                role = s.get("role")
                if role:
                    planted[role].append(uid)
                ok = role != "failed"
                if ok and s["image"] is not None:
                    for ext, data in (("jpg", s["image"]), ("txt", s["alt"].encode()),
                                      ("json", json.dumps({"uid": uid}).encode())):  # not-a-column
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                w, h = s["dims"] or (None, None)
                down.append({C.UID: uid, C.URL: s["link"], C.TEXT: s["alt"], C.KEY: key, C.SHARD: f"{s_index:05d}",
                             C.STATUS: "success" if ok else "failed", C.REASON: None if ok else "not_found",
                             C.ERROR_MESSAGE: None if ok else "HTTP Error 404", C.WIDTH: w, C.HEIGHT: h,
                             C.ORIGINAL_WIDTH: w, C.ORIGINAL_HEIGHT: h, C.SHA256: None})
                curated.append({C.UID: uid, C.URL: s["link"], C.TEXT: s["alt"], C.LANG: "en", C.LANG_PROB: 0.99,
                                C.MATCHED_QUERIES: ["picture"], C.PAGE_URL: f"http://h.test/page{j}",
                                C.SOURCE_FILE: "x.wat.gz", C.SOURCE_OFFSET: j, C.SOURCE_FORMAT: "wat"})
        schemas.write_table(pa.Table.from_pylist(down, schema=schemas.DOWNLOADED), down_dir / f"{s_index:05d}.parquet",
                            schemas.DOWNLOADED)
    curated.sort(key=lambda r: r[C.UID])
    schemas.write_table(pa.Table.from_pylist(curated, schema=schemas.CURATED),
                        root / "curate" / "curated" / "part-00000-of-00001.parquet", schemas.CURATED)
    return planted
