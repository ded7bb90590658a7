"""`openwit dedupe` (Beam): downloaded images -> a keep set without exact duplicates, near
duplicates or evaluation images, and the REJECT rows that say why each other image went.

Steps (each image leaves at the first step that rejects it):

1. hash      per downloaded shard: read the tar once; sha256 of the original bytes
             (img2dataset's, computed before it resized) or of the stored bytes; 64-bit
             pHash (and with --dhash a dHash) of the picture without padding bars.
             An image that does not decode is corrupt_sample; a success row whose image
             is not in the tar is missing_sample.
2. exact     one image per sha256: the smallest uid is kept, the others are
             exact_duplicate (duplicate_of = the kept uid). Their captions are not merged
             into the kept sample; the reject rows keep the link, so a join recovers them.
3. eval      images within --eval-radius of any evaluation image (--eval-images) are
             eval_overlap; counted per evaluation set.
4. near      pairs within --radius by multi-index hashing (pipeline.neardup: exact for r,
             bounded work on hot buckets), connected components over the pairs, one image
             kept per component: the largest original (width x height), then the smallest
             uid; the others are near_duplicate (duplicate_of = the kept uid).

Images with equal pHash are one node of the search; the search runs on distinct values,
bucketed per block into --partitions groups that shuffle as numpy arrays. The connected
components of the pairs found are computed in one worker (scipy, on the pairs only: a few
bytes per near-duplicate image).

Outputs under --output: keep/part-*.parquet (KEEP, sorted by uid), rejects/part-*.parquet,
dedupe_stats.json (the ledger: in = kept + sum(rejected), per step; evaluation sets with
their image counts and overlaps; duplicate cluster sizes).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter, defaultdict
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

import schemas
from schemas import columns as C
from pipeline import imagehashes, neardup, options, outputs, progress, tario
from schemas import fileio

SUMMARY = "remove exact and near-duplicate images and evaluation images from the downloaded shards (Beam)"
STAGE = schemas.run.DEDUPE
STEPS = ("hash", "exact", "eval", "near")
STATS_FILE = schemas.run.stage(STAGE).ledger
DEFAULT_RADIUS = 2  # docs/dedupe.md: precision 0.96, recall 0.70 on the labelled near-duplicates
DEFAULT_EVAL_RADIUS = 4  # recall first: 0.93 of evaluation copies found, precision 0.89
SUCCESS = "success"
_EVAL_SHIFT = 40  # eval id = set index << 40 | item index


def _counter(name: str) -> Metrics.DelegatingCounter:
    return Metrics.counter(f"openwit.{STAGE}", name)


def reject_row(item: dict, reason: str, detail: str | None = None, duplicate_of: str | None = None) -> dict:
    return {C.STAGE: STAGE, C.REASON: reason, C.DETAIL: detail, C.UID: item[C.UID], C.URL: item.get(C.URL),
            C.DUPLICATE_OF: duplicate_of, C.SOURCE_FILE: f"{item[C.SHARD]}.tar", C.SOURCE_OFFSET: None}


# -- 1. hash -------------------------------------------------------------------------------

class HashShardFn(beam.DoFn):
    """(shard name, tar path, DOWNLOADED path) -> image records; rejects tagged 'rejects'."""

    def __init__(self, dhash: bool):
        self.dhash = dhash

    def process(self, job: tuple[str, str, str]) -> Iterator:
        shard, tar_path, table_path = job
        rows = {r[C.KEY]: r for r in schemas.read_table(table_path, schemas.DOWNLOADED).to_pylist()
                if r[C.STATUS] == SUCCESS}
        seen: set[str] = set()
        counts: Counter = Counter()

        def want(name: str) -> bool:
            key, _, ext = name.rpartition("/")[2].partition(".")
            return key in rows and key not in seen and ext.lower() in imagehashes.IMAGE_EXTENSIONS

        errors: list[str] = []
        with fileio.open_read(tar_path) as fh:
            for key, _, data in tario.wanted_samples(fh, want, errors):
                row = rows[key]
                seen.add(key)
                item = {C.UID: row[C.UID], C.URL: row[C.URL], C.SHARD: shard, C.KEY: key,
                        C.WIDTH: row[C.WIDTH], C.HEIGHT: row[C.HEIGHT],
                        C.ORIGINAL_WIDTH: row[C.ORIGINAL_WIDTH], C.ORIGINAL_HEIGHT: row[C.ORIGINAL_HEIGHT]}
                try:
                    original = (row[C.ORIGINAL_WIDTH], row[C.ORIGINAL_HEIGHT])
                    phash, dhash = imagehashes.hashes(data, original, self.dhash)
                except ValueError as e:
                    counts["hash:corrupt_sample"] += 1
                    yield beam.pvalue.TaggedOutput("rejects", reject_row(item, "corrupt_sample", str(e)[:200]))
                    continue
                item.update({C.SHA256: row[C.SHA256] or imagehashes.sha256(data), C.PHASH: phash, C.DHASH: dhash})
                counts["hash:kept"] += 1
                yield item
        broken = f" ({fileio.basename(tar_path)} is unreadable past this point: {errors[0]})" if errors else ""
        for key in sorted(set(rows) - seen):
            row = rows[key]
            counts["hash:missing_sample"] += 1
            item = {C.UID: row[C.UID], C.URL: row[C.URL], C.SHARD: shard}
            yield beam.pvalue.TaggedOutput("rejects", reject_row(item, "missing_sample", f"no image for key {key}{broken}"[:300]))
        for name, n in counts.items():
            _counter(name).inc(n)
        progress.tick("tars", len(rows))


# -- 2. exact ------------------------------------------------------------------------------

def keep_smallest_uid(group: tuple[str, Iterable[dict]]) -> Iterator:
    _, items = group
    items = sorted(items, key=lambda it: it[C.UID])
    _counter("exact:kept").inc()
    yield items[0]
    for it in items[1:]:
        _counter("exact:exact_duplicate").inc()
        yield beam.pvalue.TaggedOutput("rejects", reject_row(it, "exact_duplicate", "same sha256",
                                                             items[0][C.UID]))


# -- evaluation images ---------------------------------------------------------------------

def eval_sets(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=PATH`` or ``PATH`` (name: the folder or file name) -> (name, sorted files):
    image files and webdataset tars, found recursively under a folder or by a glob."""
    sets = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = fileio.basename(spec) or spec, spec
        if fileio.isdir(path):
            files = [fileio.join(path, f) for f in fileio.walk(path)]
        else:
            try:
                files = fileio.expand_inputs([path])
            except schemas.UserError:
                raise schemas.UserError(f"--eval-images {spec}: no such file or folder") from None
        usable = sorted(f for f in files if f.rpartition(".")[2].lower() in (*imagehashes.IMAGE_EXTENSIONS, "tar"))
        if not usable:
            raise schemas.UserError(f"--eval-images {spec}: no images or .tar shards found")
        if len(usable) >= 1 << 20:
            raise schemas.UserError(f"--eval-images {spec}: more than {(1 << 20) - 1:,} files; split it into sets")
        if any(n == name for n, _ in sets):
            raise schemas.UserError(f"--eval-images: two evaluation sets are named '{name}' (use NAME=PATH)")
        sets.append((name, usable))
    return sets


def _common_folder(files: list[str]) -> str:
    """The deepest folder holding every file of a set ('' for none)."""
    if not files:
        return ""
    folder = fileio.dirname(files[0])
    while folder and not all(f.startswith(folder.rstrip("/") + "/") for f in files):
        parent = fileio.dirname(folder)
        folder = "" if parent == folder else parent
    return folder


class HashEvalFn(beam.DoFn):
    """(set index, file index, path) -> (pHash, eval id); unreadable images are counted."""

    def process(self, job: tuple[int, int, str]) -> Iterator[tuple[int, int]]:
        s, f, path = job
        members: Iterable[tuple[int, bytes]]
        if path.endswith(".tar"):
            members = _tar_images(path)
        else:
            with fileio.open_read(path) as fh:
                members = [(0, fh.read())]
        for m, data in members:
            try:
                phash, _ = imagehashes.hashes(data)
            except ValueError:
                _counter(f"evalset:{s}:unreadable").inc()
                continue
            _counter(f"evalset:{s}:images").inc()
            yield phash, (s << _EVAL_SHIFT) | (f << 20) | m


def _tar_images(path: str) -> Iterator[tuple[int, bytes]]:
    with fileio.open_read(path) as fh:
        index = 0
        for name, data in tario.iter_members(fh, lambda n: n.rpartition(".")[2].lower() in imagehashes.IMAGE_EXTENSIONS):
            if data is not None:
                yield index, data
                index += 1


# -- 3 + 4. search -------------------------------------------------------------------------

class Buckets(beam.DoFn):
    """A batch of hashes -> one numpy array per (block, partition) it falls in."""

    def __init__(self, r: int, partitions: int, kind: str):
        self.masks, self.partitions, self.kind = neardup.block_masks(r), partitions, kind

    def process(self, batch: list) -> Iterator:
        if self.kind == "train":
            vals = np.fromiter(batch, dtype=np.uint64, count=len(batch))
            ids = np.full(len(vals), -1, dtype=np.int64)
        else:
            vals = np.array([v for v, _ in batch], dtype=np.uint64)
            ids = np.array([e for _, e in batch], dtype=np.int64)
        for i, mask in enumerate(self.masks):
            for p, sel in split_by_partition(_partition(vals, mask, self.partitions)):
                yield (i, p), (vals[sel], ids[sel])


def split_by_partition(part: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(partition, positions) for each partition present (a radix sort when it can)."""
    order = np.argsort(part.astype(np.uint16) if part.max(initial=0) < 1 << 16 else part, kind="stable")
    ordered = part[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(part) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(part)]
    for a, b in zip(starts.tolist(), ends.tolist()):
        yield int(ordered[a]), order[a:b]


def _partition(vals: np.ndarray, mask: int, partitions: int) -> np.ndarray:
    if partitions == 1:
        return np.zeros(len(vals), dtype=np.int64)
    key = neardup._compact(vals & np.uint64(mask), mask)
    mixed = key * np.uint64(0x9E3779B97F4A7C15)  # spread block values over partitions
    return (mixed >> np.uint64(32)).astype(np.int64) % partitions


class SearchBucketFn(beam.DoFn):
    """All hashes of one (block, partition) -> pairs within r and evaluation overlaps."""

    def __init__(self, r: int, eval_r: int, cap: int):
        self.masks, self.r, self.eval_r, self.cap = neardup.block_masks(max(r, eval_r)), r, eval_r, cap

    def process(self, group: tuple[tuple[int, int], Iterable[tuple[np.ndarray, np.ndarray]]]) -> Iterator:
        (i, _), arrays = group
        arrays = list(arrays)
        vals = np.concatenate([a for a, _ in arrays])
        ids = np.concatenate([b for _, b in arrays])
        found = neardup.search_shared(vals, ids, self.masks[i], max(self.r, self.eval_r), self.cap)
        a, b = found.edges()
        if self.r < self.eval_r and len(a):
            close = np.bitwise_count(a ^ b) <= self.r
            a, b = a[close], b[close]
        ov, oe = found.overlaps()
        if self.eval_r < self.r and len(ov):
            value_of = dict(zip(ids[ids >= 0].tolist(), vals[ids >= 0].tolist()))
            evals = np.array([value_of[e] for e in oe.tolist()], dtype=np.uint64)
            close = np.bitwise_count(ov ^ evals) <= self.eval_r
            ov, oe = ov[close], oe[close]
        _counter("search:popcounts").inc(found.compared)
        yield a, b, ov, oe


def resolve(found: list[tuple[np.ndarray, ...]]) -> list[tuple[int, tuple]]:
    """All pairs and overlaps -> per hash value: ('eval', eval ids) for values within the
    evaluation radius of an evaluation image, ('root', component root) for the others that
    have a near-duplicate. Components are built without the evaluation-overlapping values."""
    parts = list(zip(*found)) if found else [[], [], [], []]
    cat = [np.concatenate(p) if len(p) else np.zeros(0, dtype=np.uint64 if k < 3 else np.int64)
           for k, p in enumerate(parts)]
    a, b, ov, oe = cat
    out: list[tuple[int, tuple]] = []
    overlapping = defaultdict(set)
    for v, e in zip(ov.tolist(), oe.tolist()):
        overlapping[v].add(e)
    for v in sorted(overlapping):
        out.append((v, ("eval", tuple(sorted(overlapping[v])))))
    if len(a):
        if overlapping:
            gone = np.fromiter(overlapping, dtype=np.uint64, count=len(overlapping))
            keep = ~np.isin(a, gone) & ~np.isin(b, gone)
            a, b = a[keep], b[keep]
        nodes, roots = neardup.components(a, b)
        out.extend((int(v), ("root", int(r))) for v, r in zip(nodes.tolist(), roots.tolist()))
    return out


class ResolveValueFn(beam.DoFn):
    """Per hash value: its images and what the search found -> kept records keyed by the
    component they belong to, or eval_overlap rejects."""

    def __init__(self, set_names: list[str], files: list[list[str]], eval_r: int, roots: list[str] | None = None):
        self.set_names, self.files, self.eval_r = set_names, files, eval_r
        # a reject names the evaluation image by its path within its set, not by where the set lies
        self.roots = roots or [""] * len(files)

    def process(self, joined: tuple[int, dict]) -> Iterator:
        value, parts = joined
        items = [it for group in parts["items"] for it in group]
        info = dict(parts["info"])
        if "eval" in info:
            eids = info["eval"]
            sets = sorted({e >> _EVAL_SHIFT for e in eids})
            first = eids[0]
            s, f, m = first >> _EVAL_SHIFT, (first >> 20) & 0xFFFFF, first & 0xFFFFF
            shown = fileio.relative(self.files[s][f], self.roots[s])
            where = shown + (f" (image {m})" if shown.endswith(".tar") else "")
            detail = f"pHash within {self.eval_r} of evaluation set {self.set_names[s]}: {where}"
            for it in items:
                _counter("eval:eval_overlap").inc()
                for s in sets:
                    _counter(f"evalset:{s}:overlap").inc()
                yield beam.pvalue.TaggedOutput("rejects", reject_row(it, "eval_overlap", detail[:300]))
            return
        for it in items:
            _counter("eval:kept").inc()
        root = info.get("root")
        if root is None and len(items) == 1:
            _counter("near:kept").inc()
            _counter("cluster:1").inc()
            yield beam.pvalue.TaggedOutput("kept", items[0])
            return
        yield (root if root is not None else value), items


def keep_best(group: tuple[int, Iterable[list[dict]]]) -> Iterator:
    """One component -> its best image kept, the others near_duplicate of it."""
    _, lists = group
    items = sorted((it for items in lists for it in items),
                   key=lambda it: (-(it[C.ORIGINAL_WIDTH] or 0) * (it[C.ORIGINAL_HEIGHT] or 0), it[C.UID]))
    best = items[0]
    _counter("near:kept").inc()
    _counter(f"cluster:{len(items)}").inc()
    yield beam.pvalue.TaggedOutput("kept", best)
    for it in items[1:]:
        _counter("near:near_duplicate").inc()
        d = (it[C.PHASH] ^ best[C.PHASH]).bit_count()
        yield beam.pvalue.TaggedOutput("rejects", reject_row(it, "near_duplicate", f"pHash distance {d} (same component)",
                                                             best[C.UID]))


def keep_row(item: dict) -> dict:
    return {name: item.get(name) for name in schemas.KEEP.names}


# -- the job -------------------------------------------------------------------------------

def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", default=None, help="a download --output folder (shards/ and downloaded/)")
    parser.add_argument("--output", default=None, help="output folder")
    parser.add_argument("--radius", type=int, default=DEFAULT_RADIUS,
                        help=f"near-duplicate pHash radius r in bits (default: {DEFAULT_RADIUS}; "
                             "docs/dedupe.md gives precision and recall for r = 0..12)")
    parser.add_argument("--eval-images", action="append", default=[],
                        help="evaluation images to remove from training: [NAME=]PATH, a folder of images or "
                             "webdataset .tar shards, or a glob (repeatable)")
    parser.add_argument("--eval-radius", type=int, default=DEFAULT_EVAL_RADIUS,
                        help=f"pHash radius for --eval-images (default: {DEFAULT_EVAL_RADIUS}: a missed evaluation copy "
                             "costs more than a lost training image)")
    parser.add_argument("--dhash", action="store_true", help="also compute a 64-bit dHash (stored, not used to decide)")
    parser.add_argument("--cap", type=int, default=neardup.DEFAULT_CAP,
                        help=f"largest bucket compared pairwise; larger ones are split again (default: {neardup.DEFAULT_CAP})")
    parser.add_argument("--partitions", type=int, default=0,
                        help="search groups per block (default: one per 250,000 images)")
    parser.add_argument("--batch", type=int, default=50_000, help="hashes per search batch (default: 50,000)")


def shard_jobs(download: str) -> tuple[list[tuple[str, str, str]], int]:
    """(shard, tar, DOWNLOADED parquet) per downloaded shard, and the count of successes."""
    shards = fileio.join(download, "shards")
    downloaded = fileio.join(download, "downloaded")
    if not fileio.exists(downloaded):
        raise schemas.UserError(f"--input {download}: no downloaded/ folder (run openwit download first)")
    jobs, total = [], 0
    for table_path in sorted(fileio.expand_inputs([fileio.join(downloaded, "*.parquet")])):
        name = fileio.basename(table_path).removesuffix(".parquet")
        tar_path = fileio.join(shards, f"{name}.tar")
        with fileio.open_read(table_path) as fh:
            pf = pq.ParquetFile(fh)
            schemas.check_metadata(pf.schema_arrow, schemas.DOWNLOADED, table_path)
            status = pf.read(columns=[C.STATUS]).column(C.STATUS).to_pylist()
        ok = sum(s == SUCCESS for s in status)
        if ok and not fileio.exists(tar_path):
            raise schemas.UserError(f"{table_path}: lists {ok} images but {tar_path} does not exist")
        total += ok
        jobs.append((name, tar_path, table_path))
    if not jobs:
        raise schemas.UserError(f"--input {download}: downloaded/ holds no parquet files")
    return jobs, total


def build(p: beam.Pipeline, jobs: list, output: str, sets: list[tuple[str, list[str]]], r: int, eval_r: int,
          dhash: bool, cap: int, partitions: int, batch: int) -> None:
    hashed = (p
              | "Shards" >> beam.Create(jobs)
              | "SpreadShards" >> beam.Reshuffle()
              | "Hash" >> beam.ParDo(HashShardFn(dhash)).with_outputs("rejects", main="items"))
    exact = (hashed["items"]
             | "BySha" >> beam.Map(lambda it: (it[C.SHA256], it))
             | "GroupSha" >> beam.GroupByKey()
             | "Exact" >> beam.FlatMap(keep_smallest_uid).with_outputs("rejects", main="items"))
    by_value = (exact["items"]
                | "ByPHash" >> beam.Map(lambda it: (it[C.PHASH], it))
                | "GroupPHash" >> beam.GroupByKey()
                | "AsList" >> beam.MapTuple(lambda v, its: (v, sorted(its, key=lambda it: it[C.UID]))))
    train = (by_value
             | "Values" >> beam.Map(lambda kv: kv[0])
             | "BatchTrain" >> beam.BatchElements(min_batch_size=batch, max_batch_size=batch)
             | "BucketTrain" >> beam.ParDo(Buckets(max(r, eval_r), partitions, "train")))
    jobs_eval = [(s, f, path) for s, (_, files) in enumerate(sets) for f, path in enumerate(files)]
    evals = (p
             | "EvalFiles" >> beam.Create(jobs_eval)
             | "SpreadEval" >> beam.Reshuffle()
             | "HashEval" >> beam.ParDo(HashEvalFn())
             | "BatchEval" >> beam.BatchElements(min_batch_size=batch, max_batch_size=batch)
             | "BucketEval" >> beam.ParDo(Buckets(max(r, eval_r), partitions, "eval")))
    info = ((train, evals)
            | "AllBuckets" >> beam.Flatten()
            | "GroupBucket" >> beam.GroupByKey()
            | "Search" >> beam.ParDo(SearchBucketFn(r, eval_r, cap))
            | "Collect" >> beam.combiners.ToList()
            | "Resolve" >> beam.FlatMap(resolve))
    resolved = ({"items": by_value, "info": info}
                | "Join" >> beam.CoGroupByKey()
                | "PerValue" >> beam.ParDo(ResolveValueFn([n for n, _ in sets], [f for _, f in sets], eval_r,
                                                                  [_common_folder(f) for _, f in sets]))
                .with_outputs("rejects", "kept", main="components"))
    near = (resolved["components"]
            | "GroupComponent" >> beam.GroupByKey()
            | "KeepBest" >> beam.FlatMap(keep_best).with_outputs("rejects", "kept"))
    kept = (resolved["kept"], near["kept"]) | "AllKept" >> beam.Flatten()
    (kept
     | "KeepRows" >> beam.Map(keep_row)
     | "WriteKeep" >> outputs.WriteSortedShards(fileio.join(output, "keep"), schemas.KEEP,
                                                key=lambda r: r[C.UID], sort_key=lambda r: r[C.UID],
                                                rows_per_file=5_000_000))
    ((hashed["rejects"], exact["rejects"], resolved["rejects"], near["rejects"])
     | "AllRejects" >> beam.Flatten()
     | "WriteRejects" >> outputs.WriteSortedShards(fileio.join(output, "rejects"), schemas.REJECT,
                                                   key=lambda r: r[C.UID], sort_key=lambda r: (r[C.UID], r[C.REASON]),
                                                   rows_per_file=5_000_000))


def run(argv: list[str] | None = None) -> dict:
    args, beam_options = options.parse("openwit dedupe", __doc__.split("\n\n")[0], add_args, list(argv or []))
    for flag in ("input", "output"):
        if not getattr(args, flag):
            raise schemas.UserError(f"--{flag} is required")
    eval_r = args.eval_radius if args.eval_images else args.radius
    for name, value in (("--radius", args.radius), ("--eval-radius", eval_r)):
        if not 0 <= value <= 32:
            raise schemas.UserError(f"{name} must be between 0 and 32 bits, got {value}")
    if args.cap < 2 or args.batch < 1 or args.partitions < 0:
        raise schemas.UserError("--cap must be at least 2, --batch positive, --partitions not negative")
    jobs, images = shard_jobs(args.input)
    sets = eval_sets(args.eval_images)
    partitions = args.partitions or max(1, math.ceil(images / 250_000))
    fileio.makedirs(args.output)
    start = time.perf_counter()
    p = beam.Pipeline(options=beam_options)
    build(p, jobs, args.output, sets, args.radius, eval_r, args.dhash, args.cap, partitions, args.batch)
    counters = options.run_counted(p, beam_options, f"openwit.{STAGE}", {"tars": len(jobs)}, "images")
    steps = schemas.run.steps_from_counters(counters, STEPS, images)
    clusters = {int(k.split(":")[1]): v for k, v in counters.items() if k.startswith("cluster:")}
    evals = [{"name": name, "path_count": len(files), "images": counters.get(f"evalset:{s}:images", 0),
              "unreadable": counters.get(f"evalset:{s}:unreadable", 0),
              "training_images_removed": counters.get(f"evalset:{s}:overlap", 0)}
             for s, (name, files) in enumerate(sets)]
    stats = {"job": STAGE, "input": args.input, "radius": args.radius, "eval_radius": eval_r,
             "cap": args.cap, "partitions": partitions, "popcounts": counters.get("search:popcounts", 0),
             "eval_sets": evals, "component_sizes": dict(sorted(clusters.items())),
             **schemas.run.ledger(STAGE, steps)}
    fileio.write_json(fileio.join(args.output, STATS_FILE), stats)
    return {**stats, "seconds": round(time.perf_counter() - start, 2), "output": args.output}


def summary(stats: dict) -> str:
    lines = [f"dedupe: {stats['in']:,} images -> {stats['kept']:,} kept (r = {stats['radius']}, "
             f"eval r = {stats['eval_radius']}) in {stats['output']}"]
    lines += options.ledger_lines(stats["steps"], 6, 16)
    for e in stats["eval_sets"]:
        lines.append(f"  evaluation set {e['name']}: {e['images']:,} images, "
                     f"{e['training_images_removed']:,} training images within r removed"
                     + (f", {e['unreadable']} unreadable" if e["unreadable"] else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    return options.job_main(run, summary, STATS_FILE, argv)
