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
field); gzip is read transparently. Each worker pre-aggregates its bundle in a Counter
(flushed every ``FLUSH_KEYS`` keys), so the shuffle carries distinct keys, not tokens.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipeline.matching import PUNCT_TO_WRAP, spaced

NAMESPACE = "openwit.queries"
FLUSH_KEYS = 400_000
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


class ParseDocs(beam.DoFn):
    """Lines -> document texts; a JSONL line that is not an object with the text field is
    counted (bad_json / missing_field) and skipped."""

    def __init__(self, fmt: str, field: str):
        self.fmt, self.field = fmt, field
        self.docs = beam.metrics.Metrics.counter(NAMESPACE, "documents")
        self.bad_json = beam.metrics.Metrics.counter(NAMESPACE, "bad_json")
        self.missing = beam.metrics.Metrics.counter(NAMESPACE, "missing_field")

    def process(self, line: str):
        if self.fmt == "jsonl":
            if not line.strip():
                return
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                self.bad_json.inc()
                return
            text = obj.get(self.field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                self.missing.inc()
                return
            line = text
        self.docs.inc()
        yield line


class CountBundle(beam.DoFn):
    """Documents -> ((kind, key), count) partial counts, one Counter per bundle."""

    def __init__(self, lowercase: bool):
        self.lowercase = lowercase
        self.counts: Counter = Counter()

    def start_bundle(self):
        self.counts = Counter()

    def process(self, text: str):
        counts = self.counts
        for item in ngrams(text.lower() if self.lowercase else text):
            counts[item] += 1
        if len(counts) >= FLUSH_KEYS:
            yield from counts.items()
            self.counts = Counter()

    def finish_bundle(self):
        for item in self.counts.items():
            yield WindowedValue(item, 0, [GlobalWindow()])
        self.counts = Counter()


class CountNgrams(beam.PTransform):
    """Document texts -> (unigram counts, bigram counts) as (key, count) PCollections."""

    def __init__(self, lowercase: bool = False):
        super().__init__()
        self.lowercase = lowercase

    def expand(self, docs):
        counts = (docs
                  | "Count" >> beam.ParDo(CountBundle(self.lowercase))
                  | "Sum" >> beam.CombinePerKey(sum))
        uni = counts | "Uni" >> beam.FlatMap(lambda kv: [(kv[0][1], kv[1])] if kv[0][0] == UNI else [])
        bi = counts | "Bi" >> beam.FlatMap(lambda kv: [(kv[0][1], kv[1])] if kv[0][0] == BI else [])
        return uni, bi


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
    """Bigram counts -> (bigram, c_ab, pmi) for bigrams with c_ab >= min_count and pmi >= min_pmi.

    Joins each bigram with its two words' counts by two CoGroupByKeys (no side input of the
    vocabulary, which is too large to broadcast over a full Wikipedia). Every word of a
    counted bigram is a counted unigram, so each join finds its count."""

    def __init__(self, unigrams, total, min_count: int, min_pmi: float):
        super().__init__()
        self.unigrams, self.total, self.min_count, self.min_pmi = unigrams, total, min_count, min_pmi

    def expand(self, bigrams):
        min_count, min_pmi = self.min_count, self.min_pmi

        def score(row, n):
            bigram, c_ab, c_a, c_b = row
            value = pmi(c_ab, c_a, c_b, n)
            if value >= min_pmi:
                yield bigram, c_ab, value

        kept = bigrams | "MinCount" >> beam.Filter(lambda kv: kv[1] >= min_count)
        by_first = kept | "ByFirst" >> beam.Map(lambda kv: (kv[0].split(" ")[0], kv))
        by_second = ({"bigrams": by_first, "count": self.unigrams}
                     | "JoinFirst" >> beam.CoGroupByKey()
                     | "WithFirst" >> beam.FlatMap(_with_first))
        return ({"bigrams": by_second, "count": self.unigrams}
                | "JoinSecond" >> beam.CoGroupByKey()
                | "WithSecond" >> beam.FlatMap(_with_second)
                | "Score" >> beam.FlatMap(score, n=beam.pvalue.AsSingleton(self.total)))
