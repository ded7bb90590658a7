"""`openwit demo`: the whole job on embedded defaults, from nothing, on this machine.

Generate the synthetic crawl, serve it on loopback and fetch a sample of every kind of
link as a careful client would (checking each behaves as its ground truth declares, faults
included), then run the Beam jobs on it: extract candidates from the WAT files and curate
them into the url list to download, download it with img2dataset behind openwit's network
guards, remove exact and near-duplicate images and the held-out evaluation images, and
write the final training shards. Stages join this command as they land.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

import schemas
from schemas import columns as C
from schemas import run as RUN
from pipeline import curate, dedupe, download, extract, querylist, report, shard
from pipeline.cli import Parser
from pipeline.synth import benchmark, crawl
from pipeline.synth.cli import summary as crawl_summary
from pipeline.synth.probe import EXPECTED, Prober
from pipeline.synth.server import SyntheticWeb, listen_on

SUMMARY = "run the whole job on a generated crawl served on loopback (the quickstart)"
DEFAULT_OUT = "openwit-demo"
QUERY_WORDS = 50_000


SIZES = {False: (3000, 25), True: (300, 8)}  # (pages, links probed per kind and fault), by --quick


def _parser() -> Parser:
    p = Parser(
        prog="openwit demo",
        description="The whole job on embedded defaults: generate a synthetic crawl, serve its images on "
        "loopback hosts with their faults, fetch a sample of every kind of link and check each behaves as "
        "declared; then extract, curate, download, dedupe and shard it, validate the run, train the debug "
        "recipe with DeepSpeed, evaluate it zero-shot and write report.html; print the funnel, the "
        "training summary and the evaluation table. Nothing is downloaded from outside this machine.",
    )
    p.add_argument("--output", "--out", dest="output", default=DEFAULT_OUT,
                   help="work folder: the crawl, every stage's output, the training run and report.html")
    p.add_argument("--pages", type=int,
                   help=f"pages to generate (default: {SIZES[False][0]}; with --quick {SIZES[True][0]})")
    p.add_argument("--seed", type=int, default=0, help="crawl seed (default: 0)")
    p.add_argument("--sample", type=int,
                   help=f"links fetched per kind and fault (default: {SIZES[False][1]}; with --quick {SIZES[True][1]})")
    p.add_argument("--quick", action="store_true", help=f"a smaller run: {SIZES[True][0]} pages, {SIZES[True][1]} "
                   "links per kind, one epoch (--pages and --sample still apply)")
    return p


def _expected(kind: str, fault: str | None, url: str = "") -> str:
    """What a careful client sees fetching a link. A link on an opted-out page keeps its
    own kind's form (its url says it: data: or .svg) under the page's kind."""
    if kind == "data_url" or url.startswith("data:"):
        return "not_http"
    if kind == "svg" or url.lower().endswith(".svg"):
        return "svg"
    return EXPECTED[fault or "none"]


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def _fetch(prober: Prober, url: str) -> bytes | None:
    try:
        status, _, body = prober._get(url)
    except OSError:
        return None
    return body if status == 200 else None


def _phash(body: bytes) -> imagehash.ImageHash:
    return imagehash.phash(Image.open(io.BytesIO(body)).convert("RGB"))


GOAL = {"zeroshot_shape": 0.80, "zeroshot_colour": 0.80}  # top-1 on the held-out combinations


def learning_curve(metrics_path: Path) -> str:
    """The periodic evaluations of a training run as a small table (empty if none)."""
    if not metrics_path.is_file():
        return ""
    rows = [r for r in map(json.loads, metrics_path.read_text().splitlines()) if "eval" in r]
    if not rows:
        return ""
    lines = ["  step   shape  colour  combination  T->I R@5"]
    for r in rows:
        e = r["eval"]
        lines.append(f"  {r['step']:>4}   {e.get('zeroshot_shape/top1', 0):.3f}  {e.get('zeroshot_colour/top1', 0):.3f}"
                     f"  {e.get('zeroshot_combination/top1', 0):>11.3f}  {e.get('retrieval/text_to_image_R@5', 0):>8.3f}")
    return "\n".join(lines)


def goal(records: list[dict]) -> str:
    """One line: the learning goal's figures against their bars."""
    parts = []
    for r in records:
        name = Path(r["dataset"]).name
        if r["task"] in report.ZEROSHOT_TASKS and name in GOAL:
            mark = "met" if r["top1"] >= GOAL[name] else "NOT met"
            parts.append(f"{name.split('_', 1)[1]} {r['top1']:.1%} (goal {GOAL[name]:.0%}: {mark})")
        if r["task"] in report.RETRIEVAL_TASKS:
            chance = 5 / max(1, r["images"])
            parts.append(f"text->image R@5 {r['text_to_image_R@5']:.1%} (chance {chance:.1%})")
    return "learning goal, zero-shot on held-out combinations: " + "; ".join(parts)


STEPS = 11


def budget(pages: int) -> int:
    """The final per-query budget t: small enough that balancing visibly acts on the head queries."""
    return max(50, pages // 10)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    pages, sample = SIZES[args.quick]
    pages = pages if args.pages is None else args.pages
    sample = sample if args.sample is None else args.sample
    if pages <= 0 or sample <= 0:
        raise schemas.UserError("--pages and --sample must be positive")
    import importlib.util

    missing = [m for m in ("torch", "open_clip", "deepspeed", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:  # now, not after the pipeline has run for minutes
        raise schemas.UserError(f"the demo trains a model and needs the 'train' extra ({', '.join(missing)} not "
                                "installed): pip install 'openwit[train]'")
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise schemas.UserError(f"--output {out}: cannot create this folder ({e.strerror})") from None
    paths = schemas.run.layout(str(out))
    started = time.perf_counter()
    cfg, manifest, truth = synthesize(out, pages, args.seed)
    probe_ok, bad = probe_links(cfg, truth, sample)
    t_budget = budget(pages)
    extracted, curated = extract_and_curate(out, paths, t_budget)
    downloaded = download_images(cfg, paths)
    deduped, sharded = dedupe_and_shard(out, paths, t_budget)
    trained = train_and_evaluate(out, paths, args.quick)
    write_report(out, paths)
    summarize(out, manifest, extracted, curated, downloaded, deduped, sharded, trained, started, args.quick)
    problems = [text for ok, text in (
        (probe_ok, f"{bad} kind(s) of link did not behave as declared"),
        (downloaded["ledger_ok"] and deduped["ledger_ok"] and sharded["ledger_ok"], "a stage's ledger does not add up"),
        (trained["ok"], f"training failed (exit status {trained['returncode']})"),
        (trained["eval_ok"] or not trained["ok"], "evaluation failed")) if not ok]
    if problems:
        print(f"openwit demo: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


def synthesize(out: Path, pages: int, seed: int) -> tuple[crawl.CrawlConfig, dict, pa.Table]:
    """Step 1: the synthetic crawl, and its ground truth."""
    _step(1, STEPS, f"synth: generating {pages:,} pages into {out / 'crawl'}")
    # named hosts: the urls, the uids and so the whole run are a function of the seed, whatever
    # loopback ports the web is served on
    cfg = crawl.CrawlConfig(pages=pages, seed=seed, pages_per_file=max(100, pages // 4),
                            hosts=crawl.virtual_hosts(8))
    t = time.perf_counter()
    manifest = crawl.generate(cfg, out / "crawl")
    print(crawl_summary(manifest, out / "crawl", time.perf_counter() - t))
    return cfg, manifest, schemas.read_table(out / "crawl" / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)


def probe_links(cfg: crawl.CrawlConfig, truth: pa.Table, sample: int) -> tuple[bool, int]:
    """Steps 2-3: serve the crawl's web and probe up to ``sample`` links of each kind and
    fault as a careful client; print whether each behaves as declared. Returns (all as
    declared, kinds that were not)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in truth.filter(pc.invert(pc.equal(truth[C.KIND], crawl.HUGE_ALT))).select(
            [C.KIND, C.FAULT, C.URL, C.DUPLICATE_OF]).to_pylist():
        key = (row[C.KIND], row[C.FAULT] or "none")
        if len(groups[key]) < sample:
            groups[key].append(row)

    routes = listen_on(cfg.hosts)
    _step(2, STEPS, f"serve: {len(cfg.hosts)} virtual hosts on loopback ("
                    f"{', '.join(f'{h} on {a}' for h, a in list(routes.items())[:2])}, ...)")
    with SyntheticWeb(routes, slow_seconds=3.0) as web:
        _step(3, STEPS, f"probe: up to {sample} links per kind and fault, as a careful client")
        prober = Prober(timeout=1.0, routes=routes)
        jobs = [(key, row) for key in sorted(groups) for row in groups[key]]
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda job: prober.probe(job[1][C.URL]), jobs))
            dup_rows = [row for (kind, _), row in jobs if kind in ("duplicate", "near_duplicate")]
            bodies = list(pool.map(lambda r: (_fetch(prober, r[C.URL]), _fetch(prober, r[C.DUPLICATE_OF])), dup_rows))
        stats = web.stats()

    # One line per kind; faulty and opted-out links get one line per fault.
    rows_by_line: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for ((kind, fault), row), outcome in zip(jobs, outcomes):
        line = (kind, fault if kind in ("faulty", "opted_out") else "")
        rows_by_line[line].append((_expected(kind, fault, row[C.URL]), outcome))
    counts = truth.group_by([C.KIND, C.FAULT]).aggregate([([C.URL], "count")]).to_pylist()
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for r in counts:
        fault = r[C.FAULT] or "none"
        totals[(r[C.KIND], fault if r[C.KIND] in ("faulty", "opted_out") else "")] += r[f"{C.URL}_count"]
    print(f"\n  {C.KIND:<16} {C.FAULT:<20} {'links':>7} {'probed':>6}  {'observed':<20} as declared")
    bad = 0
    for line in sorted(rows_by_line):
        pairs = rows_by_line[line]
        right = sum(want == got for want, got in pairs)
        wants = sorted({want for want, _ in pairs})
        shown = wants[0] if len(wants) == 1 else f"{len(wants)} outcomes"
        if right != len(pairs):
            bad += 1
            shown = ", ".join(sorted({got for want, got in pairs if want != got}))
        mark = "yes" if right == len(pairs) else f"NO ({right}/{len(pairs)})"
        print(f"  {line[0]:<16} {line[1] or '-':<20} {totals[line]:>7,} {len(pairs):>6}  {shown:<20} {mark}")

    kinds = [r[C.KIND] for r in dup_rows]
    same = sum(1 for (a, b), k in zip(bodies, kinds) if k == "duplicate" and a and a == b)
    n_dup = kinds.count("duplicate")
    dists = sorted(_phash(a) - _phash(b) for (a, b), k in zip(bodies, kinds)
                   if k == "near_duplicate" and a and b)
    print(f"\n  duplicates byte-identical to their original: {same}/{n_dup}")
    if dists:
        print(f"  near-duplicates, pHash distance to their original: median {dists[len(dists) // 2]}, "
              f"max {dists[-1]} (of 64 bits)")
    print(f"  server: {stats['requests']:,} requests, {stats['canary_hits']} fetches of a forbidden "
          f"redirect target, {stats['private_hits']} fetches of robots-disallowed paths")
    return not (bad or same != n_dup or stats["canary_hits"] or stats["private_hits"]), bad


def extract_and_curate(out: Path, paths: dict[str, str], t_budget: int) -> tuple[dict, dict]:
    """Steps 4-5: candidates from the WAT files, then the curated url list, balanced loosely
    (twice the final budget) so that fewer urls are fetched; shard balances last, at
    ``t_budget``, on what download and dedupe leave. ``t_budget`` is small enough that
    balancing visibly acts on the head queries."""
    _step(4, STEPS, "extract (Beam): WAT records -> candidates")
    extracted = extract.run(["--input", str(out / "crawl" / crawl.WAT_PATHS), "--output", paths[RUN.EXTRACT]])
    print(extract.summary(extracted, extracted["output"]))

    queries = querylist.write(querylist.frequent_words(QUERY_WORDS), out / "queries.txt")
    _step(5, STEPS, f"curate (Beam): clean, match {QUERY_WORDS:,} frequent English words, dedupe, "
                    f"language id, balance loosely (t = {2 * t_budget})")
    curated = curate.run(["--input", paths[RUN.EXTRACT], "--output", paths[RUN.CURATE],
                          "--queries", str(queries), "--t", str(2 * t_budget)])
    print(curate.summary(curated))
    return extracted, curated


def download_images(cfg: crawl.CrawlConfig, paths: dict[str, str]) -> dict:
    """Step 6: the curated urls from the loopback web, behind the guards (only its hosts allowed)."""
    _step(6, STEPS, "download (img2dataset behind openwit's guards) from the loopback web")
    with SyntheticWeb(listen_on(cfg.hosts), slow_seconds=3.0, processes=2) as web:
        downloaded = download.run([
            "--input", paths[RUN.CURATE], "--output", paths[RUN.DOWNLOAD], "--image-size", "64",
            # 4 processes of 8 threads, not 2 of 16, on 2 cores: 62-64 s against 71-72 (seed 0's urls)
            "--timeout", "2", "--retries", "1", "--samples-per-shard", "2000", "--workers", "4",
            "--threads", "8", *[f"--allow={a}" for a in sorted(web.hosts)],
            *[f"--connect-to={c}" for c in web.connect_to]])
    print(download.summary(downloaded, paths[RUN.DOWNLOAD]))
    return downloaded


def dedupe_and_shard(out: Path, paths: dict[str, str], t_budget: int) -> tuple[dict, dict]:
    """Steps 7-8: exact and near duplicates out (the held-out evaluation images too), then
    the training shards, balanced last at ``t_budget`` on the counts of what survived."""
    _step(7, STEPS, "dedupe (Beam): exact and near-duplicate images, held-out evaluation images")
    # 64 px images: eval radius 6 finds 89% of the evaluation copies (docs/dedupe.md); 4 would find 76%
    deduped = dedupe.run(["--input", paths[RUN.DOWNLOAD], "--output", paths[RUN.DEDUPE],
                          "--eval-images", f"heldout={out / 'crawl' / crawl.EVAL_IMAGES_DIR}", "--eval-radius", "6"])
    print(dedupe.summary(deduped))

    _step(8, STEPS, f"shard (Beam): balance last (t = {t_budget}) on what download and dedupe left, "
                    "then the final training shards")
    sharded = shard.run(["--keep", paths[RUN.DEDUPE], "--images", paths[RUN.DOWNLOAD],
                         "--curated", paths[RUN.CURATE], "--output", paths[RUN.SHARD],
                         "--samples-per-shard", "2000", "--name", "openwit demo",
                         "--balance", "last", "--t", str(t_budget)])
    print(shard.summary(sharded))
    return deduped, sharded


def train_and_evaluate(out: Path, paths: dict[str, str], quick: bool) -> dict:
    """Steps 9-10: train the debug recipe on the shards (zero-shot evaluation as it goes),
    then evaluate the final model on the held-out combinations."""
    suite = out / "crawl" / benchmark.BENCHMARK_DIR
    _step(9, STEPS, "train (DeepSpeed, the debug recipe) on the training shards, evaluating zero-shot as it goes")
    # evaluation images are letterboxed as img2dataset letterboxed the training images ("border"):
    # the trainer reads that from the shards, records it, and export and eval use it
    train_args = ["--recipe", "debug", "--data", paths[RUN.SHARD], "--output", paths[RUN.TRAIN],
                  "--set", f"eval_suite={suite}", "--set", "log_every=50",
                  # the demo's ~12k samples at 64 px fit in ~150 MB decoded: each is read and decoded once, and
                  # the batches are made in the training process (1.08x: docs/benchmarks.md, same weights)
                  "--set", "workers=0", "--set", "sample_cache_mb=1024",
                  *(["--set", "epochs=1"] if quick else [])]
    t = time.perf_counter()
    trained = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", *train_args])
    result = {"ok": trained.returncode == 0, "returncode": trained.returncode,
              "seconds": time.perf_counter() - t, "stats": {}, "eval_ok": False, "eval_stdout": ""}
    stats_path = Path(paths[RUN.TRAIN]) / "train_stats.json"
    if result["ok"] and stats_path.exists():
        result["stats"] = json.loads(stats_path.read_text())

    _step(10, STEPS, "eval: zero-shot, retrieval and linear probe on the held-out combinations")
    if result["ok"]:
        Path(paths[RUN.EVAL]).parent.mkdir(exist_ok=True)
        evaluated = subprocess.run([sys.executable, "-m", "pipeline.cli", "eval", "--model", paths[RUN.TRAIN],
                                    "--suite", str(suite), "--linear-probe", "--output", paths[RUN.EVAL]], capture_output=True, text=True)
        result["eval_ok"], result["eval_stdout"] = evaluated.returncode == 0, evaluated.stdout.rstrip()
        print(f"  results: {paths[RUN.EVAL]}" if result["eval_ok"] else evaluated.stderr.rstrip())
    return result


def write_report(out: Path, paths: dict[str, str]) -> None:
    """Step 11: the run's HTML report."""
    _step(11, STEPS, "report: one HTML page with the funnel, queries, languages, captions, sizes, duplicates, "
                     "samples, training and evaluation")
    page = report.write(paths, paths[RUN.REPORT], "openwit demo")
    print(f"  {len(page['figures'])} figures, {page['bytes'] / 1e6:.1f} MB, in {page['seconds']:.1f}s")


def summarize(out: Path, manifest: dict, extracted: dict, curated: dict, downloaded: dict, deduped: dict,
              sharded: dict, trained: dict, started: float, quick: bool) -> None:
    """The funnel, training and evaluation in a few lines, and where everything lies."""
    links = manifest["counts"]["links"]
    print(f"\nfunnel: {links:,} image links -> {extracted['candidates']:,} candidates -> "
          f"{curated['curated']:,} curated pairs -> {downloaded['kept']:,} images -> "
          f"{deduped['kept']:,} after dedupe -> {sharded['kept']:,} samples balanced last in {sharded['shards']} shards "
          f"({sharded['kept'] / max(links, 1):.1%} of links)")
    train_stats = trained["stats"]
    if train_stats:
        print(f"training: {train_stats['steps_run']} steps of {train_stats['global_batch']} in "
              f"{trained['seconds']:.0f}s ({train_stats['samples_per_s']:,.0f} samples/s), loss "
              f"{train_stats['final_loss']:.3f}; checkpoints and metrics in {out / 'train'}")
    curve = learning_curve(out / "train" / "metrics.jsonl")
    if curve:
        print("zero-shot on the held-out combinations during training (top-1; text->image R@5):")
        print(curve)
    if trained["eval_ok"]:
        print("evaluation of the final model on the held-out combinations (docs/evaluation.md):")
        print(trained["eval_stdout"])
        print(goal(json.loads((out / "eval" / "results.json").read_text())))
        if quick:
            print("  (--quick trains one epoch to show every step working; the goal is the full demo's)")
    print(f"report: {out / report.REPORT_FILE} (open it in a browser)")
    print(f"demo finished in {time.perf_counter() - started:.1f}s under {out}: crawl/, extract/, curate/, download/, "
          f"dedupe/, shards/, train/, eval/ (training shards: {out / 'shards'}, dataset card: "
          f"{out / 'shards' / shard.CARD_FILE})")
