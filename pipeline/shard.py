"""`openwit shard` (Beam): the keep set -> the final training shards, byte-reproducible.

Reads the dedupe keep set (KEEP), the downloaded shards it points into and the CURATED rows
(captions, page urls, languages, matched queries), and writes under --output:

    NNNNN.tar            exactly --samples-per-shard samples (the last may be short), each
                         as ``{uid}.jpg``, ``{uid}.json``, ``{uid}.txt`` adjacent, extensions
                         sorted; mtime 0, owner 0/0 and mode 0644 on every member, so the
                         same inputs give the same bytes
    NNNNN_stats.json     per shard: samples, bytes, image bytes, caption characters, sha256
    index/NNNNN.parquet  SHARD_INDEX: one row per sample with its position, byte offset and
                         size in the tar, and every curation column
    sizes.json           {"NNNNN.tar": samples} (open_clip reads it for the dataset size)
    README.md            the dataset card: counts, funnel, schema version, command lines
    query_counts/        QUERY_COUNTS over the samples that reached this stage (with --balance)
    shard_stats.json     the ledger: in = kept + rejected (missing_sample, balanced_out)

Balancing last (--balance): MetaCLIP's rule applied again after download and dedupe, on
counts recomputed over what survived them (per language and query, exact): ``last`` draws
once here (its own purpose, ``schemas.ids.REBALANCE``, independent of curate's draw) and
drops balanced_out; ``online`` keeps every sample and writes its keep probability into
SHARD_INDEX, and the trainer draws each epoch's samples anew (trainer/data.py). Curate
then runs with --no-balance, or a larger t, so that the web's and dedupe's losses do not
come out of the tail (docs/queries.md says when to balance where).

Order: samples are sorted by a hash of (seed, uid) drawn for the shard order alone
(``schemas.ids.SHARD_ORDER``: independent of the balancing draw, so how common a sample's
query is says nothing about its place), and neighbours in a shard come from unrelated
hosts and queries; the global sort is exact and distributed (hash ranges of ~--range-rows
samples, counted first, each sorted on its own, ranks from the counts' prefix sums).

Image bytes are shuffled once: each downloaded tar is read once and its samples go, in one
batch per output shard, to the worker writing that shard. Every file is written under a temp
name and renamed; sizes.json and the card are written last, so a folder with sizes.json is
complete. A rerun (after a crash or not) rewrites the same bytes and removes shards of an
earlier run that the new one does not have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import math
import time
from collections import Counter, defaultdict
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

import schemas
from schemas import columns as C
from pipeline import balance, options, outputs, progress, tario
from schemas import fileio
from pipeline.imagehashes import IMAGE_EXTENSIONS

SUMMARY = "write the final training shards (webdataset tar + SHARD_INDEX + sizes.json + card) from the keep set (Beam)"
STAGE = schemas.run.SHARD
STATS_FILE = schemas.run.stage(STAGE).ledger
SIZES_FILE = "sizes.json"
CARD_FILE = "README.md"
INDEX_DIR = "index"
QUERY_COUNTS_DIR = "query_counts"
T_FILE = "balance_t.json"
SCORES_DIR = "scores"  # beside keep/ in an `openwit score` output
UNKNOWN_LANG = "und"  # a CURATED row without a language is counted under this code
TEXT_EXT, JSON_EXT = "txt", "json"


def _counter(name: str) -> Metrics.DelegatingCounter:
    return Metrics.counter(f"openwit.{STAGE}", name)


def order_key(seed: int, uid: str) -> int:
    """The sample's place in the dataset order: a 64-bit hash of (seed, uid) drawn for the
    shard order only, so it is independent of every other draw (the balancing one included)."""
    return schemas.ids.hash64(schemas.ids.SHARD_ORDER, seed, uid)


def shard_name(index: int) -> str:
    return f"{index:05d}"


BALANCE_MODES = ("none", "last", "online")
LANG_PREFIX = "balance@"  # per-language balancing counters: balance@<language>:<outcome>


def _reject(uid: str, detail: str, source: str | None, reason: str = "missing_sample", url: str | None = None) -> dict:
    return {C.STAGE: STAGE, C.REASON: reason, C.DETAIL: detail, C.UID: uid, C.URL: url,
            C.DUPLICATE_OF: None, C.SOURCE_FILE: source, C.SOURCE_OFFSET: None}


# -- reading and joining (in batches: one element per range of uids, not per sample) ---------

def uid_range(uid: str, bits: int) -> int:
    """uids are uniform hex hashes: their first 8 digits spread them over 2**bits ranges."""
    return int(uid[:8], 16) >> (32 - bits) if bits else 0


def split_file(path: str, schema: pa.Schema, tag: str, bits: int, columns: list[str] | None = None) -> Iterator:
    """A KEEP or CURATED file -> (uid range, (tag, table)) per range present in it."""
    import pyarrow.compute as pc

    table = schemas.read_table(path, schema)
    if columns:
        table = table.select(columns)
    ranges = pa.array([uid_range(u, bits) for u in table.column(C.UID).to_pylist()], pa.int64())
    for r in pc.unique(ranges).to_pylist():
        yield r, (tag, table.filter(pc.equal(ranges, r)))


class JoinRangeFn(beam.DoFn):
    """One uid range: keep rows joined with their CURATED rows -> (order range, samples),
    the range's {(language, query): samples} ('matches'), and missing_sample rejects ('rejects')."""

    def __init__(self, seed: int, bits: int):
        self.seed, self.bits = seed, bits

    def process(self, group: tuple[int, Iterable[tuple[str, pa.Table]]]) -> Iterator:
        import pyarrow.compute as pc

        _, parts = group
        parts = list(parts)
        keeps = [t for tag, t in parts if tag == "keep"]
        if not keeps:
            return
        keep = pa.concat_tables(keeps)
        curs = [t for tag, t in parts if tag == "curated"]
        scored = {}
        for tag, t in parts:
            if tag == "scores":
                scored.update(zip(t.column(C.UID).to_pylist(), t.column(C.CLIP_SCORE).to_pylist()))
        meta: dict[str, dict] = {}
        if curs:
            cur = pa.concat_tables(curs)
            cur = cur.filter(pc.is_in(cur.column(C.UID), value_set=keep.column(C.UID)))
            meta = {r[C.UID]: r for r in cur.to_pylist()}
        progress.tick("ranges", keep.num_rows)
        by_range: dict[int, list[dict]] = defaultdict(list)
        matches: Counter = Counter()
        for k in keep.to_pylist():
            m = meta.get(k[C.UID])
            if m is None:
                _counter("missing_sample").inc()
                yield beam.pvalue.TaggedOutput("rejects", _reject(k[C.UID], "no CURATED row for this uid",
                                                                  f"{k[C.SHARD]}.tar"))
                continue
            sample = {**m, **k, C.CLIP_SCORE: scored.get(k[C.UID]), "_source": k[C.SHARD],
                      "_order": order_key(self.seed, k[C.UID])}
            matches.update((m.get(C.LANG) or UNKNOWN_LANG, q) for q in set(m[C.MATCHED_QUERIES] or ()))
            by_range[range_of(sample["_order"], self.bits)].append(sample)
        yield beam.pvalue.TaggedOutput("matches", dict(matches))
        yield from by_range.items()


class BalanceRangeFn(beam.DoFn):
    """One order range's samples against the global counts: ``last`` keeps a sample when
    its draw falls under its keep probability (balanced_out otherwise); ``online`` keeps
    them all with the probability in KEEP_PROB. Yields (order range, samples), a count per
    order range ('counts'), the kept samples' {(language, query): n} ('kept') and rejects."""

    def __init__(self, mode: str, seed: int):
        self.mode, self.seed = mode, seed

    def process(self, item: tuple[int, list[dict]], counts: dict, t: balance.Budgets) -> Iterator:
        rng, samples = item
        kept_samples, kept_queries, outcomes = [], Counter(), Counter()
        for s in samples:
            if self.mode != "none":
                queries = set(s[C.MATCHED_QUERIES] or ())
                lang = s.get(C.LANG) or UNKNOWN_LANG
                p = balance.keep_probability([counts[lang, q] for q in queries], t[lang]) if queries else 1.0
                if self.mode == "online":
                    s[C.KEEP_PROB] = p
                    micros = round(p * 1e6)
                    outcomes["keep_prob_micros"] += micros
                    outcomes[f"{LANG_PREFIX}{lang}:keep_prob_micros"] += micros
                elif not schemas.ids.uniform(schemas.ids.REBALANCE, self.seed, s[C.UID]) < p:
                    outcomes["balanced_out"] += 1
                    outcomes[f"{LANG_PREFIX}{lang}:balanced_out"] += 1
                    yield beam.pvalue.TaggedOutput("rejects", _reject(s[C.UID], f"p={p:.6g}", f"{s['_source']}.tar",
                                                                      "balanced_out", s[C.URL]))
                    continue
                outcomes[f"{LANG_PREFIX}{lang}:kept"] += 1
            kept_samples.append(s)
            kept_queries.update((s.get(C.LANG) or UNKNOWN_LANG, q) for q in set(s[C.MATCHED_QUERIES] or ()))
        outcomes["balanced"] += len(kept_samples)
        for name, n in outcomes.items():  # once per range, not once per sample
            _counter(name).inc(n)
        yield beam.pvalue.TaggedOutput("kept", dict(kept_queries))
        if kept_samples:
            yield beam.pvalue.TaggedOutput("counts", (rng, len(kept_samples)))
            yield rng, kept_samples


# -- ordering ------------------------------------------------------------------------------

def range_of(key: int, bits: int) -> int:
    return key >> (64 - bits) if bits else 0


class RankFn(beam.DoFn):
    """One order range -> its samples with their global rank, output shard and position,
    batched by the downloaded shard that holds their image."""

    def __init__(self, per_shard: int):
        self.per_shard = per_shard
        self._starts: dict[int, int] | None = None

    def process(self, group: tuple[int, Iterable[list[dict]]], counts: dict[int, int]) -> Iterator:
        rng, batches = group
        if self._starts is None:  # prefix sums of the range counts, once per worker
            self._starts, total = {}, 0
            for r in sorted(counts):
                self._starts[r] = total
                total += counts[r]
        start = self._starts[rng]
        samples = sorted((s for batch in batches for s in batch), key=lambda s: (s["_order"], s[C.UID]))
        by_source: dict[str, list[dict]] = defaultdict(list)
        for i, s in enumerate(samples):
            rank = start + i
            s[C.SHARD], s[C.SHARD_POSITION] = shard_name(rank // self.per_shard), rank % self.per_shard
            by_source[s["_source"]].append(s)
        yield from by_source.items()


# -- copying and writing -------------------------------------------------------------------

def copy_from_source(group: tuple[str, Iterable[list[dict]]], source_tars: dict[str, str]) -> Iterator:
    """One downloaded tar -> (output shard, [(position, sample, image ext, image bytes)])."""
    source, batches = group
    wanted = {s[C.KEY]: s for batch in batches for s in batch}
    images: dict[str, tuple[str, bytes]] = {}
    path = source_tars.get(source)
    if path is None:
        raise RuntimeError(f"the keep set names downloaded shard {source}.tar, which --images does not hold; "
                           "run shard with the download folder dedupe read")
    def want(name: str) -> bool:
        key, _, ext = name.rpartition("/")[2].partition(".")
        return key in wanted and key not in images and ext.lower() in IMAGE_EXTENSIONS

    with fileio.open_read(path) as fh:
        for name, data in tario.iter_members(fh, want):
            if data is not None:
                key, _, ext = name.rpartition("/")[2].partition(".")
                images[key] = (ext.lower(), data)
    missing = sorted(set(wanted) - set(images))
    if missing:
        raise RuntimeError(f"{path}: no image for key {missing[0]} (and {len(missing) - 1} more) that dedupe "
                           "read there; the downloaded shards changed since dedupe ran: rerun dedupe")
    batches_out: dict[str, list] = defaultdict(list)
    for key, s in wanted.items():
        batches_out[s[C.SHARD]].append((s[C.SHARD_POSITION], s, *images[key]))
    yield from batches_out.items()


def sample_json(s: dict) -> bytes:
    doc = {C.UID: s[C.UID], C.URL: s[C.URL], C.PAGE_URL: s.get(C.PAGE_URL), C.LANG: s.get(C.LANG),
           C.MATCHED_QUERIES: list(s.get(C.MATCHED_QUERIES) or []), C.WIDTH: s.get(C.WIDTH),
           C.HEIGHT: s.get(C.HEIGHT), C.ORIGINAL_WIDTH: s.get(C.ORIGINAL_WIDTH),
           C.ORIGINAL_HEIGHT: s.get(C.ORIGINAL_HEIGHT), C.SHA256: s[C.SHA256],
           C.PHASH: f"{s[C.PHASH]:016x}", C.DHASH: f"{s[C.DHASH]:016x}" if s.get(C.DHASH) is not None else None}
    if s.get(C.CLIP_SCORE) is not None:
        doc[C.CLIP_SCORE] = round(float(s[C.CLIP_SCORE]), 6)
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


class _Hashing:
    """A file wrapper that hashes what is written through it."""

    def __init__(self, fh, digest):
        self.fh, self.digest = fh, digest

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.fh.write(data)


def write_shard(group: tuple[str, Iterable[list]], output: str) -> dict:
    """All batches of one output shard -> NNNNN.tar, index/NNNNN.parquet, NNNNN_stats.json."""
    name, batches = group
    items = sorted((it for batch in batches for it in batch), key=lambda it: it[0])
    rows, image_bytes, chars = [], 0, 0
    digest = hashlib.sha256()
    with fileio.atomic_local(fileio.join(output, f"{name}.tar")) as tmp:
        with open(tmp, "wb") as fh:
            tar = tario.Writer(_Hashing(fh, digest))
            for position, s, ext, image in items:
                start = tar.offset
                members = {ext: image, JSON_EXT: sample_json(s), TEXT_EXT: s[C.TEXT].encode("utf-8")}
                for member in sorted(members):
                    tar.add(f"{s[C.UID]}.{member}", members[member])
                image_bytes += len(image)
                chars += len(s[C.TEXT])
                rows.append(_index_row(s, name, position, start, tar.offset - start))
            tar.close()
        size = os.path.getsize(tmp)
    outputs.write_rows(fileio.join(output, INDEX_DIR, f"{name}.parquet"), rows, schemas.SHARD_INDEX)
    stats = {"file": f"{name}.tar", "samples": len(rows), "bytes": size, "image_bytes": image_bytes,
             "caption_chars": chars, "file_sha256": digest.hexdigest()}
    fileio.write_json(fileio.join(output, f"{name}_stats.json"), stats)
    _counter("kept").inc(len(rows))
    progress.tick("shards")
    return stats


def _index_row(s: dict, shard: str, position: int, offset: int, size: int) -> dict:
    row = {n: s.get(n) for n in schemas.SHARD_INDEX.names}
    row.update({C.SHARD: shard, C.SHARD_POSITION: position, C.KEY: s[C.UID], C.TAR_OFFSET: offset,
                C.TAR_BYTES: size, C.MATCHED_QUERIES: list(s.get(C.MATCHED_QUERIES) or [])})
    return row


# -- the job -------------------------------------------------------------------------------

def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", default=None, help="a dedupe --output folder (or its keep/ folder)")
    parser.add_argument("--images", default=None, help="the download --output folder the keep set points into")
    parser.add_argument("--curated", default=None, help="the curate --output folder (or its curated/ folder)")
    parser.add_argument("--output", default=None, help="output folder for the training shards")
    parser.add_argument("--samples-per-shard", type=int, default=10_000, help="samples per tar (default: 10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order (default: 0)")
    parser.add_argument("--range-rows", type=int, default=200_000,
                        help="samples per hash range of the distributed sort (default: 200,000)")
    parser.add_argument("--name", default=None, help="dataset name for the card (default: the output folder name)")
    parser.add_argument("--balance", default="none", choices=BALANCE_MODES,
                        help="balance again on the counts of what survived download and dedupe: 'last' draws here, "
                        "'online' stores each sample's keep probability for the trainer to draw every epoch "
                        "(default: none)")
    parser.add_argument("--t", type=float, default=None,
                        help=f"with --balance: the per-query budget t (default: {balance.DEFAULT_T})")
    parser.add_argument("--target-size", type=int, default=None,
                        help="with --balance: choose t so that MetaCLIP's size estimate, the sum over queries of "
                        "min(count, t), is this (a sample matching several queries counts once per query)")
    parser.add_argument("--balance-seed", type=int, default=0, help="with --balance last: seed of the draws (default: 0)")
    parser.add_argument("--per-language-t", action="store_true",
                        help="with --balance: --t (or --target-size) sets English's t and every other language is "
                        "balanced at the t that keeps English's share of matches on tail entries (MetaCLIP 2; for "
                        "a worldwide curate run)")


def _folder(path: str, sub: str) -> str:
    inner = fileio.join(path, sub)
    return inner if fileio.exists(inner) else path


def _parquet(folder: str, flag: str, schema: pa.Schema) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    files = schemas.parquet_files(folder)
    if not files:
        raise schemas.UserError(f"{flag} {folder}: no parquet files")
    rows = 0
    for f in files:
        with fileio.open_read(str(f)) as fh:
            pf = pq.ParquetFile(fh)
            schemas.check_metadata(pf.schema_arrow, schema, f)
            rows += pf.metadata.num_rows
    return [str(f) for f in files], rows


def write_query_counts(matches: dict, kept: dict, t: balance.Budgets, output: str) -> int:
    """query_counts/part-00000-of-00001.parquet: per (language, query), the samples that
    reached this stage, the keep probability of the query and the samples kept."""
    rows = [{C.LANG: lang, C.QUERY: q, C.MATCH_COUNT: n, C.KEEP_PROB: balance.query_probability(n, t[lang]),
             C.KEPT_COUNT: kept.get((lang, q), 0)} for (lang, q), n in sorted(matches.items())]
    outputs.write_rows(fileio.join(output, QUERY_COUNTS_DIR, outputs.part_name(0, 1)), rows, schemas.QUERY_COUNTS)
    fileio.write_json(fileio.join(output, QUERY_COUNTS_DIR, T_FILE), t.record())
    return len(rows)


def build(p: beam.Pipeline, keep_files: list[str], curated_files: list[str], source_tars: dict[str, str],
          output: str, per_shard: int, seed: int, bits: int, mode: str = "none", t: float | None = None,
          target_size: int | None = None, balance_seed: int = 0, per_language_t: bool = False,
          score_files: list[str] | None = None) -> None:
    wanted = [C.UID, C.URL, C.TEXT, C.LANG, C.LANG_PROB, C.MATCHED_QUERIES, C.PAGE_URL,
              C.SOURCE_FILE, C.SOURCE_OFFSET, C.SOURCE_FORMAT]
    keep = (p | "KeepFiles" >> beam.Create(keep_files)
            | "SpreadKeep" >> beam.Reshuffle()
            | "SplitKeep" >> beam.FlatMap(split_file, schemas.KEEP, "keep", bits))
    curated = (p | "CuratedFiles" >> beam.Create(curated_files)
               | "SpreadCurated" >> beam.Reshuffle()
               | "SplitCurated" >> beam.FlatMap(split_file, schemas.CURATED, "curated", bits, wanted))
    sides = [keep, curated]
    if score_files:  # the keep set is an `openwit score` output: each sample's score goes into SHARD_INDEX
        sides.append(p | "ScoreFiles" >> beam.Create(score_files)
                     | "SpreadScores" >> beam.Reshuffle()
                     | "SplitScores" >> beam.FlatMap(split_file, schemas.SCORES, "scores", bits, [C.UID, C.CLIP_SCORE]))
    joined = (tuple(sides)
              | "BothSides" >> beam.Flatten()
              | "GroupUidRange" >> beam.GroupByKey()
              | "Join" >> beam.ParDo(JoinRangeFn(seed, bits)).with_outputs("matches", "rejects", main="samples"))
    matches = joined["matches"] | "CountQueries" >> beam.CombineGlobally(balance.merge_counts)
    if mode == "none":
        budget = p | "NoBudget" >> beam.Create([balance.Budgets({}, math.inf)])
    else:
        budget = matches | "SolveT" >> beam.Map(balance.budgets, t, target_size, per_language_t)
    balanced = (joined["samples"]
                | "Balance" >> beam.ParDo(BalanceRangeFn(mode, balance_seed), counts=beam.pvalue.AsSingleton(matches),
                                          t=beam.pvalue.AsSingleton(budget))
                .with_outputs("counts", "kept", "rejects", main="samples"))
    counts = balanced["counts"] | "RangeCounts" >> beam.CombinePerKey(sum)
    kept = balanced["kept"] | "CountKept" >> beam.CombineGlobally(balance.merge_counts)
    (matches | "WriteQueryCounts" >> beam.Map(write_query_counts, kept=beam.pvalue.AsSingleton(kept),
                                              t=beam.pvalue.AsSingleton(budget), output=output))
    (balanced["samples"]
     | "GroupOrderRange" >> beam.GroupByKey()
     | "Rank" >> beam.ParDo(RankFn(per_shard), counts=beam.pvalue.AsDict(counts))
     | "GroupSource" >> beam.GroupByKey()
     | "Copy" >> beam.FlatMap(copy_from_source, source_tars)
     | "GroupShard" >> beam.GroupByKey()
     | "Write" >> beam.Map(write_shard, output))
    ((joined["rejects"], balanced["rejects"])
     | "AllRejects" >> beam.Flatten()
     | "WriteRejects" >> outputs.WriteSortedShards(fileio.join(output, "rejects"), schemas.REJECT,
                                                   key=lambda r: r[C.UID], sort_key=lambda r: r[C.UID],
                                                   rows_per_file=5_000_000))


def _remove_stale(output: str, shards: int) -> int:
    """Remove shards (tar, stats, index) numbered at or above ``shards``: an earlier run's."""
    removed = 0
    for folder, suffixes in ((output, (".tar", "_stats.json")), (fileio.join(output, INDEX_DIR), (".parquet",))):
        for name in fileio.listdir(folder):
            for suffix in suffixes:
                stem = name.removesuffix(suffix)
                if name.endswith(suffix) and stem.isdigit() and int(stem) >= shards:
                    fileio.remove(fileio.join(folder, name))
                    removed += 1
    return removed


def run(argv: list[str] | None = None) -> dict:
    argv = list(argv or [])
    # locally one process: the job moves bytes, which multi-process mode copies through gRPC
    # (measured: 6.7 s in one process vs 13.4 s with worker processes for 200 MB)
    args, beam_options = options.parse("openwit shard", __doc__.split("\n\n")[0], add_args, argv,
                                       local_mode="in_memory")
    for flag in ("keep", "images", "curated", "output"):
        if not getattr(args, flag):
            raise schemas.UserError(f"--{flag} is required")
    if args.samples_per_shard <= 0 or args.range_rows <= 0:
        raise schemas.UserError("--samples-per-shard and --range-rows must be positive")
    given = [f for f, v in (("--t", args.t), ("--target-size", args.target_size),
                            ("--balance-seed", args.balance_seed or None),
                            ("--per-language-t", args.per_language_t or None)) if v is not None]
    if args.balance == "none" and given:
        raise schemas.UserError(f"{given[0]} is for balancing: add --balance last or --balance online")
    if args.t is not None and not (args.t > 0 and math.isfinite(args.t)):
        raise schemas.UserError(f"--t {args.t:g}: the per-query budget must be a positive number")
    if args.target_size is not None and args.target_size <= 0:
        raise schemas.UserError("--target-size must be positive")
    if args.t is not None and args.target_size is not None:
        raise schemas.UserError("--t and --target-size both choose the budget: give one")
    keep_files, n_keep = _parquet(_folder(args.keep, "keep"), "--keep", schemas.KEEP)
    score_files = []
    # an `openwit score` output (given as its folder or its keep/ folder): its scores/ beside keep/
    root = args.keep if fileio.exists(fileio.join(args.keep, "keep")) else fileio.dirname(args.keep.rstrip("/"))
    if fileio.exists(fileio.join(root, SCORES_DIR)) and fileio.exists(fileio.join(root, "keep")):
        score_files, _ = _parquet(fileio.join(root, SCORES_DIR), "--keep", schemas.SCORES)
    curated_files, _ = _parquet(_folder(args.curated, "curated"), "--curated", schemas.CURATED)
    shards_dir = _folder(args.images, "shards")
    source_tars = {fileio.basename(t).removesuffix(".tar"): t
                   for t in fileio.expand_inputs([fileio.join(shards_dir, "*.tar")])} if n_keep else {}
    bits = max(0, min(20, (max(1, n_keep // args.range_rows)).bit_length()))
    fileio.makedirs(args.output)
    for name in (SIZES_FILE, CARD_FILE, STATS_FILE):  # a partial rerun must not look complete
        if fileio.exists(fileio.join(args.output, name)):
            fileio.remove(fileio.join(args.output, name))
    start = time.perf_counter()
    p = beam.Pipeline(options=beam_options)
    build(p, keep_files, curated_files, source_tars, args.output, args.samples_per_shard, args.seed, bits,
          args.balance, args.t, args.target_size, args.balance_seed, args.per_language_t, score_files)
    counters = options.run_counted(p, beam_options, f"openwit.{STAGE}",
                                   {"ranges": 1 << bits, "shards": -(-n_keep // args.samples_per_shard)}, "samples")
    kept, missing = counters.get("kept", 0), counters.get("missing_sample", 0)
    balanced_out = counters.get("balanced_out", 0)
    n_shards = -(-kept // args.samples_per_shard)
    stale = _remove_stale(args.output, n_shards)
    per_shard = [fileio.read_json(fileio.join(args.output, f"{shard_name(i)}_stats.json")) for i in range(n_shards)]
    sizes = {s["file"]: s["samples"] for s in per_shard}
    command = "openwit shard " + shlex.join(argv)
    # without balancing, the join's kept is what was written, so the ledger checks the writing too
    joined = n_keep - missing if args.balance != "none" else kept
    steps = [schemas.run.step("join", n_keep, joined, {"missing_sample": missing})]
    if args.balance != "none":
        steps.append(schemas.run.step("balance", n_keep - missing, kept, {"balanced_out": balanced_out}))
    budget = fileio.read_json(fileio.join(args.output, QUERY_COUNTS_DIR, T_FILE))
    stats = {"job": STAGE, **schemas.run.ledger(STAGE, steps),
             "balance": args.balance, "t": budget["t"], "target_size": args.target_size,
             "balance_seed": args.balance_seed, "t_by_language": budget["by_language"] if args.per_language_t else None,
             "english_tail_share": budget.get("english_tail_share"),
             "by_language": language_sections(counters, budget, args.balance) if args.balance != "none" else None,
             "expected_samples_per_epoch": round(counters.get("keep_prob_micros", 0) / 1e6, 1)
             if args.balance == "online" else None,
             "shards": n_shards, "samples_per_shard": args.samples_per_shard,
             "seed": args.seed, "bytes": sum(s["bytes"] for s in per_shard), "stale_files_removed": stale,
             "image_preprocessing": (_stage_stats(args.images, schemas.run.stage(schemas.run.DOWNLOAD).ledger) or {})
             .get("image_preprocessing"),
             "command": command, "schema_version": schemas.SCHEMA_VERSION}
    fileio.write_json(fileio.join(args.output, STATS_FILE), stats)
    card = dataset_card(args, stats, per_shard)
    with fileio.atomic_local(fileio.join(args.output, CARD_FILE)) as tmp, open(tmp, "w") as fh:
        fh.write(card)
    fileio.write_json(fileio.join(args.output, SIZES_FILE), sizes)
    return {**stats, "seconds": round(time.perf_counter() - start, 2), "output": args.output}


def _stage_stats(folder: str, name: str) -> dict | None:
    for path in (fileio.join(folder, name), fileio.join(fileio.dirname(folder), name)):
        if fileio.exists(path):
            return fileio.read_json(path)
    return None


def dataset_card(args: argparse.Namespace, stats: dict, per_shard: list[dict]) -> str:
    """The dataset card (markdown): what is in the shards and how they were made."""
    name = args.name or fileio.basename(args.output)
    curate = _stage_stats(args.curated, "curate_stats.json")
    download = _stage_stats(args.images, "download_stats.json")
    score = _stage_stats(args.keep, schemas.run.stage(schemas.run.SCORE).ledger)
    dedupe = _stage_stats(args.keep, "dedupe_stats.json") or (_stage_stats(score["keep"], "dedupe_stats.json")
                                                              if score and score.get("keep") else None)
    lines = [f"# {name}", "", "Image-text pairs in webdataset shards, written by `openwit shard`.", "",
             "## Contents", "",
             f"- {stats['kept']:,} samples in {stats['shards']:,} shards of {args.samples_per_shard:,} "
             f"({stats['bytes'] / 1e6:,.1f} MB)",
             "- each sample: `{uid}.jpg` (the image), `{uid}.txt` (the caption, UTF-8), `{uid}.json` "
             "(uid, url, page url, language, matched queries, sizes, sha256, pHash/dHash)",
             f"- order: sorted by blake2b-64 personalised '{schemas.ids.SHARD_ORDER}' of (seed={args.seed}, uid)",
             *([f"- {balance_line(stats)}"] if balance_line(stats) else []),
             *([f"- filtered by `openwit score` with {score['model']}: {score_line(score)}; each sample's "
                f"`{C.CLIP_SCORE}` is in SHARD_INDEX and its .json"] if score else []),
             f"- manifest: `{INDEX_DIR}/NNNNN.parquet` (SHARD_INDEX, schema version {schemas.SCHEMA_VERSION}); "
             f"`{SIZES_FILE}` for open_clip", "", "## Funnel", "", "| stage | in | kept |", "|---|---:|---:|"]
    if curate:
        lines.append(f"| curate | {curate['candidates']:,} | {curate['curated']:,} |")
    if download:
        lines.append(f"| download | {download['in']:,} | {download['kept']:,} |")
    if dedupe:
        lines.append(f"| dedupe | {dedupe['in']:,} | {dedupe['kept']:,} |")
    if score:
        lines.append(f"| score | {score['in']:,} | {score['kept']:,} |")
    lines.append(f"| shard | {stats['in']:,} | {stats['kept']:,} |")
    rejected = [("download", download), ("dedupe", dedupe), ("score", score), (STAGE, stats)]
    reasons = [(stage, r, n) for stage, st in rejected if st for r, n in st.get("rejected", {}).items()]
    if reasons:
        lines += ["", "## Rejected", "", "| stage | reason | rows | meaning |", "|---|---|---:|---|"]
        lines += [f"| {st} | {r} | {n:,} | {schemas.describe(r)} |" for st, r, n in reasons]
    if dedupe:
        lines += ["", "## Deduplication", "",
                  f"pHash radius {dedupe['radius']} bits (evaluation radius {dedupe['eval_radius']})."]
        for e in dedupe.get("eval_sets", []):
            lines.append(f"- evaluation set `{e['name']}`: {e['images']:,} images; "
                         f"{e['training_images_removed']:,} training images removed")
    lines += ["", "## Commands", "", "```"]
    for st in (curate, download, dedupe, score):
        if st and st.get("command"):
            lines.append(st["command"])
    lines += [stats["command"], "```", "", "## Shards", "", "| shard | samples | bytes | sha256 |", "|---|---:|---:|---|"]
    lines += [f"| {s['file']} | {s['samples']:,} | {s['bytes']:,} | `{s['file_sha256'][:16]}…` |" for s in per_shard[:50]]
    if len(per_shard) > 50:
        lines.append(f"| … {len(per_shard) - 50:,} more (see NNNNN_stats.json) | | | |")
    return "\n".join(lines) + "\n"


def score_line(score: dict) -> str:
    if score.get("keep_top"):
        threshold = f"threshold {score['threshold']:.4f}" if score.get("threshold") is not None else "none kept"
        return f"the top {score['keep_top']:g} by score ({threshold})"
    if score.get("min_score") is not None:
        return f"score >= {score['min_score']:g}"
    return "scored, not filtered"


def language_sections(counters: dict[str, int], budget: dict, mode: str) -> dict[str, dict]:
    """Per language: its t, the samples that reached balancing, kept and balanced_out (and,
    online, the samples an epoch draws on average)."""
    by: dict[str, dict[str, int]] = {}
    for name, n in counters.items():
        if name.startswith(LANG_PREFIX):
            lang, _, outcome = name[len(LANG_PREFIX):].partition(":")
            by.setdefault(lang, {})[outcome] = n
    out = {}
    for lang, c in sorted(by.items()):
        kept, dropped = c.get("kept", 0), c.get("balanced_out", 0)
        out[lang] = {"t": (budget.get("by_language") or {}).get(lang, budget["t"]),
                     **schemas.run.ledger(STAGE, [schemas.run.step("balance", kept + dropped, kept,
                                                                   {"balanced_out": dropped})])}
        if mode == "online":
            out[lang]["expected_samples_per_epoch"] = round(c.get("keep_prob_micros", 0) / 1e6, 1)
    return out


def balance_line(stats: dict) -> str:
    """How the shards were balanced, in words ('' when they were not)."""
    mode, t = stats.get("balance", "none"), stats.get("t")
    if mode == "none":
        return ""
    budget = f"t = {t:,.1f}"
    if stats.get("t_by_language") and stats.get("english_tail_share") is None:
        budget = f"t = {t:,.1f} for every language: no English sample was counted"
    elif stats.get("t_by_language"):
        others = ", ".join(f"{lang} {v:,.1f}" for lang, v in sorted(stats["t_by_language"].items()) if lang != "en")
        budget = f"English's t = {t:,.1f}; by English's tail share ({stats['english_tail_share']:.1%}): {others}"
    if mode == "last":
        return f"balanced last on the counts after download and dedupe ({budget}, seed {stats['balance_seed']})"
    if mode == "online":
        return (f"balanced online: keep probabilities ({budget}) in SHARD_INDEX; the trainer draws about "
                f"{stats['expected_samples_per_epoch']:,.0f} samples per epoch")
    return ""


def summary(stats: dict) -> str:
    line = (f"shard: {stats['in']:,} kept images -> {stats['kept']:,} samples in {stats['shards']:,} shards "
            f"({stats['bytes'] / 1e6:,.1f} MB) in {stats['output']}")
    if balance_line(stats):
        line += f"\n  {balance_line(stats)}"
    for reason, n in stats["rejected"].items():
        line += f"\n  rejected {reason:<16} {n:>8,}  {schemas.describe(reason)}"
    sections = stats.get("by_language") or {}
    if len(sections) > 1:
        line += f"\n  {'language':<9} {'t':>12} {'in':>10} {'kept':>10}"
        for lang, sec in sorted(sections.items(), key=lambda kv: -kv[1]["in"]):
            line += f"\n  {lang:<9} {sec['t']:>12,.1f} {sec['in']:>10,} {sec['kept']:>10,}"
    return line


def main(argv: list[str]) -> int:
    stats = run(argv)
    print(summary(stats))
    print(f"  {stats['seconds']:.1f}s; sizes.json, README.md and index/ in {stats['output']}")
    return 0 if stats["ledger_ok"] else 1
