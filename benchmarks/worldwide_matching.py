"""Worldwide matching (curate with a folder of per-language lists): one automaton over
every language's list, against the English list alone.

Texts: the one-line Debian package descriptions in 16 languages that the language-id
tests read (tests/pipeline/fixtures/ddtp-sample.tsv, human translations), repeated.
Lists: a folder built by ``openwit queries build-world``. Baseline (same run): the
single-list matcher over the folder's en.txt. Prints the automaton's build time and the
memory it adds to a worker, matches per text, texts/s on one core, and the ratio.

    openwit queries build-world --languages en,fr,es,de,it,pt,zh,ja,ru,he --output /tmp/world
    taskset -c 1 python -m benchmarks.worldwide_matching --lists /tmp/world/lists
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from pipeline.curate import load_lists
from pipeline.matching import QueryMatcher, WorldMatcher

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "pipeline" / "fixtures" / "ddtp-sample.tsv"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", required=True, help="a folder of <language>.txt lists (queries build-world)")
    ap.add_argument("--repeat", type=int, default=50, help="times the 640 sample texts are matched")
    args = ap.parse_args()
    texts = [line.split("\t", 1)[1] for line in SAMPLE.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")] * args.repeat
    lists = load_lists(args.lists)
    entries = sum(len(v) for v in lists.values())
    before = _rss_mib()
    start = time.perf_counter()
    world = WorldMatcher(lists, lowercase=True)
    build = time.perf_counter() - start
    grown = _rss_mib() - before
    start = time.perf_counter()
    matches = sum(len(world.match_entries(t)) for t in texts)
    world_rate = len(texts) / (time.perf_counter() - start)
    english = QueryMatcher(lists["en"], lowercase=True)
    start = time.perf_counter()
    en_matches = sum(len(english.match_entries(t)) for t in texts)
    en_rate = len(texts) / (time.perf_counter() - start)
    print(f"{len(lists)} lists, {entries:,} entries: automaton built in {build:.1f} s, +{grown:,.0f} MiB "
          f"(peak RSS {_rss_mib():,.0f} MiB)")
    print(f"{len(texts):,} texts: worldwide {world_rate:,.0f} texts/s ({matches / len(texts):.1f} matches a text, "
          f"all languages); English list alone (baseline) {en_rate:,.0f} texts/s ({en_matches / len(texts):.1f})")
    print(f"ratio worldwide / English alone: {world_rate / en_rate:.2f}")


if __name__ == "__main__":
    main()
