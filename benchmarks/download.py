"""`openwit download` against img2dataset called directly, on the synthetic loopback web.

Baseline (same run, same urls, same options): ``img2dataset.download`` with no guards.
openwit adds the address guard on every hop, the per-fetch deadline, robots.txt (shared by
the worker processes), X-Robots-Tag, capped redirects/bytes/pixels/decode memory, host
interleaving, the watchdog, shard publishing and the ledger. Two webs, both measured in the
same run: every http image link of a synthetic crawl, faults included (404s, timeouts,
bombs, ...), and the same links without the decompression bombs (where img2dataset loses
most of its time), served by two server processes on loopback.

    python -m benchmarks.download [--pages 2000] [--web all|no-bombs|both]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from schemas import columns as C
from pipeline import download
from pipeline.synth import crawl
from pipeline.synth.server import SyntheticWeb, free_hosts

OPTIONS = dict(image_size=64, timeout=2, retries=1, processes=2, threads=32, samples_per_shard=2000)


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--web", choices=("all", "no-bombs", "both"), default="both")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hosts = free_hosts(8)
        crawl.generate(crawl.CrawlConfig(pages=args.pages, pages_per_file=500, hosts=hosts), tmp / "crawl")
        truth = schemas.read_table(tmp / "crawl" / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)
        truth = truth.filter(pc.starts_with(truth[C.URL], "http"))
        rows = [{C.UID: schemas.uid(u, c), C.URL: u, C.TEXT: c, C.LANG: "en", C.LANG_PROB: 1.0,
                 C.MATCHED_QUERIES: [], C.PAGE_URL: p, C.SOURCE_FILE: f, C.SOURCE_OFFSET: o, C.SOURCE_FORMAT: "wat"}
                for u, c, p, f, o in zip(truth[C.URL].to_pylist(), truth[C.CLEAN_CAPTION].to_pylist(),
                                         truth[C.PAGE_URL].to_pylist(), truth[C.SOURCE_FILE].to_pylist(),
                                         truth[C.SOURCE_OFFSET].to_pylist())]
        faults = dict(zip(truth[C.URL].to_pylist(), truth[C.FAULT].to_pylist()))
        webs = {"all": rows, "no-bombs": [r for r in rows if faults[r[C.URL]] != "bomb"]}
        chosen = ["all", "no-bombs"] if args.web == "both" else [args.web]
        with SyntheticWeb(hosts, slow_seconds=3.0, processes=2):
            for web in chosen:
                results = measure(tmp / web, webs[web])
                report(web, len(webs[web]), args.pages, results)


def measure(tmp: Path, rows: list[dict]) -> dict[str, tuple[int, float, float]]:
    import img2dataset

    schemas.write_table(pa.Table.from_pylist(rows, schema=schemas.CURATED), tmp / "curated" / "part.parquet",
                        schemas.CURATED)
    (tmp / "plain_in").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{C.URL: r[C.URL], C.TEXT: r[C.TEXT]} for r in rows]),
                   tmp / "plain_in" / "urls.parquet")
    results = {}
    cpu, start = cpu_seconds(), time.perf_counter()
    img2dataset.download(
        url_list=str(tmp / "plain_in"), input_format="parquet", url_col=C.URL, caption_col=C.TEXT,
        output_folder=str(tmp / "plain"), output_format="webdataset", image_size=OPTIONS["image_size"],
        timeout=OPTIONS["timeout"], retries=OPTIONS["retries"], processes_count=OPTIONS["processes"],
        thread_count=OPTIONS["threads"], number_sample_per_shard=OPTIONS["samples_per_shard"],
        min_image_size=16, enable_wandb=False, compute_hash=C.SHA256)
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    plain = pq.read_table(list((tmp / "plain").glob("*.parquet")))
    results["img2dataset"] = (sum(s == "success" for s in plain[C.STATUS].to_pylist()), wall, used)

    cpu, start = cpu_seconds(), time.perf_counter()
    stats = download.run([
        "--input", str(tmp / "curated"), "--output", str(tmp / "ours"), "--allow", "127.0.0.0/8",
        "--image-size", str(OPTIONS["image_size"]), "--timeout", str(OPTIONS["timeout"]),
        "--retries", str(OPTIONS["retries"]), "--processes", str(OPTIONS["processes"]),
        "--threads", str(OPTIONS["threads"]), "--samples-per-shard", str(OPTIONS["samples_per_shard"]),
        "--hang-grace", "5"])
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    results["openwit"] = (stats["kept"], wall, used)
    return results


def report(web: str, n: int, pages: int, results: dict) -> None:
    base_ok, base_wall, _ = results["img2dataset"]
    print(f"[{web}] {n:,} urls from a {pages:,}-page synthetic crawl "
          f"({'faults included' if web == 'all' else 'faults but no decompression bombs'}), 2 cores, "
          f"{OPTIONS['processes']} processes x {OPTIONS['threads']} threads, timeout {OPTIONS['timeout']}s")
    for name, (ok, wall, used) in results.items():
        rate = ok / wall
        tag = "(baseline)" if name == "img2dataset" else f"x{rate / (base_ok / base_wall):.2f}"
        print(f"{name:<12} {ok:>7,} images in {wall:6.1f}s  {rate:7.1f} images/s  {rate / 2:6.1f} per core  "
              f"{used / max(ok, 1) * 1000:6.2f} CPU-ms per image  {tag}", flush=True)
    print("(img2dataset without guards also fetched what openwit refuses: robots-disallowed paths, "
          "redirects to 0.0.0.0, bombs it resized)", flush=True)


if __name__ == "__main__":
    main()
