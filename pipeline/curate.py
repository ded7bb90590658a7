"""`openwit curate` (Beam): CANDIDATE rows -> a query-matched, balanced, deduplicated,
language-tagged CURATED url list, the QUERY_COUNTS behind it, and the REJECT rows.

Steps, cheapest and most selective first, and what their order means for the counts:

1. clean    ftfy repair, whitespace collapse; drop url_too_long, text_too_long,
            filename_text, boilerplate_text, text_too_short. Per row, no shuffle.
2. match    one Aho-Corasick pass per text over the query list (MetaCLIP's spacing rule);
            drop no_query_match. Fused with step 1, before any shuffle, so the shuffle
            of step 3 carries only texts that can be kept. Its count includes duplicates.
3. dedupe   exact, on uid = hash(url, repaired text): the copy with the smallest
            (source_file, source_offset) is kept, the others are duplicate_uid; with
            --dedupe-url also one row per url (smallest uid kept), duplicate_url.
4. counts   exact global count of deduplicated texts per matched query (QUERY_COUNTS).
5. balance  keep with 1 - prod(1 - t / max(count_q, t)) by a hash of (seed, uid);
            drop balanced_out. Counts include texts that step 6 later drops as
            non-English: their share of a head query's budget is lost, not reassigned.
6. language langdetect (seeded, cached by text; or --langid wordfreq, much faster) on the
            survivors only, the fewest rows it can run on; drop language_filtered unless
            the language is allowed.

Outputs under --output: curated/part-*.parquet (sorted by uid; img2dataset reads it with
--url_col url --caption_col text), query_counts/, rejects/, curate_stats.json (the ledger:
for every step, in = kept + sum(rejected)).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.utils.shared import Shared

import schemas
from schemas import columns as C
from pipeline import balance, fileio, options, outputs, textclean
from pipeline.langid import BACKENDS, LanguageId
from pipeline.matching import QueryMatcher, load_entries

SUMMARY = "match, balance, deduplicate and language-tag candidates into the url list to download (Beam)"
STAGE = "curate"
STEPS = ("clean", "match", "dedupe", "balance", "language")
STATS_FILE = "curate_stats.json"
REJECTS = "rejects"


def _counter(step: str, outcome: str) -> Metrics.DelegatingCounter:
    return Metrics.counter(f"openwit.{STAGE}", f"{step}:{outcome}")


def reject_row(row: dict, reason: str, detail: str | None = None, duplicate_of: str | None = None) -> dict:
    return {C.STAGE: STAGE, C.REASON: reason, C.DETAIL: detail, C.UID: row[C.UID], C.URL: row[C.URL],
            C.DUPLICATE_OF: duplicate_of, C.SOURCE_FILE: row[C.SOURCE_FILE], C.SOURCE_OFFSET: row[C.SOURCE_OFFSET]}


# -- DoFns -----------------------------------------------------------------------------------

class ReadCandidatesFn(beam.DoFn):
    def process(self, path: str) -> Iterator[dict]:
        with fileio.open_read(path) as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=20_000):
                yield from batch.to_pylist()


class _MatcherHolder:
    """A weakref-able holder, so Beam's Shared can hand one automaton to every thread."""

    def __init__(self, matcher: QueryMatcher):
        self.matcher = matcher


class CleanAndMatchFn(beam.DoFn):
    """Steps 1 and 2: repair and filter the text, then match it against the queries."""

    def __init__(self, queries: str, lowercase: bool, rules: textclean.TextRules, shared: Shared):
        self.queries, self.lowercase, self.rules, self.shared = queries, lowercase, rules, shared

    def setup(self) -> None:
        def build() -> _MatcherHolder:
            with fileio.open_read(self.queries) as fh:
                entries = load_entries(fh.read().decode("utf-8").splitlines())
            return _MatcherHolder(QueryMatcher(entries, self.lowercase))

        self.matcher = self.shared.acquire(build, tag=f"{self.queries}:{self.lowercase}").matcher
        self.counters = {}

    def _count(self, step: str, outcome: str) -> None:
        key = (step, outcome)
        if key not in self.counters:
            self.counters[key] = _counter(step, outcome)
        self.counters[key].inc()

    def process(self, row: dict) -> Iterator:
        text = textclean.normalize(row[C.TEXT])
        reason = textclean.verdict(text, row[C.URL], self.rules)
        if reason:
            self._count("clean", reason)
            yield beam.pvalue.TaggedOutput(REJECTS, reject_row(row, reason))
            return
        self._count("clean", "kept")
        matched = self.matcher.match_entries(text)
        if not matched:
            self._count("match", "no_query_match")
            yield beam.pvalue.TaggedOutput(REJECTS, reject_row(row, "no_query_match"))
            return
        self._count("match", "kept")
        yield {**row, C.UID: schemas.uid(row[C.URL], text), C.TEXT: text, C.MATCHED_QUERIES: matched}


def _provenance(row: dict) -> tuple:
    return (row[C.SOURCE_FILE], row[C.SOURCE_OFFSET], row[C.PAGE_URL] or "", row[C.UID])


class KeepOneFn(beam.DoFn):
    """Step 3: one representative per key (the smallest by ``order``), the rest rejected."""

    def __init__(self, reason: str, by_uid: bool, count_kept: bool):
        self.reason, self.by_uid, self.count_kept = reason, by_uid, count_kept

    def process(self, item: tuple[str, list[dict]]) -> Iterator:
        _, rows = item
        rows = sorted(rows, key=(lambda r: r[C.UID]) if self.by_uid else _provenance)
        keep = rows[0]
        if self.count_kept:  # the last dedupe pass counts what the step keeps
            _counter("dedupe", "kept").inc()
        yield keep
        for dup in rows[1:]:
            _counter("dedupe", self.reason).inc()
            yield beam.pvalue.TaggedOutput(REJECTS, reject_row(
                dup, self.reason, f"kept {keep[C.SOURCE_FILE]}@{keep[C.SOURCE_OFFSET]}", keep[C.UID]))


class BalanceFn(beam.DoFn):
    """Step 5: keep with probability 1 - prod(1 - p_q), drawn from hash(seed, uid)."""

    def __init__(self, seed: int):
        self.seed = seed

    def process(self, row: dict, counts: dict[str, int], t: float) -> Iterator:
        p = balance.keep_probability([counts[q] for q in row[C.MATCHED_QUERIES]], t)
        if balance.draw(self.seed, row[C.UID]) < p:
            _counter("balance", "kept").inc()
            yield row
        else:
            _counter("balance", "balanced_out").inc()
            yield beam.pvalue.TaggedOutput(REJECTS, reject_row(row, "balanced_out", f"p={p:.6g}"))


class LanguageFn(beam.DoFn):
    """Step 6: language id on the survivors; keep the allowed languages."""

    def __init__(self, allowed: frozenset[str] | None, backend: str):
        self.allowed, self.backend = allowed, backend

    def setup(self) -> None:
        self.langid = LanguageId(self.backend)

    def process(self, row: dict) -> Iterator:
        lang, prob = self.langid.detect(row[C.TEXT])
        if self.allowed is not None and lang not in self.allowed:
            _counter("language", "language_filtered").inc()
            yield beam.pvalue.TaggedOutput(REJECTS, reject_row(row, "language_filtered", lang))
            return
        _counter("language", "kept").inc()
        yield {**row, C.LANG: lang, C.LANG_PROB: prob}


# -- the composite ---------------------------------------------------------------------------

class CurateCandidates(beam.PTransform):
    """CANDIDATE rows -> {'curated', 'rejects', 'query_counts', 't'} PCollections."""

    def __init__(self, queries: str, rules: textclean.TextRules, seed: int = 0, t: float | None = None,
                 target_size: int | None = None, languages: frozenset[str] | None = frozenset({"en"}),
                 lowercase: bool = False, dedupe_url: bool = False, langid: str = "langdetect"):
        super().__init__()
        self.langid = langid
        self.queries, self.rules, self.seed = queries, rules, seed
        self.t, self.target_size, self.languages = t, target_size, languages
        self.lowercase, self.dedupe_url = lowercase, dedupe_url

    def expand(self, candidates):
        cleaned = candidates | "CleanAndMatch" >> beam.ParDo(
            CleanAndMatchFn(self.queries, self.lowercase, self.rules, Shared())).with_outputs(REJECTS, main="kept")
        deduped = (cleaned.kept
                   | "ByUid" >> beam.Map(lambda r: (r[C.UID], r))
                   | "GroupUid" >> beam.GroupByKey()
                   | "KeepOneUid" >> beam.ParDo(KeepOneFn("duplicate_uid", False, not self.dedupe_url)).with_outputs(REJECTS, main="kept"))
        rejects = [cleaned[REJECTS], deduped[REJECTS]]
        unique = deduped.kept
        if self.dedupe_url:
            by_url = (unique
                      | "ByUrl" >> beam.Map(lambda r: (r[C.URL], r))
                      | "GroupUrl" >> beam.GroupByKey()
                      | "KeepOneUrl" >> beam.ParDo(KeepOneFn("duplicate_url", True, True)).with_outputs(REJECTS, main="kept"))
            rejects.append(by_url[REJECTS])
            unique = by_url.kept

        counts = (unique
                  | "Queries" >> beam.FlatMap(lambda r: [(q, 1) for q in r[C.MATCHED_QUERIES]])
                  | "CountQueries" >> beam.CombinePerKey(sum))
        fixed_t, target = self.t, self.target_size
        t = (counts
             | "CountValues" >> beam.Values()
             | "AllCounts" >> beam.combiners.ToList()
             | "SolveT" >> beam.Map(lambda cs: balance.solve_t(cs, target) if target else float(fixed_t or balance.DEFAULT_T)))
        balanced = unique | "Balance" >> beam.ParDo(
            BalanceFn(self.seed), counts=beam.pvalue.AsDict(counts), t=beam.pvalue.AsSingleton(t)
        ).with_outputs(REJECTS, main="kept")
        rejects.append(balanced[REJECTS])
        languages = balanced.kept | "Language" >> beam.ParDo(LanguageFn(self.languages, self.langid)).with_outputs(REJECTS, main="kept")
        rejects.append(languages[REJECTS])

        kept_per_query = (balanced.kept
                          | "KeptQueries" >> beam.FlatMap(lambda r: [(q, 1) for q in r[C.MATCHED_QUERIES]])
                          | "CountKept" >> beam.CombinePerKey(sum))
        query_counts = (
            {"matches": counts, "kept": kept_per_query}
            | "JoinCounts" >> beam.CoGroupByKey()
            | "QueryRow" >> beam.Map(_query_row, t=beam.pvalue.AsSingleton(t))
        )
        return {"curated": languages.kept,
                "rejects": rejects | "AllRejects" >> beam.Flatten(),
                "query_counts": query_counts, "t": t}


def _query_row(item: tuple[str, dict], t: float) -> dict:
    query, groups = item
    count = sum(groups["matches"])
    return {C.QUERY: query, C.MATCH_COUNT: count, C.KEEP_PROB: balance.query_probability(count, t),
            C.KEPT_COUNT: sum(groups["kept"])}


def _reject_key(r: dict) -> str:
    return f"{r[C.REASON]}\x1f{r[C.UID]}\x1f{r[C.SOURCE_FILE]}\x1f{r[C.SOURCE_OFFSET]}"


def _reject_order(r: dict) -> tuple:
    return (r[C.REASON], r[C.UID] or "", r[C.SOURCE_FILE] or "", r[C.SOURCE_OFFSET] or 0)


# -- the job ---------------------------------------------------------------------------------

def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", default=None,
                        help="CANDIDATE parquet: files, globs, or folders (an extract --output folder works)")
    parser.add_argument("--output", default=None, help="output folder")
    parser.add_argument("--queries", default=None, help="query list: one entry per line, UTF-8, case-sensitive")
    parser.add_argument("--lowercase", action="store_true", help="match case-insensitively (lowercase text and entries)")
    parser.add_argument("--t", type=float, default=None, help=f"per-query budget t (default: {balance.DEFAULT_T})")
    parser.add_argument("--target-size", type=int, default=None, help="choose t so the expected kept count is this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balancing draws (default: 0)")
    parser.add_argument("--languages", default="en", help="comma-separated languages to keep, or 'all' (default: en)")
    parser.add_argument("--langid", default="langdetect", choices=BACKENDS,
                        help="language-id backend: langdetect (reference) or wordfreq (fast; default: langdetect)")
    parser.add_argument("--min-chars", type=int, default=textclean.TextRules.min_chars)
    parser.add_argument("--min-words", type=int, default=textclean.TextRules.min_words)
    parser.add_argument("--max-chars", type=int, default=textclean.TextRules.max_chars)
    parser.add_argument("--max-url-chars", type=int, default=textclean.TextRules.max_url_chars)
    parser.add_argument("--dedupe-url", action="store_true", help="also keep one row per url")
    parser.add_argument("--rows-per-file", type=int, default=2_000_000, help="rows per output file (default: 2,000,000)")



def candidate_files(specs: list[str]) -> list[str]:
    expanded = []
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            if fileio.is_local(item) and fileio.exists(fileio.join(item, "candidates")):
                item = fileio.join(item, "candidates")
            if fileio.is_local(item) and os.path.isdir(item):
                item = fileio.join(item, "*.parquet")
            expanded.append(item)
    files = fileio.expand_inputs(expanded)
    for f in files:  # refuse unknown schema versions now, in one line, not in a worker
        with fileio.open_read(f) as fh:
            try:
                file_schema = pq.ParquetFile(fh).schema_arrow
            except Exception as e:
                raise schemas.SchemaError(f"{f}: not a readable Parquet file ({e})") from None
        schemas.check_metadata(file_schema, schemas.CANDIDATE, f)
    return files


def build(p: beam.Pipeline, files: list[str], output: str, curate: CurateCandidates, rows_per_file: int):
    out = (p
           | "Files" >> beam.Create(files)
           | "SpreadFiles" >> beam.Reshuffle()
           | "Read" >> beam.ParDo(ReadCandidatesFn())
           | "Curate" >> curate)
    out["curated"] | "WriteCurated" >> outputs.WriteSortedShards(
        fileio.join(output, "curated"), schemas.CURATED, key=lambda r: r[C.UID], sort_key=lambda r: r[C.UID],
        rows_per_file=rows_per_file)
    out["rejects"] | "WriteRejects" >> outputs.WriteSortedShards(
        fileio.join(output, "rejects"), schemas.REJECT, key=_reject_key, sort_key=_reject_order,
        rows_per_file=rows_per_file)
    out["query_counts"] | "WriteQueryCounts" >> outputs.WriteSortedShards(
        fileio.join(output, "query_counts"), schemas.QUERY_COUNTS, key=lambda r: r[C.QUERY],
        sort_key=lambda r: r[C.QUERY], rows_per_file=max(rows_per_file, 10_000_000))
    t_path = fileio.join(output, "balance_t.json")
    out["t"] | "WriteT" >> beam.Map(lambda t: fileio.write_json(t_path, {"t": t}))


def ledger(counters: dict[str, int], candidates: int) -> list[dict]:
    """Per step: in, kept, rejected by reason, from the job's counters."""
    steps = []
    entering = candidates
    for step in STEPS:
        rejected = {k.split(":", 1)[1]: v for k, v in sorted(counters.items())
                    if k.startswith(f"{step}:") and not k.endswith(":kept") and v}
        kept = counters.get(f"{step}:kept", 0)
        steps.append({"step": step, "in": entering, "kept": kept, "rejected": rejected})
        entering = kept
    return steps


def run(argv: list[str] | None = None) -> dict:
    args, beam_options = options.parse("openwit curate", __doc__.split("\n\n")[0], add_args, list(argv or []))
    for flag in ("input", "output", "queries"):
        if not getattr(args, flag):
            raise schemas.UserError(f"--{flag} is required")
    if not fileio.exists(args.queries):
        raise schemas.UserError(f"--queries {args.queries}: no such file")
    if args.target_size is not None and args.target_size <= 0 or args.rows_per_file <= 0:
        raise schemas.UserError("--target-size and --rows-per-file must be positive")
    files = candidate_files(args.input)
    fileio.makedirs(args.output)
    languages = None if args.languages.strip().lower() == "all" else frozenset(
        x.strip() for x in args.languages.split(",") if x.strip())
    rules = textclean.TextRules(args.min_chars, args.min_words, args.max_chars, args.max_url_chars)
    curate = CurateCandidates(args.queries, rules, args.seed, args.t, args.target_size, languages,
                              args.lowercase, args.dedupe_url, args.langid)
    start = time.perf_counter()
    p = beam.Pipeline(options=beam_options)
    build(p, files, args.output, curate, args.rows_per_file)
    with options.quiet_local_workers(beam_options):
        result = p.run()
        result.wait_until_finish()
    counters = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(f"openwit.{STAGE}"))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(value or 0)
    candidates = sum(pq.ParquetFile(fileio.open_read(f)).metadata.num_rows for f in files)
    steps = ledger(counters, candidates)
    t = fileio.read_json(fileio.join(args.output, "balance_t.json"))["t"]
    stats = {"job": STAGE, "files": len(files), "candidates": candidates, "curated": steps[-1]["kept"],
             "t": t, "target_size": args.target_size, "seed": args.seed, "queries": args.queries,
             "languages": sorted(languages) if languages else "all", "langid": args.langid, "steps": steps}
    fileio.write_json(fileio.join(args.output, STATS_FILE), stats)
    return {**stats, "seconds": round(time.perf_counter() - start, 2), "output": args.output}


def summary(stats: dict) -> str:
    lines = [f"curate: {stats['candidates']:,} candidates -> {stats['curated']:,} curated "
             f"(t = {stats['t']:,.1f}) in {stats['output']}"]
    for s in stats["steps"]:
        lines.append(f"  {s['step']:<9} in {s['in']:>10,}  kept {s['kept']:>10,}")
        for reason, n in s["rejected"].items():
            lines.append(f"  {'':<9} {'':>13}  {reason:<18} {n:>10,}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    stats = run(argv)
    print(summary(stats))
    print(f"  {stats['seconds']:.1f}s; ledger in {fileio.join(stats['output'], STATS_FILE)}")
    return 0

