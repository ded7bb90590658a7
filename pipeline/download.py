"""`openwit download`: img2dataset over the CURATED url list, with openwit's guards, fully
accounted.

img2dataset does the fetching, resizing and webdataset writing, with its multiprocessing
distributor on one machine or its pyspark distributor on a Spark cluster
(``--distributor pyspark --spark-master spark://HOST:7077``, one task per shard on the
executors). openwit adds, inside its workers and executors (``pipeline.download_guard``): the address guard on every connection and redirect
hop, capped redirects and bodies, robots.txt per host, a clear user agent, and a
header-only pixel cap before any decode. The input is ordered so that consecutive urls
come from different hosts (round robin over hosts), so no host gets a burst.

Writes under --output:

    shards/NNNNN.tar, NNNNN.parquet, NNNNN_stats.json   finished shards only (published from
                                  _staging/, where img2dataset writes, by atomic hard links)
    downloaded/NNNNN.parquet      DOWNLOADED: every curated row, with status and reason code
    rejects/NNNNN.parquet         REJECT rows for every row that is not a sample
    rejects/unreported.parquet    REJECT rows for curated rows no shard reported (download_error)
    download_stats.json           the ledger: in = kept + sum(rejected by reason)

img2dataset runs in its own process group under a watchdog that ends its known hang at the
end of a job once every shard's stats file exists. Kill the stage at any moment and rerun
it: finished shards are skipped (img2dataset's incremental mode), a killed run's partial
shards are removed from _staging/ and redone (also a shard that a killed run's straggling
worker finished after the rerun removed its partial files), and shards/ never held a
partial file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from schemas import columns as C
from pipeline import netguard
from schemas import fileio
from pipeline.cli import Parser

SUMMARY = "download the curated url list with img2dataset, behind openwit's network guards"
STAGE = schemas.run.DOWNLOAD
STATS_FILE = schemas.run.stage(STAGE).ledger
SUCCESS = "success"
DEFAULT_MAX_DECODE_MIB = 512
REDO_PASSES = 2  # img2dataset reruns for shards left incomplete by a killed run's stragglers

# img2dataset's error messages (and our guards' "<reason>: ..." ones) -> reason codes.
_PATTERNS = [
    (re.compile(r"^(forbidden_address|robots_disallowed|too_large_bytes|too_large_pixels|opted_out|timeout|"
                r"invalid_url|bad_format):"), None),
    (re.compile(r"redirect_loop"), "redirect_loop"),
    (re.compile(r"too_many_redirects"), "too_many_redirects"),
    (re.compile(r"X-Robots-Tag"), "opted_out"),
    (re.compile(r"^HTTP Error (404|410)\b"), "not_found"),
    (re.compile(r"^HTTP Error 5\d\d\b"), "server_error"),
    (re.compile(r"^HTTP Error \d+"), "http_error"),
    (re.compile(r"timed out|timeout", re.IGNORECASE), "timeout"),
    (re.compile(r"IncompleteRead|peer closed|Connection broken", re.IGNORECASE), "truncated"),
    (re.compile(r"^image too small"), "too_small"),
    (re.compile(r"^image area too large|CV_IO_MAX_IMAGE_PIXELS|validateInputImageSize"), "too_large_pixels"),
    (re.compile(r"^aspect ratio too large"), "bad_aspect_ratio"),
    (re.compile(r"decod|cannot identify|unsupported|not an image", re.IGNORECASE), "bad_format"),
    (re.compile(r"refused|reset|unreachable|resolve|Name or service|urlopen error", re.IGNORECASE),
     "connection_error"),
]


def reason_for(status: str, error: str | None) -> str | None:
    """The reason code of an img2dataset row, None for a success."""
    if status == SUCCESS:
        return None
    error = error or ""
    for pattern, reason in _PATTERNS:
        m = pattern.search(error)
        if m:
            return reason or m.group(1)
    return "download_error"


def interleave_by_host(rows: list[dict]) -> list[dict]:
    """Round robin over hosts (in order of first appearance), keeping each host's order."""
    by_host: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_host[urlsplit(row[C.URL]).netloc].append(row)
    queues = list(by_host.values())
    out = []
    depth = 0
    while len(out) < len(rows):
        for q in queues:
            if depth < len(q):
                out.append(q[depth])
        depth += 1
    return out


def _curated_path(path: str) -> str:
    inner = fileio.join(path, "curated")
    return inner if fileio.isdir(inner) else path


SHARD_FILES = ("{}.tar", "{}.parquet", "{}_stats.json")  # img2dataset writes them in this order


def _shard_of(name: str) -> str | None:
    shard = name.split(".")[0].split("_")[0]
    return shard if shard.isdigit() else None


def complete_shards(names) -> set[str]:
    """The shards whose tar, parquet and stats are all among ``names``."""
    names = set(names)
    return {s for s in map(_shard_of, names) if s and all(f.format(s) in names for f in SHARD_FILES)}


def remove_partial_shards(shards: str) -> int:
    """Delete the files of every shard that is not complete (a killed run's leftovers: no
    stats yet, or a stats file whose tar or parquet is gone, which a killed run's straggling
    writer leaves when it finishes a shard after the rerun removed its partial files), and
    img2dataset's _tmp input split: left over, it makes a resumed run look for shard inputs
    under the old numbering and fail. Returns the shards removed."""
    fileio.remove_tree(fileio.join(shards, "_tmp"))
    names = fileio.listdir(shards)
    done = complete_shards(names)
    removed = set()
    for name in sorted(names, key=lambda n: n.endswith("_stats.json")):  # stats last, as they are written
        shard = _shard_of(name)
        if shard and shard not in done:
            fileio.remove(fileio.join(shards, name))
            removed.add(shard)
    return len(removed)


def _parser() -> Parser:
    p = Parser(prog="openwit download", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=False, help="CURATED parquet folder (or a curate --output folder)")
    p.add_argument("--output", required=False, help="output folder")
    p.add_argument("--image-size", type=int, default=256, help="resize to this size (default: 256)")
    p.add_argument("--resize-mode", default="border", choices=("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"),
                   help="img2dataset's resize: border letterboxes to a square, center_crop crops to one, "
                        "keep_ratio* scale a side to --image-size, no keeps the image as fetched")
    p.add_argument("--encode-format", default="jpg", choices=("jpg", "png", "webp"), help="stored image format")
    p.add_argument("--encode-quality", type=int, default=95, help="jpg/webp quality of the stored images (1-100)")
    p.add_argument("--samples-per-shard", type=int, default=10_000, help="samples per webdataset tar")
    p.add_argument("--workers", "--processes", dest="processes", type=int, default=None, metavar="N",
                   help="downloading processes, multiprocessing distributor only (default: one per core)")
    p.add_argument("--distributor", choices=("multiprocessing", "pyspark"), default="multiprocessing",
                   help="img2dataset's distributor: processes on this machine, or Spark tasks (default: "
                        "multiprocessing)")
    p.add_argument("--spark-master", default=None,
                   help="pyspark: the cluster's master URL, e.g. spark://host:7077 (default: local[<cores>])")
    p.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="pyspark: a Spark setting for the job, e.g. spark.executor.memory=4g (repeatable)")
    p.add_argument("--threads", type=int, default=32, help="fetching threads per process (default: 32)")
    p.add_argument("--timeout", type=float, default=10,
                   help="wall-clock seconds per fetch, redirects and body included; robots.txt gets the same "
                        "(default: 10)")
    p.add_argument("--retries", type=int, default=1, help="extra tries of a url that failed with a network error")
    p.add_argument("--min-image-size", type=int, default=16, help="smallest accepted side in pixels (default: 16)")
    p.add_argument("--max-aspect-ratio", type=float, default=float("inf"),
                   help="reject images whose longer side is more than this times the shorter")
    p.add_argument("--max-pixels", type=int, default=64_000_000, help="refuse larger images before decoding")
    p.add_argument("--max-bytes", type=int, default=32 << 20, help="refuse larger bodies (default: 32 MiB)")
    p.add_argument("--max-redirects", type=int, default=5, help="redirects followed per fetch, each hop guarded")
    p.add_argument("--user-agent", default=netguard.DEFAULT_USER_AGENT,
                   help="User-Agent sent, and the agent robots.txt rules are matched for")
    p.add_argument("--no-robots", action="store_true", help="do not honour robots.txt (not recommended)")
    p.add_argument("--allow-private-networks", action="store_true",
                   help="fetch from loopback/private addresses too (tests, private mirrors)")
    p.add_argument("--allow", action="append", default=[],
                   help="an address or network to allow, optionally with a port: 10.0.0.5, 10.0.0.0/8:8080, "
                        "[fd00::1]:443 (repeatable)")
    p.add_argument("--connect-to", action="append", default=[], metavar="HOST:PORT:ADDRESS:PORT",
                   help="send the requests for HOST:PORT to ADDRESS:PORT, keeping the url and the Host header "
                        "(as curl's --connect-to): a mirror, or virtual hosts on loopback. ADDRESS is checked "
                        "like any other: a private one needs --allow too (repeatable)")
    p.add_argument("--proxy", default=None,
                   help="fetch through this http proxy (http://[user:pass@]host:port); every target is still "
                        "checked. The environment's http_proxy/https_proxy are never used")
    p.add_argument("--max-decode-mib", type=int, default=DEFAULT_MAX_DECODE_MIB,
                   help="refuse an image whose decode would take more memory, judged from its header "
                        f"(default: {DEFAULT_MAX_DECODE_MIB})")
    p.add_argument("--max-per-host", type=int, default=8,
                   help="requests in flight per host and process, at most (default: 8; 0: no bound)")
    p.add_argument("--hang-grace", type=float, default=30.0,
                   help="seconds img2dataset may linger once every shard is done before it is ended (default: 30)")
    return p


def publish(staging: str, shards: str) -> int:
    """Publish every shard img2dataset has finished (its tar, parquet and stats exist) into
    ``shards``.

    Each file appears under its final name in one step (a hard link renamed into place on
    a local disk, a server-side copy on object storage), stats last, so ``shards`` never
    holds a partial tar; ``staging`` keeps its files, so img2dataset's incremental mode
    still sees them as done. Returns the shards published.
    """
    if fileio.is_local(shards):
        fileio.makedirs(shards)
    staged = fileio.listdir(staging)
    present = set(fileio.listdir(shards))
    count = 0
    for shard in sorted(complete_shards(staged)):
        names = [f.format(shard) for f in SHARD_FILES]
        if not all(name in present for name in names):
            for name in names:  # stats last: a shard is published once its stats file is
                fileio.publish(fileio.join(staging, name), fileio.join(shards, name))
        count += 1
    return count


def run(argv: list[str]) -> dict:
    args = _parser().parse_args(argv)
    if not args.input or not args.output:
        raise schemas.UserError("--input and --output are required")
    try:
        for entry in args.allow:
            netguard.parse_allow(entry)
        for entry in args.connect_to:
            netguard.parse_connect_to(entry)
        if args.proxy:
            netguard.Proxy.parse(args.proxy)
    except ValueError as e:
        raise schemas.UserError(str(e)) from None
    for name in ("timeout", "max_bytes", "max_pixels", "max_decode_mib"):
        if getattr(args, name) <= 0:
            raise schemas.UserError(f"--{name.replace('_', '-')} must be positive")
    spark = _spark_job(args)
    curated = schemas.read_table(_curated_path(args.input), schemas.CURATED)
    out = args.output
    staging, shards = fileio.join(out, "_staging"), fileio.join(out, "shards")
    if not fileio.is_local(out):
        _check_fsspec(out)
    fileio.makedirs(out)
    rows = interleave_by_host(curated.select([C.URL, C.TEXT, C.UID]).to_pylist())
    with fileio.atomic_local(fileio.join(out, "_input", "urls.parquet")) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    removed = remove_partial_shards(staging)
    expected_shards = max(1, -(-len(rows) // args.samples_per_shard))

    job = {"guard": {"allow": list(args.allow), "allow_private": args.allow_private_networks,
                     "connect_to": list(args.connect_to),
                     "max_redirects": args.max_redirects, "max_bytes": args.max_bytes,
                     "max_pixels": args.max_pixels, "user_agent": args.user_agent,
                     "robots": not args.no_robots, "timeout": args.timeout,
                     "max_per_host": args.max_per_host, "proxy": args.proxy,
                     "max_decode_bytes": args.max_decode_mib << 20, "robots_store": _robots_store(out)},
           "download": dict(
               url_list=fileio.join(out, "_input"), input_format="parquet", url_col=C.URL, caption_col=C.TEXT,
               save_additional_columns=[C.UID], output_folder=staging, output_format="webdataset",
               image_size=args.image_size, resize_mode=args.resize_mode, encode_format=args.encode_format,
               encode_quality=args.encode_quality, number_sample_per_shard=args.samples_per_shard,
               processes_count=args.processes or os.cpu_count() or 1, thread_count=args.threads, timeout=args.timeout,
               retries=args.retries, min_image_size=args.min_image_size,
               max_aspect_ratio=args.max_aspect_ratio,  # json writes inf as Infinity and reads it back
               compute_hash=C.SHA256, user_agent_token=netguard.USER_AGENT_TOKEN, enable_wandb=False,
               incremental_mode="incremental", distributor=args.distributor)}
    if spark:
        job["spark"] = spark
    start = time.perf_counter()
    log = fileio.join(out, schemas.run.DOWNLOAD_LOG)
    with fileio.atomic_local(log) if not fileio.is_local(log) else contextlib.nullcontext(log) as local_log:
        print(f"[download] img2dataset's own output goes to {log}", file=sys.stderr, flush=True)
        status = _run_watched(job, staging, shards, expected_shards, args.hang_grace, local_log)
        # A killed earlier run's straggling worker (a Spark executor outlives its killed driver
        # for a moment) can finish a shard whose partial files this run removed: a stats file
        # with no tar or parquet, which img2dataset's incremental mode then counts as done.
        # Such shards are removed and fetched again.
        for _ in range(REDO_PASSES):
            orphans = remove_partial_shards(staging)
            if not orphans:
                break
            print(f"[download] {orphans} shard(s) left incomplete (a failed shard, or a killed run's straggler "
                  f"finishing a shard this run had removed): fetching them again", file=sys.stderr, flush=True)
            removed += orphans
            status = _run_watched(job, staging, shards, expected_shards, args.hang_grace, local_log)
    seconds = time.perf_counter() - start
    published = publish(staging, shards)
    stats = account(shards, out, curated.num_rows, dict(zip(curated[C.UID].to_pylist(), curated[C.URL].to_pylist())))
    stats.update({"partial_shards_removed": removed, "seconds": round(seconds, 2), "output": out,
                  "shards_expected": expected_shards, "shards_done": published, "img2dataset": status,
                  # what the images are, for the stages after: shard hands it to the trainer, whose export
                  # then preprocesses evaluation images the same way
                  "image_preprocessing": {"image_size": args.image_size, "resize_mode": args.resize_mode}})
    fileio.write_json(fileio.join(out, STATS_FILE), stats)
    return stats


# The environment an executor needs that a driver has: the object store's configuration
# (for an output on s3://) and who may skip the proxy. Spark redacts secrets in its UI.
_EXECUTOR_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "NO_PROXY", "no_proxy")


def _spark_job(args) -> dict | None:
    """The Spark session's settings for --distributor pyspark (None otherwise); the
    flags that belong to the other distributor are refused, not ignored."""
    if args.distributor != "pyspark":
        if args.spark_master or args.spark_conf:
            raise schemas.UserError("--spark-master and --spark-conf apply to --distributor pyspark")
        return None
    if args.processes is not None:
        raise schemas.UserError("--workers applies to --distributor multiprocessing; on Spark the executors' "
                                "cores set the parallelism (--spark-conf spark.executor.cores=N)")
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise schemas.UserError("--distributor pyspark needs pyspark: pip install 'openwit[spark]'") from None
    conf = {"spark.pyspark.python": sys.executable, "spark.ui.showConsoleProgress": "false",
            "spark.task.maxFailures": "1"}  # a failed shard is img2dataset's to retry, not Spark's
    conf.update({f"spark.executorEnv.{k}": v for k in _EXECUTOR_ENV if (v := os.environ.get(k))})
    for entry in args.spark_conf:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise schemas.UserError(f"--spark-conf {entry!r}: expected KEY=VALUE")
        conf[key.strip()] = value
    return {"master": args.spark_master or f"local[{os.cpu_count() or 1}]", "conf": conf}


def _robots_store(out: str) -> str:
    """Where the processes of one run share robots.txt answers: beside the output on a local
    disk; for an output on object storage, a folder of this machine's temp space that is
    the same for every rerun of that output."""
    if fileio.is_local(out):
        return fileio.join(out, "_robots")
    import hashlib
    import tempfile

    return fileio.join(tempfile.gettempdir(), f"openwit-robots-{hashlib.blake2b(out.encode(), digest_size=6).hexdigest()}")


def _check_fsspec(out: str) -> None:
    """img2dataset reads its input and writes its shards through fsspec: an object-store
    output needs fsspec's client for that scheme (s3fs for s3://, gcsfs for gs://)."""
    scheme = out.partition("://")[0]
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as e:
        extra = {"s3": "aws", "s3a": "aws", "gs": "gcp", "gcs": "gcp"}.get(scheme, scheme)
        raise schemas.UserError(f"--output {out}: img2dataset cannot write {scheme}:// here "
                                f"(pip install 'openwit[{extra}]'): {e}") from None


def _run_watched(job: dict, staging: str, shards: str, expected: int, grace: float, log: str) -> str:
    """Run img2dataset in its own process group, its output (progress bars, per-shard
    lines, tracebacks) appended to the file ``log``; publish shards as they finish; end its
    known hang at the end of the job (every shard's stats present, still running after
    ``grace`` seconds) by ending the group. Returns how it ended."""
    cmd = [sys.executable, "-m", "pipeline.download_guard", json.dumps(job)]
    # Same process group as us, and each img2dataset process dies with its parent
    # (download_guard sets that up): a killed stage leaves no orphan writing on.
    with open(log, "ab") as sink:
        child = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    all_done_since = None
    last = -1
    started = time.monotonic()
    try:
        while child.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.5)  # wakes as soon as img2dataset exits
            done = publish(staging, shards)
            if done != last:
                _progress(shards, done, expected, time.monotonic() - started)
                last = done
            if done >= expected:
                all_done_since = all_done_since or time.monotonic()
                if time.monotonic() - all_done_since > grace:
                    _kill_tree(child.pid)
                    child.wait(timeout=30)
                    return "ended by the watchdog after every shard was done"
    except BaseException:
        _kill_tree(child.pid)
        raise
    if child.returncode == 0:
        return "finished"
    return f"exited with status {child.returncode} (its output: {log})"


def _progress(shards: str, done: int, expected: int, elapsed: float) -> None:
    """One line: shards done, images/s, success rate, ETA (from the published stats files)."""
    count = ok = 0
    for stats in (n for n in fileio.listdir(shards) if n.endswith("_stats.json")):
        with contextlib.suppress(OSError, ValueError, schemas.UserError):
            data = fileio.read_json(fileio.join(shards, stats))
            count += data.get("count", 0)
            ok += data.get("successes", 0)
    eta = f"{elapsed / done * (expected - done):.0f}s" if done else "?"
    rate = f"{ok / max(count, 1):.1%}" if count else "-"
    print(f"[download] shards {done}/{expected}  {ok / max(elapsed, 1e-9):,.0f} images/s  success {rate}  "
          f"ETA {eta}", file=sys.stderr, flush=True)


def _kill_tree(pid: int) -> None:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for proc in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def account(shards: str, out: str, expected: int, uids: dict[str, str]) -> dict:
    """DOWNLOADED and REJECT per shard from img2dataset's parquet, REJECT rows for the curated
    rows (``uids``: uid -> url) that no shard reported, and the ledger."""
    rejected: Counter = Counter()
    kept = 0
    seen: set[str] = set()
    for name in (n for n in fileio.listdir(shards) if n.endswith(".parquet")):
        part = fileio.join(shards, name)
        stem = name.removesuffix(".parquet")
        with fileio.open_read(part) as fh:
            table = pq.read_table(fh)
        down, rejects = [], []
        for r in table.to_pylist():
            reason = reason_for(r[C.STATUS], r[C.ERROR_MESSAGE])
            seen.add(r[C.UID])
            down.append({C.UID: r[C.UID], C.URL: r[C.URL], C.TEXT: r[C.CAPTION], C.KEY: r[C.KEY],
                         C.SHARD: stem, C.STATUS: SUCCESS if reason is None else "failed", C.REASON: reason,
                         C.ERROR_MESSAGE: r[C.ERROR_MESSAGE], C.WIDTH: r[C.WIDTH], C.HEIGHT: r[C.HEIGHT],
                         C.ORIGINAL_WIDTH: r[C.ORIGINAL_WIDTH], C.ORIGINAL_HEIGHT: r[C.ORIGINAL_HEIGHT],
                         C.SHA256: r[C.SHA256]})
            if reason is None:
                kept += 1
            else:
                rejected[reason] += 1
                rejects.append({C.STAGE: STAGE, C.REASON: reason, C.DETAIL: (r[C.ERROR_MESSAGE] or "")[:200] or None,
                                C.UID: r[C.UID], C.URL: r[C.URL], C.DUPLICATE_OF: None, C.SOURCE_FILE: name,
                                C.SOURCE_OFFSET: None})
        down.sort(key=lambda d: d[C.KEY])  # img2dataset writes rows in the order its fetches finish
        rejects.sort(key=lambda d: d[C.UID])
        schemas.write_table(pa.Table.from_pylist(down, schema=schemas.DOWNLOADED),
                            fileio.join(out, "downloaded", f"{stem}.parquet"), schemas.DOWNLOADED)
        schemas.write_table(pa.Table.from_pylist(rejects, schema=schemas.REJECT),
                            fileio.join(out, "rejects", f"{stem}.parquet"), schemas.REJECT)
    missing = sorted(set(uids) - seen)
    if missing:  # rows img2dataset never reported: counted and written as rejects, not lost
        rejected["download_error"] += len(missing)
    schemas.write_table(pa.Table.from_pylist(
        [{C.STAGE: STAGE, C.REASON: "download_error", C.DETAIL: "img2dataset reported no row for it", C.UID: uid,
          C.URL: uids[uid], C.DUPLICATE_OF: None, C.SOURCE_FILE: None, C.SOURCE_OFFSET: None} for uid in missing],
        schema=schemas.REJECT), fileio.join(out, "rejects", "unreported.parquet"), schemas.REJECT)
    return {"job": STAGE, "missing_from_img2dataset": len(missing),
            **schemas.run.ledger(STAGE, [schemas.run.step("fetch", expected, kept, rejected)])}


def summary(stats: dict, output: str) -> str:
    lines = [f"download: {stats['in']:,} urls -> {stats['kept']:,} images in {output}/shards "
             f"({stats['kept'] / max(stats['in'], 1):.1%}) in {stats['seconds']:.1f}s "
             f"({stats['in'] / max(stats['seconds'], 1e-9):,.0f} urls/s)"]
    for reason, n in stats["rejected"].items():
        lines.append(f"  rejected {reason:<18} {n:>8,}  {schemas.describe(reason)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    stats = run(argv)
    print(summary(stats, stats["output"]))
    return 0 if stats["ledger_ok"] else 1
