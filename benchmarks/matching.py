"""Query matching: openwit's Aho-Corasick matcher against the naive reference.

Baseline (same run): for each entry, `" entry " in spaced(text)` — the reference
semantics, one substring test per entry. Both run on the same sample of texts from a
synthetic crawl against a 500,000-entry list; the match sets must be identical.

    python benchmarks/matching.py [--crawl DIR] [--sample 200]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import schemas
from schemas import columns as C
from benchmarks.common import big_query_list
from pipeline import textclean
from pipeline.matching import QueryMatcher, load_entries, naive_matches
from pipeline.synth import crawl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crawl", default=None, help="a synthetic crawl (default: generate 2,000 pages)")
    ap.add_argument("--sample", type=int, default=200, help="texts timed with the naive reference")
    ap.add_argument("--texts", type=int, default=100_000, help="texts timed with the automaton")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.crawl or tmp)
        if not args.crawl:
            crawl.generate(crawl.CrawlConfig(pages=10_000, pages_per_file=2500), folder)
        truth = schemas.read_table(folder / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)
        texts = [textclean.normalize(t) for t in truth[C.TEXT].to_pylist() if t and len(t) < 1000]
        qpath = big_query_list(Path(tmp) / "queries.txt", texts)
        entries = load_entries(qpath.read_text().splitlines())
        start = time.perf_counter()
        matcher = QueryMatcher(entries)
        build = time.perf_counter() - start
        rng = random.Random(0)
        sample = rng.sample(texts, args.sample)
        start = time.perf_counter()
        naive = [naive_matches(t, entries) for t in sample]
        t_naive = (time.perf_counter() - start) / len(sample)
        fast = [set(matcher.match(t)) for t in sample]
        assert fast == naive, "match sets differ"
        many = (texts * (args.texts // len(texts) + 1))[: args.texts]
        start = time.perf_counter()
        matched = sum(bool(matcher.match(t)) for t in many)
        t_fast = (time.perf_counter() - start) / len(many)
    print(f"entries {len(entries):,}; automaton built in {build:.1f}s; sample {len(sample)} texts, "
          f"identical match sets: yes; {matched / len(many):.1%} of texts match at least one entry")
    print(f"naive reference  : {1 / t_naive:12,.1f} texts/s  (baseline)")
    print(f"Aho-Corasick     : {1 / t_fast:12,.0f} texts/s  x{t_naive / t_fast:,.0f}")


if __name__ == "__main__":
    main()
