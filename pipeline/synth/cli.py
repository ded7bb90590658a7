"""`openwit synth`: generate a synthetic crawl; `openwit synth serve`: serve its images."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from pipeline.cli import Parser
from pipeline.synth import crawl
from pipeline.synth.server import SyntheticWeb, listen_on
from schemas import UserError

SUMMARY = "generate a synthetic crawl (WAT files + ground truth), or serve its images (synth serve)"
DEFAULT_OUT = "openwit-out/crawl"


def _positive(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise ValueError(value)
    return n


_positive.__name__ = "positive integer"


def _generate_parser() -> Parser:
    p = Parser(
        prog="openwit synth",
        description="Write a synthetic crawl: gzip WAT files laid out like Common Crawl's "
        "(one gzip member per record), wat.paths, a GROUND_TRUTH parquet per WAT file saying "
        "what every image link is, and manifest.json. Images are not stored: "
        "`openwit synth serve --crawl DIR` renders them from their URL.",
        epilog="Same seed and options give byte-identical files, whatever --workers is.",
    )
    p.add_argument("--output", "--out", dest="output", default=DEFAULT_OUT, help="output folder")
    p.add_argument("--pages", type=_positive, default=2000, help="pages to generate (default: 2000; ~11 image links each)")
    p.add_argument("--seed", type=int, default=0, help="crawl seed (default: 0)")
    p.add_argument("--pages-per-file", type=_positive, default=1000, help="pages per WAT file (default: 1000)")
    p.add_argument("--hosts", type=_positive, default=8, help="virtual hosts on 127.0.0.1-4 (default: 8)")
    p.add_argument("--base-port", type=int, default=18400, help="first port of the virtual hosts (default: 18400)")
    p.add_argument("--named-hosts", action="store_true",
                   help="name the hosts (img0.openwit-demo.test, ...) instead of addresses and ports: `synth serve` "
                        "puts them on free loopback ports and prints the --connect-to routes for download, so the "
                        "urls (and every uid) do not depend on the ports")
    p.add_argument("--eval-size", type=_positive, default=512, help="images in the held-out evaluation set (default: 512)")
    p.add_argument("--huge-alts-per-file", type=int, default=1, help="1 MiB alt texts per WAT file (default: 1)")
    p.add_argument("--warc", action="store_true",
                   help="also write WARC files with each page's HTML response (warc/, warc.paths)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: 0, one per core)")
    return p


def _serve_parser() -> Parser:
    p = Parser(
        prog="openwit synth serve",
        description="Serve a synthetic crawl's images on its loopback hosts, with the faults its "
        "ground truth declares (404, 500, 503-then-ok, slow, redirects, wrong type, truncated, "
        "X-Robots-Tag, robots.txt, decompression bomb, too small). Stops on Ctrl-C or SIGTERM.",
    )
    p.add_argument("--crawl", default=DEFAULT_OUT, help=f"crawl folder written by `openwit synth` (default: {DEFAULT_OUT})")
    p.add_argument("--slow-seconds", type=float, default=5.0, help="delay of the 'slow' fault (default: 5)")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: run until stopped)")
    p.add_argument("--workers", "--processes", dest="processes", type=int, default=1, metavar="N",
                   help="server processes sharing the hosts (default: 1; 2+ for download benchmarks)")
    return p


def _progress(done: int, total: int, counts: Counter, elapsed: float) -> None:
    rate = counts["links"] / elapsed if elapsed else 0
    eta = elapsed / done * (total - done)
    print(f"[synth] files {done}/{total}  pages {counts['pages']:,}  links {counts['links']:,}  "
          f"candidates {counts['candidates']:,}  {rate:,.0f} links/s  ETA {eta:.0f}s",
          file=sys.stderr, flush=True)


def summary(manifest: dict, out: str | Path, seconds: float) -> str:
    counts = manifest["counts"]
    links = counts.get("links", 0)
    lines = [
        f"synthetic crawl in {out}: {manifest['files']} WAT file(s), {counts.get('pages', 0):,} pages, "
        f"{links:,} image links ({counts.get('candidates', 0):,} with an http url and an alt) "
        f"in {seconds:.1f}s ({links / max(seconds, 1e-9):,.0f} links/s)",
        "  kind               links   share",
    ]
    for kind in crawl.ALL_KINDS:
        n = counts.get(kind, 0)
        lines.append(f"  {kind:<16} {n:>8,}  {n / max(links, 1):6.1%}")
    lines.append("  held-out (shape, colour): " + ", ".join(f"{c} {s}" for s, c in manifest["heldout_combinations"]))
    lines.append(f"  hosts: {', '.join(manifest['hosts'])}")
    return "\n".join(lines)


def generate(argv: list[str]) -> int:
    args = _generate_parser().parse_args(argv)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output {out}: cannot create this folder ({e.strerror})") from None
    cfg = crawl.CrawlConfig(
        pages=args.pages, seed=args.seed, pages_per_file=args.pages_per_file,
        hosts=crawl.virtual_hosts(args.hosts) if args.named_hosts else crawl.default_hosts(args.hosts, args.base_port),
        eval_size=args.eval_size,
        huge_alts_per_file=args.huge_alts_per_file, warc=args.warc,
    )
    if not 0 < args.base_port <= 65535 - args.hosts:
        raise UserError(f"--base-port {args.base_port}: out of range")
    start = time.perf_counter()
    manifest = crawl.generate(cfg, out, workers=args.workers, progress=_progress)
    print(summary(manifest, out, time.perf_counter() - start))
    print(f"serve it: openwit synth serve --crawl {out}")
    return 0


def serve(argv: list[str]) -> int:
    args = _serve_parser().parse_args(argv)
    manifest = crawl.load_manifest(args.crawl)
    web = SyntheticWeb(listen_on(manifest["hosts"]), slow_seconds=args.slow_seconds, processes=args.processes)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with web:
        print(f"serving {len(web.hosts)} hosts: {' '.join(web.urls)}", flush=True)
        if web.connect_to:
            print("download with: " + " ".join(f"--connect-to={c}" for c in web.connect_to) + " "
                  + " ".join(f"--allow={a}" for a in web.hosts), flush=True)
        try:
            done.wait(args.duration or None)
        except KeyboardInterrupt:
            pass
        stats = web.stats()
    print(f"stopped after {stats['requests']:,} requests "
          f"({stats['canary_hits']} canary hits, {stats['private_hits']} robots-disallowed fetches)")
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "serve":
        return serve(argv[1:])
    if argv and argv[0] == "generate":
        argv = argv[1:]
    return generate(argv)
