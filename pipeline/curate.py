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
4. language language id (cached by text) on every deduplicated text, fused with step 3;
            drop language_filtered unless the language is allowed (--languages, default
            en). Before counting, as MetaCLIP does: a head query's budget goes to texts
            that are kept, not to texts dropped later. Backends: web (default: script
            rules, fastText's lid.176 over 176 languages, re-ranked by word frequencies),
            fasttext, wordfreq or langdetect (seeded); docs/benchmarks.md compares them on
            real labelled text.
5. counts   exact global count, per language, of the texts left that match each query
            (QUERY_COUNTS has a row per language and query). With --languages en this
            is MetaCLIP v1: the English pool, then counts, then balancing.
6. balance  keep with 1 - prod(1 - t / max(count_(lang,q), t)) by a hash of (seed, uid),
            each text against its own language's counts; drop balanced_out.

Worldwide (MetaCLIP 2): --queries names a folder of per-language lists (``en.txt``,
``zh.txt``, ...; the file name is the language code). Step 2 matches every text against
all lists at once, each entry padded by the script-aware rule (pipeline/matching.py); step
4 keeps, of a text's matches, those of its own language's list (no_language_match when
none is left). English is balanced at --t; every other language at the t that leaves it
the share of matches on tail entries that English has (MetaCLIP 2's rule); --target-size
solves English's t for the total. The ledger and the report gain a section per language.

Outputs under --output: curated/part-*.parquet (sorted by uid; img2dataset reads it with
--url_col url --caption_col text), query_counts/, rejects/, curate_stats.json (the ledger:
for every step, in = kept + sum(rejected)).

Memory: the steps hand each other rows through exchange files under --output/_scratch/
(removed at the end), never through the runner, and every unit of work is bounded by
--rows-per-file candidates: one unit of candidate files for steps 1-2, one shard for step
3-4, a stream for step 6. The launcher's and each worker's memory stay flat as the crawl
grows (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

import schemas
from schemas import columns as C
from pipeline import balance, options, outputs, progress, textclean
from schemas import fileio
from pipeline.langid import BACKENDS, DEFAULT_BACKEND, LanguageId, known_languages
from pipeline.matching import QueryMatcher, WorldMatcher, load_entries, own_language

SUMMARY = "match, balance, deduplicate and language-tag candidates into the url list to download (Beam)"
STAGE = schemas.run.CURATE
STEPS = ("clean", "match", "dedupe", "language", "balance")
STATS_FILE = schemas.run.stage(STAGE).ledger
REJECTS, CURATED, QUERY_COUNTS_FOLDER = "rejects", "curated", "query_counts"
SCRATCH = schemas.run.SCRATCH_FOLDER  # the exchange between steps; removed when the job ends
EXCHANGE = schemas.CURATED  # exchanged rows have the CURATED columns (language set by step 4)
BATCH_ROWS = 50_000
MATCH_COUNTS, WRITTEN = "match_counts", "written"  # tagged outputs
# Output shards at the least: enough parallel work for a local run, and fixed, so the
# partitioning (and download's order after it) is the same whichever machine launches.
MIN_SHARDS = 16
# Candidates per shard and per unit of work, by default: about 100 shards, each of 100,000
# to 1,000,000 candidates. A worker holds one unit's or one shard's kept rows (columnar), so
# its memory is bounded by this whatever the crawl's size; the exchange between the steps
# holds (units x shards) references: 10,000 at 10M candidates, 6.3M at 2.5B.
ROWS_PER_FILE = (100_000, 1_000_000)


def rows_per_file(candidates: int) -> int:
    return min(ROWS_PER_FILE[1], max(ROWS_PER_FILE[0], math.ceil(candidates / 100)))


def _counter(step: str, outcome: str) -> Metrics.DelegatingCounter:
    return Metrics.counter(f"openwit.{STAGE}", f"{step}:{outcome}")


LANG_SEP = "@"  # a per-language counter: ``<step>@<language>:<outcome>``
LANG_STEPS = ("language", "balance")


def language_ledgers(counters: dict[str, int]) -> dict[str, dict]:
    """The per-language sections of the ledger, from the per-language counters: the texts
    each language id gave that language, through the language and balance steps."""
    by_lang: dict[str, dict[str, int]] = {}
    for name, n in counters.items():
        step, sep, rest = name.partition(LANG_SEP)
        if sep and step in LANG_STEPS:
            lang, _, outcome = rest.partition(":")
            by_lang.setdefault(lang, {})[f"{step}:{outcome}"] = n
    out = {}
    for lang, named in sorted(by_lang.items()):
        entering = sum(n for k, n in named.items() if k.startswith("language:"))
        out[lang] = schemas.run.ledger(STAGE, schemas.run.steps_from_counters(named, LANG_STEPS, entering))
    return out


def load_lists(folder: str) -> dict[str, list[str]]:
    """A worldwide folder's lists: ``<language>.txt`` -> its entries."""
    lists = {}
    for name in sorted(fileio.listdir(folder)):
        if name.endswith(".txt") and not name.startswith("."):
            lines = fileio.read_bytes(fileio.join(folder, name)).decode("utf-8-sig").splitlines()
            lists[name.removesuffix(".txt")] = load_entries(lines)
    return lists


def reject_row(row: dict, reason: str, detail: str | None = None, duplicate_of: str | None = None) -> dict:
    return {C.STAGE: STAGE, C.REASON: reason, C.DETAIL: detail, C.UID: row[C.UID], C.URL: row[C.URL],
            C.DUPLICATE_OF: duplicate_of, C.SOURCE_FILE: row[C.SOURCE_FILE], C.SOURCE_OFFSET: row[C.SOURCE_OFFSET]}


# -- DoFns -----------------------------------------------------------------------------------
#
# Rows never travel through the runner. Each step writes the rows it passes on to an
# exchange file in the output's scratch folder (Arrow IPC: one record batch per shard and
# flush, read back by batch number, local or on object storage) and hands the runner only
# references: (shard, (file, batch numbers)), per-shard query counts, and names. Neither
# the launcher (the local runner keeps every shuffled element in its own memory) nor a
# worker holds more than one unit of candidates or one shard's rows, however large the
# crawl: both are bounded by --rows-per-file.

def exchange_path(scratch: str, step: str, name: str) -> str:
    return fileio.join(scratch, step, f"{name}.arrow")


class ExchangeWriter:
    """CURATED-shaped rows to one Arrow IPC file, published atomically on close."""

    def __init__(self, dest: str):
        self.dest, self.batches = dest, 0
        self._ctx = fileio.atomic_local(dest)
        self._writer = pa.ipc.new_file(self._ctx.__enter__(), EXCHANGE)

    def write(self, table: pa.Table, batch_rows: int | None = None) -> list[int]:
        """Write rows (as one batch, or batches of ``batch_rows``); return the batches' numbers."""
        numbers = []
        for batch in table.combine_chunks().to_batches(max_chunksize=batch_rows):
            self._writer.write_batch(batch)
            numbers.append(self.batches)
            self.batches += 1
        return numbers

    def close(self) -> None:
        self._writer.close()
        self._ctx.__exit__(None, None, None)


def exchange_batches(path: str, numbers: Iterable[int] | None = None) -> Iterator[pa.RecordBatch]:
    """The given batches of one exchange file (all of them by default), in that order."""
    with fileio.open_ranged(path) as fh:
        reader = pa.ipc.open_file(fh)
        yield from (reader.get_batch(i) for i in (range(reader.num_record_batches) if numbers is None else numbers))


def read_exchange(refs: Iterable[tuple[str, list[int]]]) -> pa.Table:
    """The rows of the given batches, in the order given."""
    return pa.Table.from_batches([b for path, numbers in refs for b in exchange_batches(path, numbers)],
                                 schema=EXCHANGE)


class _MatcherHolder:
    """A weakref-able holder, so Beam's Shared can hand one automaton to every thread."""

    def __init__(self, matcher: QueryMatcher):
        self.matcher = matcher


class CleanAndMatchFn(beam.DoFn):
    """Steps 1 and 2 on one unit (consecutive candidate files): repair, filter, match.

    Writes each file's rejects (rejects/clean-<file>.parquet) and the unit's kept rows to
    one exchange file, bucketed by output shard (a hash of the uid, or of the url with url
    dedupe, so that every copy meets in one shard), flushed every BATCH_ROWS kept rows.
    Emits (shard, (exchange file, batch numbers)) for every shard that got rows.
    """

    def __init__(self, queries: str, lowercase: bool, rules: textclean.TextRules, shards: int, by_url: bool,
                 shared: Shared, output: str):
        self.queries, self.lowercase, self.rules, self.shards, self.shared = queries, lowercase, rules, shards, shared
        self.by_url, self.output = by_url, output

    def setup(self) -> None:
        def build() -> _MatcherHolder:
            if fileio.isdir(self.queries):  # worldwide: every language's list, matches tagged
                return _MatcherHolder(WorldMatcher(load_lists(self.queries), self.lowercase))
            with fileio.open_read(self.queries) as fh:
                entries = load_entries(fh.read().decode("utf-8-sig").splitlines())
            return _MatcherHolder(QueryMatcher(entries, self.lowercase))

        self.matcher = self.shared.acquire(build, tag=f"{self.queries}:{self.lowercase}").matcher

    def process(self, unit: tuple[int, list[tuple[str, str]]]) -> Iterator:
        index, files = unit
        tables: dict[int, list[pa.Table]] = {}  # the unit's kept rows, columnar, per shard
        buckets: dict[int, list[dict]] = {}
        pending = 0

        def flush() -> None:
            for shard, rows in buckets.items():
                tables.setdefault(shard, []).append(pa.Table.from_pylist(rows, schema=EXCHANGE))
            buckets.clear()

        for path, name in files:
            outcomes: Counter = Counter()
            rejects = outputs.TableWriter(fileio.join(self.output, REJECTS, f"clean-{name}.parquet"), schemas.REJECT)
            with fileio.open_read(path) as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=BATCH_ROWS):
                    for row in batch.to_pylist():
                        text = textclean.normalize(row[C.TEXT])
                        reason = textclean.verdict(text, row[C.URL], self.rules)
                        if not reason and not (matched := self.matcher.match_entries(text)):
                            reason = "no_query_match"
                        if reason:
                            outcomes["clean" if reason != "no_query_match" else "match", reason] += 1
                            rejects.add(reject_row(row, reason))
                            continue
                        outcomes["match", "kept"] += 1
                        key = row[C.URL] if self.by_url else row[C.UID]  # the uid extract fixed
                        buckets.setdefault(outputs.shard_of(key, self.shards), []).append(
                            {**row, C.TEXT: text, C.MATCHED_QUERIES: matched})
                        pending += 1
                        if pending >= BATCH_ROWS:
                            flush()
                            pending = 0
            rejects.close()
            outcomes["clean", "kept"] = outcomes["match", "kept"] + outcomes["match", "no_query_match"]
            _count(outcomes)
            progress.tick("files", sum(n for (step, _), n in outcomes.items() if step == "clean"))
            yield beam.pvalue.TaggedOutput(WRITTEN, f"clean-{name}")
        flush()
        writer = ExchangeWriter(exchange_path(fileio.join(self.output, SCRATCH), "matched", f"{index:05d}"))
        refs = {shard: writer.write(pa.concat_tables(tables.pop(shard))) for shard in sorted(tables)}
        writer.close()
        for shard, numbers in refs.items():
            yield shard, (writer.dest, numbers)


def _count(outcomes: Counter) -> None:
    for (step, outcome), n in outcomes.items():
        _counter(step, outcome).inc(n)


def keep_first(table: pa.Table, key: str, *tiebreak: pa.ChunkedArray) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """One row per ``key`` value: the smallest by (key, *tiebreak). Returns the kept rows in
    key order, and the indices of the others with the index of the row kept in their place."""
    if not len(table):
        return table, np.empty(0, np.int64), np.empty(0, np.int64)
    sort = pa.table({f"c{i}": c for i, c in enumerate((table[key], *tiebreak))})
    order = pc.sort_indices(sort, sort_keys=[(name, "ascending") for name in sort.column_names]).to_numpy()
    keys = table[key].take(order)
    first = np.ones(len(order), dtype=bool)
    first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(order) - 1)).to_numpy(zero_copy_only=False)
    run_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    return table.take(order[first]), order[~first], order[run_start[~first]]


def duplicate_rejects(table: pa.Table, dups: np.ndarray, reps: np.ndarray, reason: str) -> list[dict]:
    cols = [C.UID, C.URL, C.SOURCE_FILE, C.SOURCE_OFFSET]
    dup_rows = table.select(cols).take(dups).to_pylist()
    rep_rows = table.select(cols).take(reps).to_pylist()
    return [reject_row(row, reason, f"kept {rep[C.SOURCE_FILE]}@{rep[C.SOURCE_OFFSET]}", rep[C.UID])
            for row, rep in zip(dup_rows, rep_rows)]


def dedupe_table(table: pa.Table, dedupe_url: bool) -> tuple[pa.Table, list[dict]]:
    """Step 3 on one shard: per uid the copy with the smallest (source_file, source_offset,
    page_url, uid) is kept; with url dedupe then per url the smallest uid. Kept rows come
    back sorted by uid."""
    page = pc.fill_null(table[C.PAGE_URL], "")
    kept, dups, reps = keep_first(table, C.UID, table[C.SOURCE_FILE], table[C.SOURCE_OFFSET], page)
    rejects = duplicate_rejects(table, dups, reps, "duplicate_uid")
    if dedupe_url:
        by_url, dups, reps = keep_first(kept, C.URL, kept[C.UID])
        rejects += duplicate_rejects(kept, dups, reps, "duplicate_url")
        kept = by_url.take(pc.sort_indices(by_url[C.UID]))
    return kept, rejects


def language_table(table: pa.Table, langid: LanguageId, allowed: frozenset[str] | None,
                   worldwide: bool = False) -> tuple[pa.Table, list[dict], Counter]:
    """Step 4 on one shard's deduplicated rows: language and its probability set on every
    row; the rows of languages not allowed come back as language_filtered rejects; in
    worldwide mode a row keeps only its own language's matches (no_language_match when
    none is left). Also returns the per-language outcomes."""
    found = [langid.detect(text) for text in table[C.TEXT].to_pylist()]
    langs = [lang for lang, _ in found]
    for name, values in ((C.LANG, langs), (C.LANG_PROB, [prob for _, prob in found])):
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.array(values, field.type))
    reasons: list[str | None] = [None if allowed is None or lang in allowed else "language_filtered" for lang in langs]
    if worldwide:
        own = [own_language(tagged, lang) for tagged, lang in zip(table[C.MATCHED_QUERIES].to_pylist(), langs)]
        reasons = [r or (None if matches else "no_language_match") for r, matches in zip(reasons, own)]
        index = table.schema.get_field_index(C.MATCHED_QUERIES)
        table = table.set_column(index, table.schema.field(index), pa.array(own, table.schema.field(index).type))
    outcomes = Counter((lang or "und", r or "kept") for lang, r in zip(langs, reasons))
    keep = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
    if keep.all():
        return table, [], outcomes
    dropped = table.filter(pa.array(~keep)).select([C.UID, C.URL, C.SOURCE_FILE, C.SOURCE_OFFSET, C.LANG])
    why = [r for r in reasons if r is not None]
    rejects = [reject_row(row, reason, row[C.LANG]) for row, reason in zip(dropped.to_pylist(), why)]
    return table.filter(pa.array(keep)), rejects, outcomes


def language_query_counts(table: pa.Table) -> dict[tuple[str, str], int]:
    """(language, query) -> texts of that language matching the query, in ``table``."""
    lengths = pc.list_value_length(table[C.MATCHED_QUERIES]).to_numpy(zero_copy_only=False)
    pairs = pa.table({C.LANG: pa.array(np.repeat(table[C.LANG].to_numpy(zero_copy_only=False), lengths), pa.string()),
                      C.QUERY: pc.list_flatten(table[C.MATCHED_QUERIES])})
    counts = pairs.group_by([C.LANG, C.QUERY]).aggregate([([], "count_all")])
    return {(lang, query): n for lang, query, n in zip(*(counts[c].to_pylist() for c in (C.LANG, C.QUERY, "count_all")))}


class DedupeShardFn(beam.DoFn):
    """Steps 3 and 4 on one shard, read from the exchange; its kept rows, language set, go
    to the next exchange file. Emits (shard, that file) and, tagged, the shard's
    (language, query) counts and its rejects' names."""

    def __init__(self, dedupe_url: bool, output: str, allowed: frozenset[str] | None, backend: str,
                 worldwide: bool = False):
        self.dedupe_url, self.output, self.allowed, self.backend = dedupe_url, output, allowed, backend
        self.worldwide = worldwide

    def setup(self) -> None:
        self.langid = LanguageId(self.backend)

    def process(self, group: tuple[int, Iterable[tuple[str, list[int]]]]) -> Iterator:
        shard, refs = group
        table = read_exchange(sorted(refs))
        deduped, rejects = dedupe_table(table, self.dedupe_url)
        del table
        kept, filtered, by_lang = language_table(deduped, self.langid, self.allowed, self.worldwide)
        name, lang_name = f"dedupe-{shard:05d}", f"language-{shard:05d}"
        outputs.write_rows(fileio.join(self.output, REJECTS, f"{name}.parquet"), rejects, schemas.REJECT)
        outputs.write_rows(fileio.join(self.output, REJECTS, f"{lang_name}.parquet"), filtered, schemas.REJECT)
        writer = ExchangeWriter(exchange_path(fileio.join(self.output, SCRATCH), "deduped", f"{shard:05d}"))
        writer.write(kept, BATCH_ROWS)  # read back as a stream
        writer.close()
        _count(Counter({("dedupe", "kept"): len(deduped), ("language", "kept"): len(kept)})
               + Counter(("dedupe", r[C.REASON]) for r in rejects)
               + Counter(("language", r[C.REASON]) for r in filtered)
               + Counter({(f"language{LANG_SEP}{lang}", outcome): n for (lang, outcome), n in by_lang.items()}))
        yield beam.pvalue.TaggedOutput(MATCH_COUNTS, language_query_counts(kept))
        yield beam.pvalue.TaggedOutput(WRITTEN, name)
        yield beam.pvalue.TaggedOutput(WRITTEN, lang_name)
        yield shard, writer.dest


class BalanceFn(beam.DoFn):
    """Step 6 on one shard, streamed from the exchange: the deterministic draw against the
    counts of each text's language. Writes curated/part-<shard> (in uid order) and its rejects."""

    def __init__(self, seed: int, output: str, shards: int):
        self.seed, self.output, self.shards = seed, output, shards

    def process(self, item: tuple[int, str], counts: dict[tuple[str, str], int], t: dict[str, float]) -> Iterator:
        shard, path = item
        outcomes: Counter = Counter()
        kept_queries: Counter = Counter()
        name = f"balance-{shard:05d}"
        rejects = outputs.TableWriter(fileio.join(self.output, REJECTS, f"{name}.parquet"), schemas.REJECT)
        kept = outputs.TableWriter(fileio.join(self.output, CURATED, outputs.part_name(shard, self.shards)),
                                   schemas.CURATED)
        for batch in exchange_batches(path):
            for row in batch.to_pylist():
                lang = row[C.LANG]
                p = balance.keep_probability([counts[lang, q] for q in row[C.MATCHED_QUERIES]], t[lang])
                by_lang = f"balance{LANG_SEP}{lang or 'und'}"
                if not balance.keeps(self.seed, row[C.UID], p):
                    outcomes["balance", "balanced_out"] += 1
                    outcomes[by_lang, "balanced_out"] += 1
                    rejects.add(reject_row(row, "balanced_out", f"p={p:.6g}"))
                    continue
                outcomes["balance", "kept"] += 1
                outcomes[by_lang, "kept"] += 1
                kept_queries.update((lang, q) for q in row[C.MATCHED_QUERIES])
                kept.add(row)
        rejects.close()
        kept.close()
        _count(outcomes)
        progress.tick("shards")
        yield beam.pvalue.TaggedOutput(WRITTEN, name)
        yield dict(kept_queries)


def units(files: list[tuple[str, str, int]], rows: int) -> list[tuple[int, list[tuple[str, str]]]]:
    """Consecutive candidate files grouped into units of at most ``rows`` candidates (a
    larger file is a unit of its own): one exchange file each with one batch per shard, so
    the exchange holds (units x shards) references, not (files x shards)."""
    out: list[tuple[int, list[tuple[str, str]]]] = []
    current: list[tuple[str, str]] = []
    count = 0
    for path, name, n in files:
        if current and count + n > rows:
            out.append((len(out), current))
            current, count = [], 0
        current.append((path, name))
        count += n
    if current:
        out.append((len(out), current))
    return out


# -- the composite ---------------------------------------------------------------------------

class CurateCandidates(beam.PTransform):
    """Units ``(index, [(candidate file, name), ...])`` -> writes curated/, rejects/ and the
    scratch exchange under ``output``; returns {'query_counts': {(language, query): (matches, kept)},
    't': {language: t}, 'written': names of the rejects files written}."""

    def __init__(self, queries: str, rules: textclean.TextRules, output: str, shards: int, seed: int = 0,
                 t: float | None = None, target_size: int | None = None,
                 languages: frozenset[str] | None = frozenset({"en"}), lowercase: bool = False,
                 dedupe_url: bool = False, langid: str = DEFAULT_BACKEND, worldwide: bool = False):
        super().__init__()
        self.queries, self.rules, self.output, self.shards, self.seed = queries, rules, output, shards, seed
        self.t, self.target_size, self.languages = t, target_size, languages
        self.lowercase, self.dedupe_url, self.langid, self.worldwide = lowercase, dedupe_url, langid, worldwide

    def expand(self, units):
        cleaned = units | "CleanAndMatch" >> beam.ParDo(CleanAndMatchFn(
            self.queries, self.lowercase, self.rules, self.shards, self.dedupe_url, Shared(), self.output)
        ).with_outputs(WRITTEN, main="refs")
        deduped = (cleaned.refs
                   | "GroupShards" >> beam.GroupByKey()
                   | "DedupeAndLanguage" >> beam.ParDo(DedupeShardFn(self.dedupe_url, self.output, self.languages,
                                                                    self.langid, self.worldwide))
                   .with_outputs(MATCH_COUNTS, WRITTEN, main="files"))
        counts = deduped[MATCH_COUNTS] | "CountQueries" >> beam.CombineGlobally(balance.merge_counts)
        t = counts | "SolveT" >> beam.Map(balance.budgets, self.t, self.target_size, self.worldwide)
        final = deduped.files | "Balance" >> beam.ParDo(
            BalanceFn(self.seed, self.output, self.shards),
            counts=beam.pvalue.AsSingleton(counts), t=beam.pvalue.AsSingleton(t),
        ).with_outputs(WRITTEN, main="kept_queries")
        kept = final.kept_queries | "CountKept" >> beam.CombineGlobally(balance.merge_counts)
        query_counts = counts | "JoinCounts" >> beam.Map(
            lambda matches, kept: {q: (n, kept.get(q, 0)) for q, n in matches.items()}, kept=beam.pvalue.AsSingleton(kept))
        written = (cleaned[WRITTEN], deduped[WRITTEN], final[WRITTEN]) | "AllWritten" >> beam.Flatten()
        return {"query_counts": query_counts, "t": t, "written": written}


# -- the job ---------------------------------------------------------------------------------

def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", default=None,
                        help="CANDIDATE parquet: files, globs, or folders (an extract --output folder works)")
    parser.add_argument("--output", default=None, help="output folder")
    parser.add_argument("--queries", default=None, help="query list: one entry per line, UTF-8, case-sensitive "
                        "(default: the shipped English list, 367,830 entries, matched with --lowercase); or a folder "
                        "of per-language lists named <language>.txt, en.txt among them (worldwide mode)")
    parser.add_argument("--lowercase", action="store_true", help="match case-insensitively (lowercase text and entries)")
    parser.add_argument("--t", type=float, default=None, help=f"per-query budget t (default: {balance.DEFAULT_T}); "
                        "worldwide: English's, the other languages' follow from it")
    parser.add_argument("--target-size", type=int, default=None,
                        help="choose t so that MetaCLIP's size estimate, the sum over queries of min(count, t), is "
                        "this (a text matching several queries counts once per query); worldwide: English's t, "
                        "summed over every language at its own t")
    parser.add_argument("--no-balance", action="store_true",
                        help="keep every matched text (balance last instead: openwit shard --balance)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balancing draws (default: 0)")
    parser.add_argument("--languages", default=None, help="comma-separated languages to keep, or 'all' (default: en; "
                        "worldwide: the languages of the lists)")
    parser.add_argument("--langid", default=DEFAULT_BACKEND, choices=BACKENDS,
                        help="language-id backend: web (script rules, fastText's lid.176, word frequencies; "
                             "the most accurate on real labelled text in 16 languages), fasttext (lid.176 "
                             "alone), wordfreq (a word model over 42 languages) or langdetect (the reference)")
    parser.add_argument("--min-chars", type=int, default=textclean.TextRules.min_chars,
                        help="shorter repaired texts are rejected as text_too_short")
    parser.add_argument("--min-words", type=int, default=textclean.TextRules.min_words,
                        help="texts of fewer words are rejected as text_too_short")
    parser.add_argument("--max-chars", type=int, default=textclean.TextRules.max_chars,
                        help="longer texts are rejected as text_too_long")
    parser.add_argument("--max-url-chars", type=int, default=textclean.TextRules.max_url_chars,
                        help="longer urls are rejected as invalid_url")
    parser.add_argument("--dedupe-url", action="store_true", help="also keep one row per url")
    parser.add_argument("--rows-per-file", type=int, default=None,
                        help="candidates per output shard and per unit of work, at most; a worker's memory is "
                             f"bounded by it (default: the candidates / 100, within {ROWS_PER_FILE[0]:,} "
                             f"and {ROWS_PER_FILE[1]:,})")
    parser.add_argument("--shards", type=int, default=0,
                        help=f"output shards (default: the larger of {MIN_SHARDS} and candidates / --rows-per-file; "
                             "never the machine's cpu count, so every machine writes the same files)")



def candidate_files(specs: list[str]) -> list[tuple[str, str, int]]:
    """(path, name, rows) of the CANDIDATE files named by ``specs`` (one footer read each).
    The name is the path relative to the folder the file was given from, so outputs named
    after it are the same wherever the run lies."""
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
    files = []
    for f, name in fileio.named_inputs(expanded):  # refuse unknown schema versions now, in one line
        with fileio.open_read(f) as fh:
            try:
                parquet = pq.ParquetFile(fh)
            except Exception as e:
                raise schemas.SchemaError(f"{f}: not a readable Parquet file ({e})") from None
            schemas.check_metadata(parquet.schema_arrow, schemas.CANDIDATE, f)
            files.append((f, fileio.stem(name).replace(".parquet-", "-"), parquet.metadata.num_rows))
    return files


def write_query_counts(counts: dict[tuple[str, str], tuple[int, int]], output: str, t: balance.Budgets) -> int:
    rows = [{C.LANG: lang, C.QUERY: q, C.MATCH_COUNT: n, C.KEEP_PROB: balance.query_probability(n, t[lang]),
             C.KEPT_COUNT: kept} for (lang, q), (n, kept) in sorted(counts.items())]
    folder = fileio.join(output, QUERY_COUNTS_FOLDER)
    name = outputs.part_name(0, 1)
    outputs.write_rows(fileio.join(folder, name), rows, schemas.QUERY_COUNTS)
    for other in fileio.listdir(folder):
        if other.endswith(".parquet") and other != name:
            fileio.remove(fileio.join(folder, other))
    return len(rows)


def check_lists(folder: str, backend: str) -> frozenset[str]:
    """A worldwide --queries folder, checked in one line each: <language>.txt files, UTF-8,
    en.txt among them, each language one the language id gives. Returns the languages."""
    names = [n for n in fileio.listdir(folder) if n.endswith(".txt") and not n.startswith(".")]
    if not names:
        raise schemas.UserError(f"--queries {folder}: a folder, but with no <language>.txt lists (worldwide mode)")
    known = known_languages(backend)
    for name in sorted(names):
        lang = name.removesuffix(".txt")
        if lang not in known or lang == "und":
            raise schemas.UserError(f"--queries {folder}: {name} names no language the {backend} language id gives "
                                    f"(name each list <code>.txt with one of: {', '.join(sorted(known - {'und'}))})")
        try:
            text = fileio.read_bytes(fileio.join(folder, name)).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise schemas.UserError(f"--queries {fileio.join(folder, name)}: not UTF-8 (byte {e.start}: {e.reason})") from None
        if not load_entries(text.splitlines()):
            raise schemas.UserError(f"--queries {fileio.join(folder, name)}: no entry (a list of one entry a line)")
    langs = frozenset(n.removesuffix(".txt") for n in names)
    if "en" not in langs:
        raise schemas.UserError(f"--queries {folder}: no en.txt; worldwide mode sets every language's t from "
                                "English's tail share at --t")
    return langs


def finish(_: None, output: str, shards: int, written: list[str], after: list) -> int:
    """After every step: an empty part for each shard that got no rows; files of an earlier
    run that this one did not write removed; the scratch exchange removed."""
    curated = fileio.join(output, CURATED)
    parts = {outputs.part_name(i, shards) for i in range(shards)}
    have = set(fileio.listdir(curated)) if fileio.isdir(curated) else set()
    for name in sorted(parts - have):
        outputs.write_rows(fileio.join(curated, name), [], schemas.CURATED)
    for name in sorted(have - parts):
        if name.endswith(".parquet"):
            fileio.remove(fileio.join(curated, name))
    rejects = fileio.join(output, REJECTS)
    keep = {f"{n}.parquet" for n in written}
    for name in fileio.listdir(rejects) if fileio.isdir(rejects) else []:
        if name.endswith(".parquet") and name not in keep:
            fileio.remove(fileio.join(rejects, name))
    fileio.remove_tree(fileio.join(output, SCRATCH))
    return len(written)


def build(p: beam.Pipeline, files: list[tuple[str, str, int]], curate: CurateCandidates, unit_rows: int) -> None:
    output = curate.output
    out = (p
           | "Units" >> beam.Create(units(files, unit_rows))
           | "SpreadUnits" >> beam.Reshuffle()
           | "Curate" >> curate)
    t = beam.pvalue.AsSingleton(out["t"])
    counted = out["query_counts"] | "WriteQueryCounts" >> beam.Map(write_query_counts, output=output, t=t)
    t_path = fileio.join(output, "balance_t.json")
    t_written = out["t"] | "WriteT" >> beam.Map(lambda value: fileio.write_json(t_path, value.record()))
    (p
     | "Once" >> beam.Create([None])
     | "Finish" >> beam.Map(finish, output=output, shards=curate.shards, written=beam.pvalue.AsList(out["written"]),
                            after=beam.pvalue.AsList((counted, t_written) | "Done" >> beam.Flatten())))


def run(argv: list[str] | None = None) -> dict:
    args, beam_options = options.parse("openwit curate", __doc__.split("\n\n")[0], add_args, list(argv or []))
    for flag in ("input", "output"):
        if not getattr(args, flag):
            raise schemas.UserError(f"--{flag} is required")
    if not args.queries:  # the shipped default English list (WordNet synsets, wordfreq's words, PMI bigrams)
        from pipeline import queries as querybuild

        args.queries, args.lowercase = str(querybuild.default_list()), True
    if not fileio.exists(args.queries):
        raise schemas.UserError(f"--queries {args.queries}: no such file")
    worldwide = fileio.isdir(args.queries)
    list_langs = check_lists(args.queries, args.langid) if worldwide else None
    if not worldwide:
        try:  # now, in one line, not in every worker's setup
            text = fileio.read_bytes(args.queries).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise schemas.UserError(f"--queries {args.queries}: not UTF-8 (byte {e.start}: {e.reason})") from None
        if not load_entries(text.splitlines()):
            raise schemas.UserError(f"--queries {args.queries}: no entry (a list of one entry a line)")
    if any(v is not None and v <= 0 for v in (args.target_size, args.rows_per_file)) or args.shards < 0:
        raise schemas.UserError("--target-size, --rows-per-file and --shards must be positive")
    if args.t is not None and not (args.t > 0 and math.isfinite(args.t)):
        raise schemas.UserError(f"--t {args.t:g}: the per-query budget must be a positive number")
    if args.no_balance and (args.t is not None or args.target_size is not None):
        raise schemas.UserError(f"--no-balance keeps every matched text: drop {'--t' if args.t is not None else '--target-size'}")
    if args.t is not None and args.target_size is not None:
        raise schemas.UserError("--t and --target-size both choose the budget: give one")
    for flag in ("min_chars", "min_words", "max_chars", "max_url_chars"):
        if getattr(args, flag) < 0:
            raise schemas.UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be 0 or more")
    if args.min_chars > args.max_chars:
        raise schemas.UserError(f"--min-chars {args.min_chars} is above --max-chars {args.max_chars}: every text "
                                "would be rejected")
    spec = args.languages or ("all" if worldwide else "en")
    languages = None if spec.strip().lower() == "all" else frozenset(x.strip() for x in spec.split(",") if x.strip())
    if worldwide:
        languages = list_langs if languages is None else languages
        missing = sorted(languages - list_langs)
        if missing:
            raise schemas.UserError(f"--languages {spec}: no list for {', '.join(missing)} in --queries {args.queries} "
                                    f"(it has {', '.join(sorted(list_langs))})")
    elif languages is not None:
        known = known_languages(args.langid)
        unknown = sorted(languages - known)
        if unknown or not languages:
            raise schemas.UserError(f"--languages {args.languages}: {', '.join(unknown) or 'no language'} is not a code "
                                    f"the {args.langid} language id gives (it gives: {', '.join(sorted(known))}; or 'all')")
    files = candidate_files(args.input)
    candidates = sum(n for _, _, n in files)
    unit_rows = args.rows_per_file or rows_per_file(candidates)
    fileio.makedirs(args.output)
    rules = textclean.TextRules(args.min_chars, args.min_words, args.max_chars, args.max_url_chars)
    shards = args.shards or max(MIN_SHARDS, math.ceil(candidates / unit_rows))
    curate = CurateCandidates(args.queries, rules, args.output, shards, args.seed,
                              math.inf if args.no_balance else args.t, args.target_size, languages,
                              args.lowercase, args.dedupe_url, args.langid, worldwide)
    start = time.perf_counter()
    p = beam.Pipeline(options=beam_options)
    build(p, files, curate, unit_rows)
    counters = options.run_counted(p, beam_options, f"openwit.{STAGE}", {"files": len(files), "shards": shards},
                                   "candidates")
    steps = schemas.run.steps_from_counters(counters, STEPS, candidates)
    budget = fileio.read_json(fileio.join(args.output, "balance_t.json"))
    stats = {"job": STAGE, "files": len(files), "candidates": candidates, "curated": steps[-1]["kept"],
             "t": budget["t"], "english_tail_share": budget.get("english_tail_share"),
             "target_size": args.target_size, "seed": args.seed, "queries": args.queries,
             "lowercase": args.lowercase, "worldwide": worldwide,
             "languages": sorted(languages) if languages else "all", "langid": args.langid, "shards": shards,
             "rows_per_file": unit_rows,
             **schemas.run.ledger(STAGE, steps),
             "by_language": {lang: {"t": language_t(budget, lang, worldwide), **ledger}
                             for lang, ledger in language_ledgers(counters).items()}}
    fileio.write_json(fileio.join(args.output, STATS_FILE), stats)
    return {**stats, "seconds": round(time.perf_counter() - start, 2), "output": args.output}


def language_t(budget: dict, lang: str, worldwide: bool) -> float | None:
    """The t a language was balanced at (None: not balanced, or no text of it was counted)."""
    if not worldwide:
        return budget["t"]
    return (budget["by_language"] or {}).get(lang)


def summary(stats: dict) -> str:
    budget = "not balanced" if stats["t"] is None else f"t = {stats['t']:,.1f}"
    if stats.get("worldwide") and stats["t"] is not None:
        budget = (f"English's t = {stats['t']:,.1f}, the others' by English's tail share "
                  f"({stats['english_tail_share']:.1%})" if stats.get("english_tail_share") is not None
                  else f"t = {stats['t']:,.1f} for every language: no English text was counted")
    lines = [f"curate: {stats['candidates']:,} candidates -> {stats['curated']:,} curated ({budget}) in {stats['output']}"]
    lines += options.ledger_lines(stats["steps"], 9, 18)
    if stats.get("worldwide"):
        lines.append(f"  {'language':<9} {'t':>12} {'identified':>11} {'matched':>10} {'curated':>10}")
        for lang, s in sorted(stats["by_language"].items(), key=lambda kv: -kv[1]["in"]):
            steps = {x["step"]: x for x in s["steps"]}
            t = "-" if s["t"] is None else f"{s['t']:,.1f}"
            lines.append(f"  {lang:<9} {t:>12} {s['in']:>11,} {steps['balance']['in']:>10,} {s['kept']:>10,}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    stats = run(argv)
    print(summary(stats))
    print(f"  {stats['seconds']:.1f}s; ledger in {fileio.join(stats['output'], STATS_FILE)}")
    return 0

