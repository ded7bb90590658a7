"""The trainer's data path at 5M and 50M samples: start-up time and peak memory per rank and
per data worker, extrapolated to 400M, against the whole-table index it replaced.

    python -m benchmarks.trainer_index --dir /tmp/trainer-index [--rows 5000000 50000000]
        [--per-shard 10000] [--workers 2] [--batches 40] [--baseline-rows 5000000]

Each size is a synthetic `openwit shard` output: SHARD_INDEX files of ``--per-shard`` rows
(uid, url, text and the other columns filled as a real index has them) and one real tar of
``--per-shard`` small JPEG samples, hard-linked under every shard name, so the data workers
read and decode real samples at the offsets the index gives.

Every measurement runs in a fresh process (``--child``) that imports torch and the
tokenizer first (the rank's fixed cost, reported as "before"), then:

- **openwit**: ``Index.load`` with an empty records cache (cold: the records file is built)
  and again (warm), then ``--batches`` micro-batches of 256 through a DataLoader with
  ``--workers`` workers, as a rank trains;
- **baseline** (only at ``--baseline-rows``): the index as the trainer held it before:
  uid, shard, offset and bytes of every sample read into Python lists and arrays, and one
  epoch permutation of all samples (which every data worker built for itself).

Peak RSS is VmHWM from /proc; a worker's "own" memory is its private pages (smaps_rollup),
the rest of its RSS being pages shared with the rank it was forked from.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

import schemas
from schemas import columns as C

MICRO_BATCH = 256
TARGET = 400_000_000


def _status(pid: int | str = "self") -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile in MiB, and Private and Pss from smaps_rollup."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Pss", "Private_Clean", "Private_Dirty"):
            out[k] = int(v.split()[0]) / 1024
    out["Private"] = out.pop("Private_Clean", 0) + out.pop("Private_Dirty", 0)
    return out


# -- the synthetic shard output ------------------------------------------------------------

def _tar(path: Path, n: int) -> list[tuple[str, int, int]]:
    """One tar of ``n`` samples (jpg, json, txt); (uid, offset, bytes) of each."""
    from pipeline import tario

    rng = np.random.default_rng(0)
    out = []
    with open(path, "wb") as fh:
        tar = tario.Writer(fh)
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
            uid = schemas.ids.uid(f"https://img.example/{i}.jpg", f"caption {i}")
            start = tar.offset
            for ext, data in (("jpg", buf.getvalue()), ("json", b"{}"), ("txt", f"a photo of thing {i}".encode())):
                tar.add(f"{uid}.{ext}", data)
            out.append((uid, start, tar.offset - start))
        tar.close()
    return out


def _template(samples: list[tuple[str, int, int]]) -> pa.Table:
    n = len(samples)
    values = {
        C.UID: [u for u, _, _ in samples], C.KEY: [u for u, _, _ in samples],
        C.SHARD_POSITION: list(range(n)), C.TAR_OFFSET: [o for _, o, _ in samples],
        C.TAR_BYTES: [b for _, _, b in samples],
        C.URL: [f"https://images.example-{i % 997}.com/photos/2024/{i:08d}/large.jpg" for i in range(n)],
        C.TEXT: [f"a photo of a red striped thing number {i} on a wooden table" for i in range(n)],
        C.LANG: ["en"] * n, C.LANG_PROB: [0.99] * n, C.MATCHED_QUERIES: [["thing", "red"]] * n,
        C.WIDTH: [32] * n, C.HEIGHT: [32] * n, C.SHA256: [f"{i:064x}" for i in range(n)],
        C.PHASH: list(range(n)),
    }
    cols = {}
    for field in schemas.SHARD_INDEX:
        if field.name in values:
            cols[field.name] = pa.array(values[field.name], field.type)
        elif field.nullable:
            cols[field.name] = pa.nulls(n, field.type)
        elif pa.types.is_string(field.type):
            cols[field.name] = pa.array(["wat"] * n, field.type)
        else:
            cols[field.name] = pa.array([0] * n, field.type)
    return pa.table(cols)


def make_dataset(root: Path, rows: int, per_shard: int) -> Path:
    folder = root / f"rows{rows}"
    done = folder / "DONE"
    if done.exists():
        return folder
    (folder / "index").mkdir(parents=True, exist_ok=True)
    tar = root / f"sample-{per_shard}.tar"
    meta = root / f"sample-{per_shard}.json"
    if not meta.exists():
        meta.write_text(json.dumps(_tar(tar, per_shard)))
    template = _template([tuple(x) for x in json.loads(meta.read_text())])
    shards = rows // per_shard
    started = time.perf_counter()
    for s in range(shards):
        name = f"{s:06d}"
        table = template.set_column(template.schema.get_field_index(C.SHARD), C.SHARD,
                                    pa.array([name] * per_shard, pa.string()))
        schemas.write_table(table, folder / "index" / f"{name}.parquet", schemas.SHARD_INDEX)
        if not (folder / f"{name}.tar").exists():
            os.link(tar, folder / f"{name}.tar")
    done.write_text(f"{shards} shards in {time.perf_counter() - started:.0f} s\n")
    return folder


# -- one measurement, in a fresh process -------------------------------------------------

def child(folder: str, mode: str, workers: int, batches: int, cache: str) -> dict:
    import multiprocessing

    import torch  # noqa: F401 - the rank's fixed cost comes first

    from trainer import data, models

    tokenizer = models.tokenizer("openwit-debug")
    before = _status()
    result: dict = {"before_mib": round(before["VmRSS"], 1)}
    if mode == "baseline":
        t0 = time.perf_counter()
        table = schemas.read_table(Path(folder) / "index", schemas.SHARD_INDEX).select(
            [C.UID, C.SHARD, C.SHARD_POSITION, C.TAR_OFFSET, C.TAR_BYTES]).sort_by(
            [(C.SHARD, "ascending"), (C.SHARD_POSITION, "ascending")])
        uids = table[C.UID].to_pylist()
        tars = [f"{s}.tar" for s in table[C.SHARD].to_pylist()]
        offsets, sizes = table[C.TAR_OFFSET].to_numpy(), table[C.TAR_BYTES].to_numpy()
        del table
        result["load_s"] = round(time.perf_counter() - t0, 2)
        after_index = _status()
        t0 = time.perf_counter()
        perm = np.random.default_rng([0, 0, 0x6F77]).permutation(len(uids))
        result["permutation_s"] = round(time.perf_counter() - t0, 2)
        end = _status()
        result.update(rank_peak_mib=round(end["VmHWM"], 1), index_mib=round(after_index["VmRSS"] - before["VmRSS"], 1),
                      permutation_mib=round(end["VmRSS"] - after_index["VmRSS"], 1), samples=len(uids))
        del uids, tars, offsets, sizes, perm
        return result
    t0 = time.perf_counter()
    index = data.Index.load(folder, cache)
    result["cold_load_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    index = data.Index.load(folder, cache)
    result["warm_load_s"] = round(time.perf_counter() - t0, 3)
    after_index = _status()
    plan = data.Plan.make(len(index), MICRO_BATCH, 1, batches)
    stream = data.RankStream(index, plan, 0, 0, 1, MICRO_BATCH, 1, 0, 64, (0.9, 1.0), tokenizer)
    t0 = time.perf_counter()
    it = iter(data.loader(stream, workers))
    first = next(it)
    result["first_batch_s"] = round(time.perf_counter() - t0, 2)
    seen, invalid = len(first["uids"]), int((~first["valid"]).sum())
    peaks: dict[int, dict] = {}
    for b in it:
        seen += len(b["uids"])
        invalid += int((~b["valid"]).sum())
        for proc in multiprocessing.active_children():  # the data workers, sampled after every batch
            try:
                now = _status(proc.pid)
            except OSError:  # finished its share
                continue
            old = peaks.setdefault(proc.pid, now)
            for k, v in now.items():
                old[k] = max(old[k], v)
    kids = list(peaks.values())
    wall = time.perf_counter() - t0
    end = _status()
    result.update(samples=len(index), shards=len(index.shards), seen=seen, invalid=invalid,
                  samples_per_s=round(seen / wall), index_mib=round(after_index["VmRSS"] - before["VmRSS"], 1),
                  rank_peak_mib=round(end["VmHWM"], 1), rank_anon_mib=round(end["RssAnon"], 1),
                  worker_peak_mib=round(max(k["VmHWM"] for k in kids), 1) if kids else 0.0,
                  worker_private_mib=round(max(k["Private"] for k in kids), 1) if kids else 0.0,
                  worker_pss_mib=round(max(k["Pss"] for k in kids), 1) if kids else 0.0,
                  records_mib=round(os.path.getsize(index.records) / 2**20, 1))
    return result


def _run_child(folder: Path, mode: str, args, cache: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.trainer_index", "--child", str(folder), "--mode", mode,
           "--workers", str(args.workers), "--batches", str(args.batches), "--cache", cache]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} at {folder}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _extrapolate(xs: list[int], ys: list[float], at: int) -> float:
    slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    return ys[-1] + slope * (at - xs[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "openwit-trainer-index")
    p.add_argument("--rows", type=int, nargs="+", default=[5_000_000, 50_000_000])
    p.add_argument("--per-shard", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--baseline-rows", type=int, default=5_000_000)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="openwit", help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.mode, args.workers, args.batches, args.cache)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    rows_done, results = [], []
    for rows in args.rows:
        t0 = time.perf_counter()
        folder = make_dataset(args.dir, rows, args.per_shard)
        print(f"[data] {rows:,} rows at {folder} ({time.perf_counter() - t0:.0f} s)", flush=True)
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="cache-") as cache:
            r = _run_child(folder, "openwit", args, cache)
        print(f"[openwit] {rows:,}: {json.dumps(r)}", flush=True)
        rows_done.append(rows)
        results.append(r)
        if rows == args.baseline_rows:
            b = _run_child(folder, "baseline", args, "")
            print(f"[baseline] {rows:,}: {json.dumps(b)}", flush=True)
            added = r["rank_peak_mib"] - r["before_mib"]
            b_added = b["rank_peak_mib"] - b["before_mib"]
            print(f"[ratio] {rows:,}: memory the index adds to a rank: baseline {b_added:,.0f} MiB / openwit "
                  f"{added:,.0f} MiB = {b_added / max(added, 1):.0f}x; per-worker permutation "
                  f"{b['permutation_mib']:,.0f} MiB / 0; start-up {b['load_s'] + b['permutation_s']:.1f} s / "
                  f"{r['cold_load_s']:.1f} s cold, {r['warm_load_s']:.2f} s warm", flush=True)
    if len(rows_done) >= 2:
        print(f"[400M] extrapolated linearly from {rows_done[0]:,} and {rows_done[-1]:,} rows:")
        for key in ("rank_peak_mib", "rank_anon_mib", "worker_peak_mib", "worker_private_mib", "worker_pss_mib",
                    "cold_load_s", "records_mib"):
            ys = [r[key] for r in results]
            at = _extrapolate(rows_done, ys, TARGET)
            grows = ys[-1] > ys[0]
            print(f"  {key}: {' -> '.join(f'{y:,.1f}' for y in ys)}  => "
                  + (f"{at:,.1f}" if grows else f"{max(ys):,.1f} (does not grow with rows: the largest measured)"))


if __name__ == "__main__":
    main()
