"""Unigram and bigram counts over a text corpus, as a Beam job (the counting half of
`openwit queries build`).

Tokenisation is the query matcher's own (pipeline/matching.py): a text is spaced as
`openwit curate` spaces it (punctuation , . ; : ? ! ` wrapped in spaces, tabs and line
breaks made spaces) and split on single spaces. A token is a maximal run of non-space
characters; two tokens form a bigram when exactly one space separates them and neither is
a wrapped punctuation mark. So an entry built from a counted unigram or bigram occurs in a
text exactly when the matcher matches it there: `" a b "` is a substring of the spaced
text if and only if ``a`` and ``b`` are adjacent tokens.

PMI is NLTK's (which MetaCLIP used): ``log2(c(ab) * N / (c(a) * c(b)))`` with N the number
of word tokens (punctuation tokens not counted).

Inputs: plain text (one document a line) or JSONL (one object a line, its text in a named
field); gzip is read transparently. Files are cut into byte ranges (a line belongs to the
range it starts in; a gzip file is one range), and each range is read and counted by one
worker in a plain Python loop, into Counters (flushed every ``FLUSH_KEYS`` bigram keys)
shipped as one dict per count shard: the runner moves a few large pickled dicts, not one
element per line, token or key.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections import Counter
from typing import Iterable, Iterator

import apache_beam as beam

from schemas import fileio
from pipeline import progress
from pipeline.matching import PUNCT_TO_WRAP, spaced

NAMESPACE = "openwit.queries"
FLUSH_KEYS = 2_000_000
SHARDS = 32
PUNCT = frozenset(PUNCT_TO_WRAP)
UNI, BI = "u", "b"


def tokens(text: str) -> list[str]:
    """The text's tokens as the matcher sees them; '' marks a run of extra whitespace."""
    return spaced(text).split(" ")[1:-1]


def ngrams(text: str) -> Iterator[tuple[str, str]]:
    """(kind, key) for every word token (UNI) and every adjacent word pair (BI)."""
    prev = ""
    for tok in tokens(text):
        if not tok or tok in PUNCT:
            prev = ""
            continue
        yield UNI, tok
        if prev:
            yield BI, f"{prev} {tok}"
        prev = tok


def count_plain(texts: Iterable[str], lowercase: bool = False) -> tuple[Counter, Counter]:
    """Reference (and the benchmark's baseline): unigram and bigram Counters in one pass."""
    uni, bi = Counter(), Counter()
    for text in texts:
        for kind, key in ngrams(text.lower() if lowercase else text):
            (uni if kind == UNI else bi)[key] += 1
    return uni, bi


def pmi(c_ab: int, c_a: int, c_b: int, n: int) -> float:
    return math.log2(c_ab * n / (c_a * c_b))


RANGE_BYTES = 64 << 20  # a plain-text file is read in ranges of this size, in parallel


def ranges(files: list[str], fmt_of, range_bytes: int = RANGE_BYTES) -> list[tuple[str, str, int, int]]:
    """(path, format, start, end) byte ranges covering the files; a gzip file is one range."""
    out = []
    for path in files:
        fmt = fmt_of(path)
        with fileio.open_read(path) as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        size = fileio.size(path)
        if gz or size <= range_bytes:
            out.append((path, fmt, 0, -1))
        else:
            out.extend((path, fmt, a, min(a + range_bytes, size)) for a in range(0, size, range_bytes))
    return out


def read_range(path: str, start: int, end: int) -> Iterator[bytes]:
    """The lines that start in [start, end) (end -1: to the end; gzip read whole)."""
    with fileio.open_read(path) as raw:
        if end < 0:
            head = raw.read(2)
            raw.seek(0)
            fh = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
            yield from fh
            return
        pos = start
        if start > 0:
            raw.seek(start - 1)
            pos = start - 1 + len(raw.readline())  # the line in progress belongs to the range before
        while pos < end:
            line = raw.readline()
            if not line:
                return
            pos += len(line)
            yield line


class CountRange(beam.DoFn):
    """(path, format, start, end) -> (shard, (unigram counts, bigram counts)) partial
    counts of the documents in that byte range; a JSONL line that is not an object with a
    string in the text field is counted (bad_json / missing_field) and skipped."""

    def __init__(self, field: str, lowercase: bool, shards: int):
        self.field, self.lowercase, self.shards = field, lowercase, shards
        self.docs = beam.metrics.Metrics.counter(NAMESPACE, "documents")
        self.bad_json = beam.metrics.Metrics.counter(NAMESPACE, "bad_json")
        self.missing = beam.metrics.Metrics.counter(NAMESPACE, "missing_field")

    def process(self, item):
        path, fmt, start, end = item
        uni, bi = Counter(), Counter()
        docs = bad = missing = 0
        lower, field = self.lowercase, self.field
        for raw in read_range(path, start, end):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if fmt == "jsonl":
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                text = obj.get(field) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    missing += 1
                    continue
            docs += 1
            for kind, key in ngrams(text.lower() if lower else text):
                if kind is UNI:
                    uni[key] += 1
                else:
                    bi[key] += 1
            if len(bi) >= FLUSH_KEYS:
                yield from split_parts(uni, bi, self.shards)
                uni, bi = Counter(), Counter()
        yield from split_parts(uni, bi, self.shards)
        self.docs.inc(docs)
        self.bad_json.inc(bad)
        self.missing.inc(missing)
        progress.tick("ranges", docs)


def split_parts(uni: Counter, bi: Counter, shards: int) -> list[tuple[int, tuple[dict, dict]]]:
    """Counts split by shard (crc32 of the key, the same on every worker) into plain dicts."""
    parts: list[tuple[dict, dict]] = [({}, {}) for _ in range(shards)]
    for side, counts in enumerate((uni, bi)):
        for key, n in counts.items():
            parts[zlib.crc32(key.encode("utf-8", "surrogatepass")) % shards][side][key] = n
    return [(i, part) for i, part in enumerate(parts) if part[0] or part[1]]


def merge_parts(item: tuple[int, Iterable[tuple[dict, dict]]]) -> tuple[int, tuple[Counter, Counter]]:
    shard, parts = item
    uni: Counter = Counter()
    bi: Counter = Counter()
    for u, b in parts:
        uni.update(u)
        bi.update(b)
    return shard, (uni, bi)


class CountNgrams(beam.PTransform):
    """Byte ranges (``ranges``) -> (shard, (unigram Counter, bigram Counter)): every key in
    exactly one shard (by crc32), with its corpus-wide count."""

    def __init__(self, field: str = "text", lowercase: bool = False, shards: int = SHARDS):  # not-a-column
        super().__init__()
        self.field, self.lowercase, self.shards = field, lowercase, shards

    def expand(self, byte_ranges):
        return (byte_ranges
                | "Spread" >> beam.Reshuffle()
                | "Count" >> beam.ParDo(CountRange(self.field, self.lowercase, self.shards))
                | "Group" >> beam.GroupByKey()
                | "Merge" >> beam.Map(merge_parts))


class SplitCounts(beam.DoFn):
    """(shard, counts) -> unigram (key, count) [main], bigram (key, count) with count >=
    ``min_bigram_count`` ['bigrams'], and the shard's (tokens, unigrams, bigrams) ['totals']."""

    def __init__(self, min_bigram_count: int):
        self.min_bigram_count = min_bigram_count

    def process(self, item):
        _, (uni, bi) = item
        yield from uni.items()
        least = self.min_bigram_count
        for key, n in bi.items():
            if n >= least:
                yield beam.pvalue.TaggedOutput("bigrams", (key, n))
        yield beam.pvalue.TaggedOutput("totals", (sum(uni.values()), len(uni), len(bi)))


def _with_first(item):
    """(a, {bigrams: [(ab, c_ab)], count: [c_a]}) -> (b, (ab, c_ab, c_a)) per bigram."""
    _, group = item
    counts = list(group["count"])
    for bigram, c_ab in group["bigrams"]:
        yield bigram.split(" ")[1], (bigram, c_ab, counts[0])


def _with_second(item):
    """(b, {bigrams: [(ab, c_ab, c_a)], count: [c_b]}) -> (ab, c_ab, c_a, c_b) per bigram."""
    _, group = item
    counts = list(group["count"])
    for bigram, c_ab, c_a in group["bigrams"]:
        yield bigram, c_ab, c_a, counts[0]


class ScoreBigrams(beam.PTransform):
    """Bigram counts (already cut at the least count by ``SplitCounts``) -> (bigram, c_ab,
    pmi) for bigrams with pmi >= min_pmi; ``totals`` is the singleton (tokens, unigrams, bigrams).

    Joins each bigram with its two words' counts by two CoGroupByKeys (no side input of the
    vocabulary, which is too large to broadcast over a full Wikipedia). Every word of a
    counted bigram is a counted unigram, so each join finds its count."""

    def __init__(self, unigrams, totals, min_pmi: float):
        super().__init__()
        self.unigrams, self.totals, self.min_pmi = unigrams, totals, min_pmi

    def expand(self, bigrams):
        min_pmi = self.min_pmi

        def score(row, totals):
            bigram, c_ab, c_a, c_b = row
            value = pmi(c_ab, c_a, c_b, totals[0])
            if value >= min_pmi:
                yield bigram, c_ab, value

        by_first = bigrams | "ByFirst" >> beam.Map(lambda kv: (kv[0].split(" ")[0], kv))
        by_second = ({"bigrams": by_first, "count": self.unigrams}
                     | "JoinFirst" >> beam.CoGroupByKey()
                     | "WithFirst" >> beam.FlatMap(_with_first))
        return ({"bigrams": by_second, "count": self.unigrams}
                | "JoinSecond" >> beam.CoGroupByKey()
                | "WithSecond" >> beam.FlatMap(_with_second)
                | "Score" >> beam.FlatMap(score, totals=beam.pvalue.AsSingleton(self.totals)))
