"""`openwit download` against img2dataset called directly, on the synthetic loopback web.

Baseline (same run, same urls, same options): img2dataset's own command with no guards,
in a fresh process as its users run it. Every url is fetched once, untimed, before the
first timed run (the loopback servers cache the images they render, and share the 2 cores
with the downloaders); then each tool runs ``--repeats`` times, alternating, and the best
run of each is compared (the median runs' ratio is printed beside it).
openwit adds the address guard on every hop, the per-fetch deadline, robots.txt (shared by
the worker processes), X-Robots-Tag, capped redirects/bytes/pixels/decode memory, host
interleaving, the watchdog, shard publishing and the ledger. Two webs, both measured in the
same run: every http image link of a synthetic crawl, faults included (404s, timeouts,
bombs, ...), and the same links without the decompression bombs (where img2dataset loses
most of its time), served by two server processes on loopback.

    python -m benchmarks.download [--pages 2000] [--web all|no-bombs|both] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    ap.add_argument("--repeats", type=int, default=2, help="runs of each tool, alternating; the best is reported")
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
            warm_up([r[C.URL] for r in rows])
            for web in chosen:
                results = measure(tmp / web, webs[web], args.repeats)
                report(web, len(webs[web]), args.pages, results, args.repeats)


def warm_up(urls: list[str]) -> None:
    """Fetch every url once, untimed, so the servers' image caches are as warm for the
    first timed run as for the last (they share the 2 cores with the downloaders)."""
    from concurrent.futures import ThreadPoolExecutor

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(url: str) -> None:
        with contextlib.suppress(Exception), opener.open(url, timeout=0.5) as resp:
            resp.read()

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(get, urls))


def measure(tmp: Path, rows: list[dict], repeats: int) -> dict[str, list[tuple[int, float, float]]]:
    """Each tool ``repeats`` times, alternating, each run into a fresh folder."""
    schemas.write_table(pa.Table.from_pylist(rows, schema=schemas.CURATED), tmp / "curated" / "part.parquet",
                        schemas.CURATED)
    (tmp / "plain_in").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{C.URL: r[C.URL], C.TEXT: r[C.TEXT]} for r in rows]),
                   tmp / "plain_in" / "urls.parquet")
    common = dict(url_list=str(tmp / "plain_in"), input_format="parquet", url_col=C.URL, caption_col=C.TEXT,
                  output_format="webdataset", image_size=OPTIONS["image_size"], timeout=OPTIONS["timeout"],
                  retries=OPTIONS["retries"], processes_count=OPTIONS["processes"],
                  thread_count=OPTIONS["threads"], number_sample_per_shard=OPTIONS["samples_per_shard"],
                  min_image_size=16, enable_wandb=False, compute_hash=C.SHA256)
    results: dict[str, list[tuple[int, float, float]]] = {"img2dataset": [], "openwit": []}
    for rep in range(repeats):
        # The baseline: img2dataset's own command, in a fresh process, as its users run it.
        cmd = [str(Path(sys.executable).parent / "img2dataset"), *[f"--{k}={v}" for k, v in common.items()],
               f"--output_folder={tmp / f'plain{rep}'}"]
        cpu, start = cpu_seconds(), time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results["img2dataset"].append((_successes(tmp / f"plain{rep}"), time.perf_counter() - start,
                                       cpu_seconds() - cpu))
        cpu, start = cpu_seconds(), time.perf_counter()
        stats = download.run([
            "--input", str(tmp / "curated"), "--output", str(tmp / f"ours{rep}"), "--allow", "127.0.0.0/8",
            "--image-size", str(OPTIONS["image_size"]), "--timeout", str(OPTIONS["timeout"]),
            "--retries", str(OPTIONS["retries"]), "--workers", str(OPTIONS["processes"]),
            "--threads", str(OPTIONS["threads"]), "--samples-per-shard", str(OPTIONS["samples_per_shard"]),
            "--hang-grace", "5"])
        results["openwit"].append((stats["kept"], time.perf_counter() - start, cpu_seconds() - cpu))
    return results


def _successes(folder: Path) -> int:
    table = pq.read_table(list(folder.glob("*.parquet")))
    return sum(s == "success" for s in table[C.STATUS].to_pylist())


def report(web: str, n: int, pages: int, results: dict, repeats: int) -> None:
    """The best (shortest) of the runs of each tool, and every run's wall time."""
    best = {name: min(runs, key=lambda r: r[1]) for name, runs in results.items()}
    base_ok, base_wall, _ = best["img2dataset"]
    median = {name: statistics.median(ok / wall for ok, wall, _ in runs) for name, runs in results.items()}
    print(f"[{web}] {n:,} urls from a {pages:,}-page synthetic crawl "
          f"({'faults included' if web == 'all' else 'faults but no decompression bombs'}), 2 cores, "
          f"{OPTIONS['processes']} processes x {OPTIONS['threads']} threads, timeout {OPTIONS['timeout']}s, "
          f"best of {repeats}")
    for name, (ok, wall, used) in best.items():
        rate = ok / wall
        tag = "(baseline)" if name == "img2dataset" else (
            f"x{rate / (base_ok / base_wall):.2f} (median run: x{median[name] / median['img2dataset']:.2f})")
        runs = ", ".join(f"{r[1]:.1f}s" for r in results[name])
        print(f"{name:<12} {ok:>7,} images in {wall:6.1f}s  {rate:7.1f} images/s  {rate / 2:6.1f} per core  "
              f"{used / max(ok, 1) * 1000:6.2f} CPU-ms per image  {tag}  (runs: {runs})", flush=True)
    print("(img2dataset without guards also fetched what openwit refuses: robots-disallowed paths, "
          "X-Robots-Tag opt-outs are honoured by both, redirects to 0.0.0.0, bombs it resized)", flush=True)


if __name__ == "__main__":
    main()
