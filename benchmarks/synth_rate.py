"""Generation rate of the synthetic crawl, against warcio writing the same records.

Baseline (same run, same machine): the same WAT records (same JSON envelopes) written
with warcio's WARCWriter, one gzip member per record, in one process. openwit's writer is
measured in one process (like for like) and with one worker per core (as `openwit synth`
runs). Prints links/s and the ratios.

    python benchmarks/synth_rate.py [--pages 4000]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from warcio.warcwriter import WARCWriter

from pipeline.synth import crawl


def warcio_baseline(cfg: crawl.CrawlConfig, out: Path) -> tuple[float, int]:
    key = crawl._cfg_key(cfg)
    links = 0
    start = time.perf_counter()
    with open(out / "baseline.warc.wat.gz", "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for page in range(cfg.pages):
            plan, rows = crawl.page_links(cfg, key, page, False)
            for record_type in ("request", "response"):
                env = crawl._envelope(plan, rows, "x.warc.gz", 0, record_type, cfg.seed)
                body = crawl.json.dumps(env, separators=(",", ":")).encode()
                record = writer.create_warc_record(
                    plan.page_url, "metadata", payload=io.BytesIO(body),
                    warc_headers_dict={"Content-Type": "application/json"})
                writer.write_record(record)
            links += len(rows)
    return time.perf_counter() - start, links


def ours(cfg: crawl.CrawlConfig, out: Path, workers: int) -> tuple[float, int]:
    crawl.plan_page.cache_clear()
    start = time.perf_counter()
    manifest = crawl.generate(cfg, out, workers=workers)
    return time.perf_counter() - start, manifest["counts"]["links"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=4000)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    cfg = crawl.CrawlConfig(pages=args.pages, pages_per_file=max(1, args.pages // (2 * cores)),
                            huge_alts_per_file=0, hosts=crawl.default_hosts())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_base, n_base = warcio_baseline(cfg, tmp)
        t_one, n_one = ours(cfg, tmp / "one", workers=1)
        t_all, n_all = ours(cfg, tmp / "all", workers=cores)
    base = n_base / t_base
    print(f"pages {args.pages:,}, links {n_one:,}, cores {cores}")
    print(f"warcio WARCWriter, 1 process     : {base:10,.0f} links/s  (baseline)")
    print(f"openwit synth, 1 process         : {n_one / t_one:10,.0f} links/s  x{n_one / t_one / base:.2f}")
    print(f"openwit synth, {cores} processes       : {n_all / t_all:10,.0f} links/s  x{n_all / t_all / base:.2f}")
    print("(openwit's figures include the ground-truth Parquet; the baseline writes only the WAT)")


if __name__ == "__main__":
    main()
