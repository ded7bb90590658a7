"""dedupe and shard against plain single-process loops, measured in the same run.

    python -m benchmarks.dedupe_shard --download DIR --curate DIR [--copies 4]

1. pHash: the dedupe job's hash step on Beam (FnApiRunner, one worker per core) in
   images/s per core, against ``imagehash.phash`` over the same images in a plain loop
   (decode + hash, one process).
2. Near-duplicate search: on 1M and 2M random 64-bit hashes with 10% planted near
   duplicates (up to 4 flipped bits), per block and partition of ~250,000 hashes as the
   dedupe job runs it (one process here): seconds (best of 3) and t(2M)/t(1M); recall against brute
   force on a 20,000-hash sample (pairs within r joined by the search's components).
3. shard: the shard job's output MB/s against plain ``tarfile`` copying of the same samples
   (read the downloaded tars, write the same members into output tars) in one process.

DIR: a download --output folder with images at the size to measure (256 px by default in
openwit download); --copies repeats its shards (as new shard names) to make the input larger.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import imagehash
import numpy as np
from PIL import Image

import schemas
from pipeline import dedupe, neardup, options, shard


def replicate(download: Path, copies: int, dest: Path) -> Path:
    """A download folder with each shard repeated ``copies`` times under new names."""
    (dest / "shards").mkdir(parents=True)
    (dest / "downloaded").mkdir()
    n = 0
    for c in range(copies):
        for tar in sorted((download / "shards").glob("*.tar")):
            name = f"{n:05d}"
            os.link(tar, dest / "shards" / f"{name}.tar")
            table = schemas.read_table(download / "downloaded" / f"{tar.stem}.parquet", schemas.DOWNLOADED)
            import pyarrow as pa

            table = table.set_column(table.schema.get_field_index(schemas.columns.SHARD), schemas.columns.SHARD,
                                     pa.array([name] * table.num_rows, pa.string()))
            schemas.write_table(table, dest / "downloaded" / f"{name}.parquet", schemas.DOWNLOADED)
            n += 1
    return dest


def phash_bench(download: Path) -> dict:
    jobs, images = dedupe.shard_jobs(str(download))
    start = time.perf_counter()
    beam_options = options.PipelineOptions(options.local_defaults([]))
    p = beam.Pipeline(options=beam_options)
    counted = (p | beam.Create(jobs) | beam.Reshuffle() | beam.ParDo(dedupe.HashShardFn(False))
               | beam.combiners.Count.Globally())
    counted | beam.Map(lambda n: None)
    with options.quiet_local_workers(beam_options):
        p.run().wait_until_finish()
    beam_s = time.perf_counter() - start
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    n = 0
    for _, tar_path, _ in jobs:
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.name.endswith(".jpg"):
                    imagehash.phash(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                    n += 1
    plain_s = time.perf_counter() - start
    ours = images / beam_s / cores
    base = n / plain_s
    return {"images": images, "beam_s": beam_s, "cores": cores, "beam_per_core": ours, "plain_s": plain_s,
            "plain_per_core": base, "ratio": ours / base}


def _planted(rng: np.random.Generator, n: int) -> np.ndarray:
    base = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    k = n // 10
    src = base[rng.integers(0, n, size=k)]
    flips = np.zeros(k, dtype=np.uint64)
    for _ in range(4):
        b = rng.integers(0, 64, size=k).astype(np.uint64)
        on = rng.random(k) < 0.5
        flips[on] |= np.uint64(1) << b[on]
    return np.concatenate([base, src ^ flips])


def partitioned_search(vals: np.ndarray, r: int) -> neardup.Found:
    """The search as the dedupe job runs it: per block, the hashes cut into partitions of
    ~250,000 (dedupe's default), each searched on its own (one process here). ``vals``
    are distinct, as the job's grouping by hash value makes them."""
    ids = np.full(len(vals), -1, dtype=np.int64)
    partitions = max(1, -(-len(vals) // 250_000))
    found = neardup.Found()
    for mask in neardup.block_masks(r):
        for _, sel in dedupe.split_by_partition(dedupe._partition(vals, mask, partitions)):
            found.extend(neardup.search_shared(vals[sel], ids[sel], mask, r))
    return found


def search_bench(r: int) -> dict:
    rng = np.random.default_rng(0)
    out = {"r": r}
    for n in (1_000_000, 2_000_000):
        vals = np.unique(_planted(rng, n))
        times = []
        for _ in range(3):  # best of 3: the first run also pays for fresh memory pages
            start = time.perf_counter()
            found = partitioned_search(vals, r)
            a, _ = found.edges()
            times.append(time.perf_counter() - start)
        out[f"t_{n // 1_000_000}M"] = min(times)
        out[f"pairs_{n // 1_000_000}M"] = len(a)
    out["ratio"] = out["t_2M"] / out["t_1M"]
    sample = _planted(rng, 18_000)[:20_000]
    sample = np.concatenate([sample, sample[:2000] ^ np.uint64(0b1011)])[:20_000]
    found, truth = neardup.search(sample, r), neardup.brute_force(sample, r)
    nodes, roots = neardup.components(*found.edges())
    root = dict(zip(nodes.tolist(), roots.tolist()))
    ta, tb = truth.edges()
    hit = sum(1 for x, y in zip(ta.tolist(), tb.tolist()) if root.get(x, x) == root.get(y, y) and x in root)
    out.update({"sample": len(np.unique(sample)), "true_pairs": len(ta), "recall": hit / max(len(ta), 1)})
    return out


def shard_bench(download: Path, curate: Path, work: Path) -> dict:
    dedupe.run(["--input", str(download), "--output", str(work / "dedupe")])
    start = time.perf_counter()
    stats = shard.run(["--keep", str(work / "dedupe"), "--images", str(download), "--curated", str(curate),
                       "--output", str(work / "shards"), "--samples-per-shard", "10000"])
    beam_s = time.perf_counter() - start
    total = stats["bytes"]
    # plain: copy the same members of every kept sample into output tars, one process
    keep = schemas.read_table(work / "dedupe" / "keep", schemas.KEEP)
    wanted = {(s, k) for s, k in zip(keep[schemas.columns.SHARD].to_pylist(), keep[schemas.columns.KEY].to_pylist())}
    start = time.perf_counter()
    out_dir = work / "plain"
    out_dir.mkdir()
    count, index = 0, 0
    dst = None
    for tar_path in sorted((download / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as src:
            for m in src:
                if (tar_path.stem, m.name.split(".")[0]) not in wanted:
                    continue
                if dst is None or count >= 3 * 10_000:
                    if dst:
                        dst.close()
                    dst = tarfile.open(out_dir / f"{index:05d}.tar", "w")
                    index, count = index + 1, 0
                dst.addfile(m, src.extractfile(m))
                count += 1
    if dst:
        dst.close()
    plain_s = time.perf_counter() - start
    plain_bytes = sum(p.stat().st_size for p in out_dir.glob("*.tar"))
    return {"samples": stats["kept"], "bytes": total, "beam_s": beam_s, "beam_mb_s": total / beam_s / 1e6,
            "plain_s": plain_s, "plain_bytes": plain_bytes, "plain_mb_s": plain_bytes / plain_s / 1e6,
            "ratio": (total / beam_s) / (plain_bytes / plain_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--download", type=Path, required=True)
    ap.add_argument("--curate", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--only", choices=("phash", "search", "shard"), default=None)  # not-a-column
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        download = replicate(args.download, args.copies, work / "download") if args.copies > 1 else args.download
        if args.only in (None, "phash"):  # not-a-column
            ph = phash_bench(download)
            print(f"pHash: {ph['images']:,} images; Beam {ph['beam_per_core']:,.0f} images/s per core "
                  f"({ph['beam_s']:.1f}s on {ph['cores']} cores) vs plain imagehash.phash loop "
                  f"{ph['plain_per_core']:,.0f} images/s ({ph['plain_s']:.1f}s): ratio {ph['ratio']:.2f}")
        if args.only in (None, "search"):
            for r in (dedupe.DEFAULT_RADIUS, dedupe.DEFAULT_EVAL_RADIUS):
                s = search_bench(r)
                print(f"search r={r}: 1M {s['t_1M']:.2f}s ({s['pairs_1M']:,} pairs), 2M {s['t_2M']:.2f}s "
                      f"({s['pairs_2M']:,} pairs): t(2M)/t(1M) = {s['ratio']:.2f}; recall vs brute force on "
                      f"{s['sample']:,} hashes: {s['recall']:.4f} of {s['true_pairs']:,} pairs")
        if args.only in (None, "shard"):  # not-a-column
            sh = shard_bench(download, args.curate, work)
            print(f"shard: {sh['samples']:,} samples, {sh['bytes'] / 1e6:,.1f} MB in {sh['beam_s']:.1f}s = "
                  f"{sh['beam_mb_s']:.1f} MB/s vs plain tarfile copy {sh['plain_mb_s']:.1f} MB/s "
                  f"({sh['plain_s']:.1f}s): ratio {sh['ratio']:.2f}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
