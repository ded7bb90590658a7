"""Peak memory of every data stage, launcher and largest worker, at two crawl sizes measured
in the same run: extract, curate, download, dedupe and shard, one fresh `openwit` process
each, as a user runs them.

    python -m benchmarks.stage_memory --dir /tmp/stages [--pages 2000 10000] [--workers 2]

For each size: `openwit synth --pages N` (reused when its folder exists), its images
served by `openwit synth serve` (2 server processes) for the download, then the chain
with every curated url kept (`--t` above any count), so each stage sees all the data.
The sampler is benchmarks.memory_scaling's (every 0.2 s over the launcher and every
process under it). The last size's peaks are printed as ratios against the first's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.memory_scaling import measured
from pipeline.synth import crawl
from schemas import run as RUN


def chain(openwit: list[str], crawl_dir: Path, work: Path, hosts: list[str], workers: int) -> dict[str, dict]:
    beam = [f"--direct_num_workers={workers}"]
    steps = {
        "extract": ["extract", "--input", str(crawl_dir / crawl.WAT_PATHS), "--output", str(work / "extract"), *beam],
        "curate": ["curate", "--input", str(work / "extract"), "--output", str(work / "curate"),
                   "--languages", "all", "--t", "1000000000", *beam],
        "download": ["download", "--input", str(work / "curate"), "--output", str(work / "download"),
                     "--workers", str(workers), "--threads", "16", "--image-size", "64", "--timeout", "2",
                     "--hang-grace", "5", *[f"--allow={h}" for h in sorted(set(hosts))]],
        "dedupe": ["dedupe", "--input", str(work / "download"), "--output", str(work / "dedupe"), *beam],
        "shard": ["shard", "--keep", str(work / "dedupe"), "--images", str(work / "download"),  # not-a-column: the subcommand
                  "--curated", str(work / "curate"), "--output", str(work / "shards")],
    }
    out = {}
    for name, args in steps.items():
        out[name] = measured([*openwit, *args])
        print(json.dumps({"stage": name, **out[name]}), flush=True)  # not-a-column: a key of this report
        if "exit" in out[name]:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--pages", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    openwit = [sys.executable, "-m", "pipeline.cli"]
    results = []
    for pages in args.pages:
        crawl_dir = args.dir / f"crawl-{pages}"
        if not (crawl_dir / "manifest.json").exists():
            subprocess.run([*openwit, "synth", "--output", str(crawl_dir), "--pages", str(pages)], check=True,
                           stdout=subprocess.DEVNULL)
        hosts = crawl.load_manifest(str(crawl_dir))["hosts"]
        server = subprocess.Popen([*openwit, "synth", "serve", "--crawl", str(crawl_dir), "--workers", "2",
                                   "--slow-seconds", "3"], stdout=subprocess.PIPE, text=True)
        try:
            server.stdout.readline()  # "serving N hosts: ..." once it listens
            work = args.dir / f"work-{pages}"
            t0 = time.perf_counter()
            stages = chain(openwit, crawl_dir, work, hosts, args.workers)
        finally:
            server.terminate()
            server.wait(timeout=30)
        ledgers = {stage.name: work / stage.folder / stage.ledger for stage in RUN.STAGES}
        rows = {name: json.loads(path.read_text()) for name, path in ledgers.items() if path.exists()}
        results.append({"pages": pages, "stages": stages, "in": {k: v.get("in") for k, v in rows.items()},
                        "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(results[-1]["in"]), flush=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(f"[ratio] pages {b['pages']:,} / {a['pages']:,}")
        for stage in a["stages"]:
            if stage not in b["stages"] or "exit" in a["stages"][stage] or "exit" in b["stages"][stage]:
                print(f"  {stage}: failed")
                continue
            x, y = a["stages"][stage], b["stages"][stage]
            print(f"  {stage:<9} in {a['in'].get(stage) or 0:>9,} -> {b['in'].get(stage) or 0:>9,}   "
                  f"launcher {x['launcher_mib']:,} -> {y['launcher_mib']:,} MiB x{y['launcher_mib'] / max(x['launcher_mib'], 1):.2f}   "
                  f"worker {x['worker_mib']:,} -> {y['worker_mib']:,} MiB x{y['worker_mib'] / max(x['worker_mib'], 1):.2f}   "
                  f"{x['seconds']} -> {y['seconds']} s")


if __name__ == "__main__":
    main()
