"""`openwit curate` (Beam): CANDIDATE rows -> a query-matched, balanced, deduplicated,
language-tagged CURATED url list, the QUERY_COUNTS behind it, and the REJECT rows.

Steps, cheapest and most selective first, and what their order means for the counts:

1. clean    ftfy repair, whitespace collapse (extract already did both; a candidate list
            made elsewhere gets them here, its uid unchanged); drop url_too_long, text_too_long,
            filename_text, boilerplate_text, text_too_short. Per row, no shuffle.
2. match    one Aho-Corasick pass per text over the query list (MetaCLIP's spacing rule);
            drop no_query_match. Fused with step 1, before any shuffle, so the shuffle
            of step 3 carries only texts that can be kept. Its count includes duplicates.
3. dedupe   exact, on the uid extract fixed = hash(url, repaired text): the copy with the smallest
            (source_file, source_offset) is kept, the others are duplicate_uid; with
            --dedupe-url also one row per url (smallest uid kept), duplicate_url.
4. counts   exact global count of deduplicated texts per matched query (QUERY_COUNTS).
5. balance  keep with 1 - prod(1 - t / max(count_q, t)) by a hash of (seed, uid);
            drop balanced_out. Counts include texts that step 6 later drops as
            non-English: their share of a head query's budget is lost, not reassigned.
6. language language id (cached by text) on the survivors only, the fewest rows it can
            run on; drop language_filtered unless the language is allowed. Backends:
            wordfreq (default: a word-frequency model over 42 languages) or langdetect
            (seeded); docs/benchmarks.md compares them on a labelled sample.

Outputs under --output: curated/part-*.parquet (sorted by uid; img2dataset reads it with
--url_col url --caption_col text), query_counts/, rejects/, curate_stats.json (the ledger:
for every step, in = kept + sum(rejected)).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

import schemas
from schemas import columns as C
from pipeline import balance, options, outputs, textclean
from schemas import fileio
from pipeline.langid import BACKENDS, LanguageId
from pipeline.matching import QueryMatcher, load_entries

SUMMARY = "match, balance, deduplicate and language-tag candidates into the url list to download (Beam)"
STAGE = schemas.run.CURATE
STEPS = ("clean", "match", "dedupe", "balance", "language")
STATS_FILE = schemas.run.stage(STAGE).ledger
REJECTS = "rejects"
KEPT_QUERIES = "kept_queries"
# Output shards at the least: enough parallel work for a local run, and fixed, so the
# partitioning (and download's order after it) is the same whichever machine launches.
MIN_SHARDS = 16


def _counter(step: str, outcome: str) -> Metrics.DelegatingCounter:
    return Metrics.counter(f"openwit.{STAGE}", f"{step}:{outcome}")


def reject_row(row: dict, reason: str, detail: str | None = None, duplicate_of: str | None = None) -> dict:
    return {C.STAGE: STAGE, C.REASON: reason, C.DETAIL: detail, C.UID: row[C.UID], C.URL: row[C.URL],
            C.DUPLICATE_OF: duplicate_of, C.SOURCE_FILE: row[C.SOURCE_FILE], C.SOURCE_OFFSET: row[C.SOURCE_OFFSET]}


# -- DoFns -----------------------------------------------------------------------------------

def read_candidates(path: str) -> list[dict]:
    with fileio.open_read(path) as fh:
        return pq.ParquetFile(fh).read().to_pylist()


class _MatcherHolder:
    """A weakref-able holder, so Beam's Shared can hand one automaton to every thread."""

    def __init__(self, matcher: QueryMatcher):
        self.matcher = matcher


class CleanAndMatchFn(beam.DoFn):
    """Steps 1 and 2 on a batch (one candidate file): repair, filter, match.

    Emits the batch's rejects as one element, and its kept rows bucketed by output shard
    (a hash of the new uid), one element per shard: few, large elements keep Beam's
    per-element cost off the per-row path.
    """

    def __init__(self, queries: str, lowercase: bool, rules: textclean.TextRules, shards: int, by_url: bool,
                 shared: Shared):
        self.queries, self.lowercase, self.rules, self.shards, self.shared = queries, lowercase, rules, shards, shared
        self.by_url = by_url

    def setup(self) -> None:
        def build() -> _MatcherHolder:
            with fileio.open_read(self.queries) as fh:
                entries = load_entries(fh.read().decode("utf-8").splitlines())
            return _MatcherHolder(QueryMatcher(entries, self.lowercase))

        self.matcher = self.shared.acquire(build, tag=f"{self.queries}:{self.lowercase}").matcher

    def process(self, batch: tuple[str, list[dict]]) -> Iterator:
        name, rows = batch
        outcomes: Counter = Counter()
        rejects = []
        buckets: dict[int, list[dict]] = {}
        matched_count = 0
        for row in rows:
            text = textclean.normalize(row[C.TEXT])
            reason = textclean.verdict(text, row[C.URL], self.rules)
            if reason:
                outcomes["clean", reason] += 1
                rejects.append(reject_row(row, reason))
                continue
            matched = self.matcher.match_entries(text)
            if not matched:
                outcomes["match", "no_query_match"] += 1
                rejects.append(reject_row(row, "no_query_match"))
                continue
            matched_count += 1
            uid = row[C.UID]  # fixed by extract from (url, repaired text); never recomputed
            # Every copy of a uid (and, with url dedupe, of a url) must meet in one shard.
            key = row[C.URL] if self.by_url else uid
            buckets.setdefault(outputs.shard_of(key, self.shards), []).append(
                {**row, C.UID: uid, C.TEXT: text, C.MATCHED_QUERIES: matched})
        outcomes["match", "kept"] = matched_count
        outcomes["clean", "kept"] = matched_count + outcomes["match", "no_query_match"]
        _count(outcomes)
        yield beam.pvalue.TaggedOutput(REJECTS, (f"clean-{name}", rejects))
        yield from buckets.items()


def _count(outcomes: Counter) -> None:
    for (step, outcome), n in outcomes.items():
        _counter(step, outcome).inc(n)


def _provenance(row: dict) -> tuple:
    return (row[C.SOURCE_FILE], row[C.SOURCE_OFFSET], row[C.PAGE_URL] or "", row[C.UID])


def keep_one(rows: list[dict], key: str, order, reason: str) -> tuple[list[dict], list[dict]]:
    """(one row per ``key`` value, the smallest by ``order``; the others as rejects)."""
    rows = sorted(rows, key=lambda r: (r[key], order(r)))
    kept, rejects = [], []
    for row in rows:
        if kept and kept[-1][key] == row[key]:
            rep = kept[-1]
            rejects.append(reject_row(row, reason, f"kept {rep[C.SOURCE_FILE]}@{rep[C.SOURCE_OFFSET]}", rep[C.UID]))
        else:
            kept.append(row)
    return kept, rejects


class DedupeShardFn(beam.DoFn):
    """Step 3 on one shard: every copy of a uid lands in the same shard (and url, if asked)."""

    def __init__(self, dedupe_url: bool):
        self.dedupe_url = dedupe_url

    def process(self, group: tuple[int, Iterable[list[dict]]]) -> Iterator:
        shard, batches = group
        rows = [r for batch in batches for r in batch]
        kept, rejects = keep_one(rows, C.UID, _provenance, "duplicate_uid")
        if self.dedupe_url:
            kept, more = keep_one(kept, C.URL, lambda r: r[C.UID], "duplicate_url")
            rejects += more
        kept.sort(key=lambda r: r[C.UID])
        _count(Counter({("dedupe", "kept"): len(kept)}) + Counter(("dedupe", r[C.REASON]) for r in rejects))
        yield beam.pvalue.TaggedOutput(REJECTS, (f"dedupe-{shard:05d}", rejects))
        yield shard, kept


def shard_query_counts(item: tuple[int, list[dict]]) -> Iterator[tuple[str, int]]:
    counts: Counter = Counter()
    for row in item[1]:
        counts.update(row[C.MATCHED_QUERIES])
    yield from counts.items()


class BalanceAndLanguageFn(beam.DoFn):
    """Steps 5 and 6 on one shard: the deterministic draw, then language id on survivors."""

    def __init__(self, seed: int, allowed: frozenset[str] | None, backend: str):
        self.seed, self.allowed, self.backend = seed, allowed, backend

    def setup(self) -> None:
        self.langid = LanguageId(self.backend)

    def process(self, item: tuple[int, list[dict]], counts: dict[str, int], t: float) -> Iterator:
        shard, rows = item
        outcomes: Counter = Counter()
        kept, rejects = [], []
        kept_queries: Counter = Counter()
        for row in rows:
            p = balance.keep_probability([counts[q] for q in row[C.MATCHED_QUERIES]], t)
            if not balance.keeps(self.seed, row[C.UID], p):
                outcomes["balance", "balanced_out"] += 1
                rejects.append(reject_row(row, "balanced_out", f"p={p:.6g}"))
                continue
            outcomes["balance", "kept"] += 1
            kept_queries.update(row[C.MATCHED_QUERIES])
            lang, prob = self.langid.detect(row[C.TEXT])
            if self.allowed is not None and lang not in self.allowed:
                outcomes["language", "language_filtered"] += 1
                rejects.append(reject_row(row, "language_filtered", lang))
                continue
            outcomes["language", "kept"] += 1
            kept.append({**row, C.LANG: lang, C.LANG_PROB: prob})
        _count(outcomes)
        yield beam.pvalue.TaggedOutput(REJECTS, (f"balance-{shard:05d}", rejects))
        yield beam.pvalue.TaggedOutput(KEPT_QUERIES, kept_queries)
        yield shard, kept


# -- the composite ---------------------------------------------------------------------------

class CurateCandidates(beam.PTransform):
    """Batches of CANDIDATE rows ``(name, rows)`` -> {'curated': (shard, rows sorted by uid),
    'rejects': (name, rows), 'query_counts': rows, 't': float}."""

    def __init__(self, queries: str, rules: textclean.TextRules, seed: int = 0, t: float | None = None,
                 target_size: int | None = None, languages: frozenset[str] | None = frozenset({"en"}),
                 lowercase: bool = False, dedupe_url: bool = False, langid: str = "wordfreq",
                 shards: int = 4):
        super().__init__()
        self.queries, self.rules, self.seed = queries, rules, seed
        self.t, self.target_size, self.languages = t, target_size, languages
        self.lowercase, self.dedupe_url, self.langid, self.shards = lowercase, dedupe_url, langid, shards

    def expand(self, batches):
        cleaned = batches | "CleanAndMatch" >> beam.ParDo(CleanAndMatchFn(
            self.queries, self.lowercase, self.rules, self.shards, self.dedupe_url, Shared())
        ).with_outputs(REJECTS, main="kept")
        deduped = (cleaned.kept
                   | "GroupShards" >> beam.GroupByKey()
                   | "Dedupe" >> beam.ParDo(DedupeShardFn(self.dedupe_url)).with_outputs(REJECTS, main="kept"))
        counts = (deduped.kept
                  | "ShardQueryCounts" >> beam.FlatMap(shard_query_counts)
                  | "CountQueries" >> beam.CombinePerKey(sum))
        fixed_t, target = self.t, self.target_size
        t = (counts
             | "CountValues" >> beam.Values()
             | "AllCounts" >> beam.combiners.ToList()
             | "SolveT" >> beam.Map(lambda cs: balance.solve_t(cs, target) if target else float(fixed_t or balance.DEFAULT_T)))
        final = deduped.kept | "BalanceAndLanguage" >> beam.ParDo(
            BalanceAndLanguageFn(self.seed, self.languages, self.langid),
            counts=beam.pvalue.AsDict(counts), t=beam.pvalue.AsSingleton(t),
        ).with_outputs(REJECTS, KEPT_QUERIES, main="kept")
        kept_per_query = (final[KEPT_QUERIES]
                          | "KeptQueries" >> beam.FlatMap(lambda c: c.items())
                          | "CountKept" >> beam.CombinePerKey(sum))
        query_counts = (
            {"matches": counts, "kept": kept_per_query}
            | "JoinCounts" >> beam.CoGroupByKey()
            | "QueryRow" >> beam.Map(_query_row, t=beam.pvalue.AsSingleton(t))
        )
        rejects = (cleaned[REJECTS], deduped[REJECTS], final[REJECTS]) | "AllRejects" >> beam.Flatten()
        return {"curated": final.kept, "rejects": rejects, "query_counts": query_counts, "t": t}


def _query_row(item: tuple[str, dict], t: float) -> dict:
    query, groups = item
    count = sum(groups["matches"])
    return {C.QUERY: query, C.MATCH_COUNT: count, C.KEEP_PROB: balance.query_probability(count, t),
            C.KEPT_COUNT: sum(groups["kept"])}


# -- the job ---------------------------------------------------------------------------------

def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", default=None,
                        help="CANDIDATE parquet: files, globs, or folders (an extract --output folder works)")
    parser.add_argument("--output", default=None, help="output folder")
    parser.add_argument("--queries", default=None, help="query list: one entry per line, UTF-8, case-sensitive "
                        "(default: the shipped English list, ~320k entries, matched with --lowercase)")
    parser.add_argument("--lowercase", action="store_true", help="match case-insensitively (lowercase text and entries)")
    parser.add_argument("--t", type=float, default=None, help=f"per-query budget t (default: {balance.DEFAULT_T})")
    parser.add_argument("--target-size", type=int, default=None, help="choose t so the expected kept count is this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balancing draws (default: 0)")
    parser.add_argument("--languages", default="en", help="comma-separated languages to keep, or 'all' (default: en)")
    parser.add_argument("--langid", default="wordfreq", choices=BACKENDS,
                        help="language-id backend: wordfreq (default; 99%% accurate on the labelled sample, "
                             "over 200x faster) or langdetect (the reference)")
    parser.add_argument("--min-chars", type=int, default=textclean.TextRules.min_chars)
    parser.add_argument("--min-words", type=int, default=textclean.TextRules.min_words)
    parser.add_argument("--max-chars", type=int, default=textclean.TextRules.max_chars)
    parser.add_argument("--max-url-chars", type=int, default=textclean.TextRules.max_url_chars)
    parser.add_argument("--dedupe-url", action="store_true", help="also keep one row per url")
    parser.add_argument("--rows-per-file", type=int, default=2_000_000,
                        help="at most this many candidates per output shard (default: 2,000,000)")
    parser.add_argument("--shards", type=int, default=0,
                        help=f"output shards (default: the larger of {MIN_SHARDS} and candidates / --rows-per-file; "
                             "never the machine's cpu count, so every machine writes the same files)")



def candidate_files(specs: list[str]) -> tuple[list[tuple[str, str]], int]:
    """(path, name) of the CANDIDATE files named by ``specs``, and their total row count (one
    footer read each). The name is the path relative to the folder the file was given from,
    so outputs named after it are the same wherever the run lies."""
    expanded = []
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            if fileio.isdir(fileio.join(item, "candidates")):
                item = fileio.join(item, "candidates")
            if fileio.isdir(item):
                item = fileio.join(item, "*.parquet")
            expanded.append(item)
    files = fileio.named_inputs(expanded)
    rows = 0
    for f, _ in files:  # refuse unknown schema versions now, in one line, not in a worker
        with fileio.open_read(f) as fh:
            try:
                parquet = pq.ParquetFile(fh)
            except Exception as e:
                raise schemas.SchemaError(f"{f}: not a readable Parquet file ({e})") from None
            schemas.check_metadata(parquet.schema_arrow, schemas.CANDIDATE, f)
            rows += parquet.metadata.num_rows
    return files, rows


def build(p: beam.Pipeline, files: list[tuple[str, str]], output: str, curate: CurateCandidates) -> None:
    n = curate.shards
    out = (p
           | "Files" >> beam.Create(files)
           | "SpreadFiles" >> beam.Reshuffle()
           | "Read" >> beam.MapTuple(lambda f, name: (fileio.stem(name).replace(".parquet-", "-"), read_candidates(f)))
           | "Curate" >> curate)
    (out["curated"]
     | "NameShards" >> beam.MapTuple(lambda shard, rows: (outputs.part_name(shard, n).removesuffix(".parquet"), rows))
     | "WriteCurated" >> outputs.WriteNamedFiles(
         fileio.join(output, "curated"), schemas.CURATED,
         expected=tuple(outputs.part_name(i, n).removesuffix(".parquet") for i in range(n))))
    out["rejects"] | "WriteRejects" >> outputs.WriteNamedFiles(fileio.join(output, "rejects"), schemas.REJECT)
    out["query_counts"] | "WriteQueryCounts" >> outputs.WriteSortedShards(
        fileio.join(output, "query_counts"), schemas.QUERY_COUNTS, key=lambda r: r[C.QUERY],
        sort_key=lambda r: r[C.QUERY], rows_per_file=10_000_000)
    t_path = fileio.join(output, "balance_t.json")
    out["t"] | "WriteT" >> beam.Map(lambda t: fileio.write_json(t_path, {"t": t}))


def run(argv: list[str] | None = None) -> dict:
    args, beam_options = options.parse("openwit curate", __doc__.split("\n\n")[0], add_args, list(argv or []))
    for flag in ("input", "output"):
        if not getattr(args, flag):
            raise schemas.UserError(f"--{flag} is required")
    if not args.queries:  # the shipped default English list (wordfreq's lowercase words + PMI bigrams)
        from pipeline import queries as querybuild

        args.queries, args.lowercase = str(querybuild.default_list()), True
    if not fileio.exists(args.queries):
        raise schemas.UserError(f"--queries {args.queries}: no such file")
    if args.target_size is not None and args.target_size <= 0 or args.rows_per_file <= 0 or args.shards < 0:
        raise schemas.UserError("--target-size, --rows-per-file and --shards must be positive")
    files, candidates = candidate_files(args.input)
    fileio.makedirs(args.output)
    languages = None if args.languages.strip().lower() == "all" else frozenset(
        x.strip() for x in args.languages.split(",") if x.strip())
    rules = textclean.TextRules(args.min_chars, args.min_words, args.max_chars, args.max_url_chars)
    shards = args.shards or max(MIN_SHARDS, math.ceil(candidates / args.rows_per_file))
    curate = CurateCandidates(args.queries, rules, args.seed, args.t, args.target_size, languages,
                              args.lowercase, args.dedupe_url, args.langid, shards)
    start = time.perf_counter()
    p = beam.Pipeline(options=beam_options)
    build(p, files, args.output, curate)
    counters = options.run_counted(p, beam_options, f"openwit.{STAGE}")
    steps = schemas.run.steps_from_counters(counters, STEPS, candidates)
    t = fileio.read_json(fileio.join(args.output, "balance_t.json"))["t"]
    stats = {"job": STAGE, "files": len(files), "candidates": candidates, "curated": steps[-1]["kept"],
             "t": t, "target_size": args.target_size, "seed": args.seed, "queries": args.queries, "lowercase": args.lowercase,
             "languages": sorted(languages) if languages else "all", "langid": args.langid, "shards": shards,
             **schemas.run.ledger(STAGE, steps)}
    fileio.write_json(fileio.join(args.output, STATS_FILE), stats)
    return {**stats, "seconds": round(time.perf_counter() - start, 2), "output": args.output}


def summary(stats: dict) -> str:
    lines = [f"curate: {stats['candidates']:,} candidates -> {stats['curated']:,} curated "
             f"(t = {stats['t']:,.1f}) in {stats['output']}"]
    lines += options.ledger_lines(stats["steps"], 9, 18)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    stats = run(argv)
    print(summary(stats))
    print(f"  {stats['seconds']:.1f}s; ledger in {fileio.join(stats['output'], STATS_FILE)}")
    return 0

