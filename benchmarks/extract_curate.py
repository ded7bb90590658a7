"""extract + curate end to end on a synthetic crawl, with a per-step breakdown.

Baseline (same run, same files, one process): a cc2dataset-style WAT -> (url, alt) pass —
FastWARC records, json.loads, urljoin, keep links with an alt — writing nothing and keeping
no ledger. openwit's jobs run as users run them (the local FnApiRunner, one worker per
core) and write every output, reject and ledger. The per-step breakdown times each step's
pure function in one process on a sample of candidates.

    python -m benchmarks.extract_curate [--pages 100000] [--crawl DIR] [--langid wordfreq]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import pyarrow.parquet as pq
from fastwarc.warc import ArchiveIterator, WarcRecordType

import schemas
from schemas import columns as C
from benchmarks.common import big_query_list, peak_rss_mb
from pipeline import balance, curate, extract, textclean
from pipeline.langid import BACKENDS, DEFAULT_BACKEND, LanguageId
from pipeline.matching import QueryMatcher, load_entries
from pipeline.synth import crawl


def cc2dataset_style(files: list[Path]) -> tuple[int, float]:
    pairs = 0
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh, record_types=WarcRecordType.metadata):
                doc = json.loads(record.reader.read())
                try:
                    meta = doc["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
                    page = doc["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"]
                except KeyError:
                    continue
                base = meta.get("Head", {}).get("Base") or page
                for link in meta.get("Links", []):
                    if link.get("path") == "IMG@/src" and link.get("alt"):
                        url = urljoin(base, link["url"])  # not-a-column
                        if url.startswith("http"):
                            pairs += 1
    return pairs, time.perf_counter() - start


def breakdown(candidates: Path, queries: Path, n: int, langid: str) -> dict[str, float]:
    """Milliseconds per candidate for each step's pure function, one process."""
    rows = []
    for f in sorted((candidates / "candidates").iterdir()):
        rows.extend(pq.read_table(f).to_pylist())
        if len(rows) >= n:
            break
    rows = rows[:n]
    out: dict[str, float] = {}

    def timed(name: str, fn, items):
        start = time.perf_counter()
        result = [fn(x) for x in items]
        out[name] = (time.perf_counter() - start) / len(items) * 1000
        return result

    texts = timed("normalize (ftfy)", lambda r: textclean.normalize(r[C.TEXT]), rows)
    rules = textclean.TextRules()
    timed("text filters", lambda tr: textclean.verdict(tr[0], tr[1][C.URL], rules), list(zip(texts, rows)))
    matcher = QueryMatcher(load_entries(Path(queries).read_text().splitlines()))
    matched = timed("query match", matcher.match_entries, texts)
    uids = timed("uid hash", lambda tr: schemas.uid(tr[1][C.URL], tr[0]), list(zip(texts, rows)))
    timed("balance draw", lambda u: balance.keep_probability([100, 50_000], 20_000) > balance.draw(0, u), uids)
    lid = LanguageId(langid)
    sample = random.Random(0).sample(texts, min(len(texts), 5000))
    timed(f"language ({langid})", lid.detect, sample)
    out["_matched_share"] = sum(bool(m) for m in matched) / len(matched)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--crawl", default=None, help="an existing synthetic crawl (default: generate one)")
    ap.add_argument("--langid", default=DEFAULT_BACKEND, choices=BACKENDS)
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        folder = Path(args.crawl) if args.crawl else work / "crawl"
        if not args.crawl:
            crawl.generate(crawl.CrawlConfig(pages=args.pages), folder)
        wat_files = [folder / p for p in (folder / crawl.WAT_PATHS).read_text().split()]
        truth = schemas.read_table(folder / crawl.GROUND_TRUTH_DIR / "00000.parquet", schemas.GROUND_TRUTH)
        captions = [textclean.normalize(t) for t in truth[C.TEXT].to_pylist() if t and len(t) < 1000]
        queries = big_query_list(work / "queries.txt", captions)

        base_files = wat_files[: max(1, len(wat_files) // 10)]
        base_pairs, base_s = cc2dataset_style(base_files)
        base_rate = base_pairs / base_s

        ex = extract.run(["--input", str(folder / crawl.WAT_PATHS), "--output", str(work / "x")])
        cu = curate.run(["--input", str(work / "x"), "--output", str(work / "k"), "--queries", str(queries),
                         "--langid", args.langid])
        steps = breakdown(work / "x", queries, 50_000, args.langid)
        me, kids = peak_rss_mb()
    n = ex["candidates"]
    total = ex["seconds"] + cu["seconds"]
    per_core = n / total / cores
    print(f"crawl: {ex['files']} WAT files, {ex['links']:,} image links, {n:,} candidates; "
          f"{len(load_entries(Path(queries).read_text().splitlines())):,} queries; {cores} cores; langid {args.langid}")
    print(f"baseline cc2dataset-style WAT->pairs, 1 process: {base_rate:10,.0f} pairs/s per core (on {len(base_files)} files)")
    print(f"openwit extract ({cores} workers)              : {n / ex['seconds'] / cores:10,.0f} candidates/s per core  "
          f"x{n / ex['seconds'] / cores / base_rate:.2f}  ({ex['seconds']:.1f}s)")
    print(f"openwit curate ({cores} workers)               : {n / cu['seconds'] / cores:10,.0f} candidates/s per core  "
          f"({cu['seconds']:.1f}s, {cu['curated']:,} curated, t={cu['t']:,.0f})")
    print(f"extract + curate end to end                   : {per_core:10,.0f} candidates/s per core  "
          f"x{per_core / base_rate:.2f}")
    print(f"peak RSS: launcher {me:,.0f} MiB, largest worker {kids:,.0f} MiB")
    print("per-step cost, one process, microseconds per candidate:")
    for name, ms in steps.items():
        if not name.startswith("_"):
            print(f"  {name:<22} {ms * 1000:8.1f}")
    print(f"  ({steps['_matched_share']:.1%} of candidates match at least one query)")


if __name__ == "__main__":
    main()
