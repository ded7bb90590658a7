"""Peak memory of extract and curate as the crawl grows: launcher and each worker, at two
sizes, measured in the same run.

    python -m benchmarks.memory_scaling --dir /tmp/mem [--pages 100000 1000000] [--workers 2] [--reuse-extract]

For each size: `openwit synth --pages N` (reused when its folder exists), then `openwit
extract` and `openwit curate` (the shipped query list, the local FnApiRunner with
``--workers`` worker processes) as fresh processes. A sampler reads the RSS of the
launcher and of every process under it every 0.2 s; the figures are the peaks. The last
size's peaks are printed as ratios against the first's (the goal: at most 1.2x at 10x the
candidates). A stage that fails (killed for memory: exit -9) is reported with the peaks it
reached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


def _sample(proc: subprocess.Popen, peaks: dict, stop: threading.Event) -> None:
    root = psutil.Process(proc.pid)
    while not stop.is_set():
        try:
            peaks["launcher"] = max(peaks.get("launcher", 0), root.memory_info().rss)
            kids = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for k in kids:
            try:
                rss = k.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            peaks["worker"] = max(peaks.get("worker", 0), rss)
            peaks["workers_seen"] = peaks.get("workers_seen", set()) | {k.pid}
        time.sleep(0.2)


def measured(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc, peaks, stop), daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    failed = {"exit": proc.returncode, "error": err.strip().splitlines()[-1][:300] if err.strip() else ""} \
        if proc.returncode != 0 else {}
    return {**failed, "seconds": round(time.perf_counter() - t0, 1), "launcher_mib": round(peaks.get("launcher", 0) / 2**20),
            "worker_mib": round(peaks.get("worker", 0) / 2**20), "processes": len(peaks.get("workers_seen", ())),
            "summary": out.strip().splitlines()[0] if out.strip() else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--pages", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reuse-extract", action="store_true",
                    help="measure curate only, on an extract output an earlier run left in --dir")
    args = ap.parse_args()
    openwit = [sys.executable, "-m", "pipeline.cli"]
    beam = [f"--direct_num_workers={args.workers}"]
    results = []
    for pages in args.pages:
        crawl = args.dir / f"crawl-{pages}"
        if not (crawl / "manifest.json").exists():
            t0 = time.perf_counter()
            subprocess.run([*openwit, "synth", "--output", str(crawl), "--pages", str(pages)], check=True,
                           stdout=subprocess.DEVNULL)
            print(f"[synth] {pages:,} pages in {time.perf_counter() - t0:.0f} s", flush=True)
        work = args.dir / f"work-{pages}"
        if args.reuse_extract and (work / "extract" / "extract_stats.json").exists():
            ex = {"reused": True, "launcher_mib": 0, "worker_mib": 0, "seconds": 0}
        else:
            ex = measured([*openwit, "extract", "--input", str(crawl / "wat.paths"),
                           "--output", str(work / "extract"), *beam])
            print(json.dumps({"pages": pages, "extract": ex}), flush=True)
            if "exit" in ex:
                continue
        stats = json.loads((work / "extract" / "extract_stats.json").read_text())
        cu = measured([*openwit, "curate", "--input", str(work / "extract"), "--output", str(work / "curate"),
                       *beam])
        row = {"pages": pages, "candidates": stats["kept"], "extract": ex, "curate": cu}
        results.append(row)
        print(json.dumps(row), flush=True)
    if len(results) >= 2 and not any("exit" in r["curate"] for r in results):
        a, b = results[0], results[-1]
        print(f"[ratio] {b['candidates']:,} / {a['candidates']:,} candidates = x{b['candidates'] / a['candidates']:.1f}")
        for stage in ("extract", "curate"):
            for key in ("launcher_mib", "worker_mib", "seconds"):
                print(f"  {stage} {key}: {a[stage][key]:,} -> {b[stage][key]:,}  x{b[stage][key] / max(a[stage][key], 1):.2f}")


if __name__ == "__main__":
    main()
