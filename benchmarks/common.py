"""Helpers shared by the benchmarks: a realistic 500,000-entry query list, timing, RSS."""

from __future__ import annotations

import resource
from collections import Counter
from pathlib import Path

from pipeline import querylist
from pipeline.matching import load_entries


def big_query_list(path: Path, captions: list[str], size: int = 500_000) -> Path:
    """English words by frequency (wordfreq's large list), bigrams seen in the captions,
    then bigrams of frequent words, up to ``size`` entries: realistic in size and in how
    often short entries (stop words, colours, shapes) match."""
    import wordfreq

    words = wordfreq.top_n_list("en", 400_000, wordlist="large")
    seen = Counter()
    for text in captions:
        toks = text.split()
        seen.update(f"{a} {b}" for a, b in zip(toks, toks[1:]) if a.isalpha() and b.isalpha())
    bigrams = [b for b, _ in seen.most_common(50_000)]
    top = words[:2000]
    filler = (f"{a} {b}" for a in top for b in top if a != b)
    entries = load_entries([*words, *bigrams])
    for b in filler:
        if len(entries) >= size:
            break
        entries.append(b)
    entries = load_entries(entries)[:size]
    return querylist.write(entries, path)


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its largest finished child) peak resident set size in MiB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids
