"""`openwit score` (Beam): the image-text similarity of every sample under a CLIP model,
and the filter on it (DataComp's CLIP score; a data filtering network is the same step
with a model trained for filtering).

    openwit score --keep DEDUPE_OUT --images DOWNLOAD_OUT --model MODEL --output DIR
                  [--keep-top FRACTION | --min-score S] [--device cpu|cuda[:N]] [--batch-size 64]
    openwit score --images DOWNLOAD_OUT --model MODEL --output DIR      (every downloaded sample)

MODEL is an `openwit export` folder (or any folder with open_clip_config.json and
open_clip_model.safetensors: open_clip's ``local-dir:`` format), or an open_clip
architecture name with --checkpoint FILE. Nothing is downloaded.

Steps (each sample leaves at the first step that rejects it):

1. score   per downloaded tar, streamed once: the image through the model's own
           preprocessing, the caption (the tar's .txt) through its tokenizer, in batches of
           --batch-size in the tar's order (so a sample's batch, and its score, do not depend
           on the worker count; memory holds one batch);
           the score is the cosine of the two embeddings. An image that does not decode is
           corrupt_sample; a sample whose image or caption is not in the tar is missing_sample.
2. filter  --min-score S keeps score >= S. --keep-top F keeps the round(F x n) samples of
           highest score, exactly: the threshold is found by a radix select over (score, uid)
           in four counting passes of 16 bits (memory: 65,536 counters, whatever n), so ties
           are broken by uid and no sample is sorted or gathered in one place. The others
           are low_clip_score. Without either flag every scored sample is kept.

Outputs under --output: scores/part-*.parquet (SCORES: every scored sample, kept or not),
keep/part-*.parquet (with --keep: the kept samples' KEEP rows, so `openwit shard --keep`
takes this folder and carries each sample's score into SHARD_INDEX), rejects/, and
score_stats.json (the ledger, the threshold, the model and a histogram of the scores).

On CPU each worker runs torch with --threads threads (default 1: one worker per core is
the parallelism); on a GPU run one worker (--direct_num_workers=1 locally) per device.
"""

from __future__ import annotations

import argparse
import io
import math
import struct
import time
from collections import Counter
from typing import Iterable, Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

import schemas
from schemas import columns as C
from schemas import fileio
from pipeline import options, outputs, progress, tario
from pipeline.imagehashes import IMAGE_EXTENSIONS

SUMMARY = "score every sample's image-text similarity with a CLIP model, and keep the best (Beam)"
STAGE = schemas.run.SCORE
STEPS = ("score", "filter")
STATS_FILE = schemas.run.stage(STAGE).ledger
SCORES_DIR, KEEP_DIR, REJECTS_DIR = "scores", "keep", "rejects"
CONFIG_FILE = "open_clip_config.json"
TEXT_EXT = "txt"
SUCCESS = "success"
HIST_BINS = 200  # the score histogram in the ledger: bins of 0.01 over [-1, 1]
DIGIT_BITS = 16


def _counter(name: str) -> Metrics.DelegatingCounter:
    return Metrics.counter(f"openwit.{STAGE}", name)


def reject_row(uid: str, shard: str, reason: str, detail: str, url: str | None = None) -> dict:
    return {C.STAGE: STAGE, C.REASON: reason, C.DETAIL: detail, C.UID: uid, C.URL: url,
            C.DUPLICATE_OF: None, C.SOURCE_FILE: f"{shard}.tar", C.SOURCE_OFFSET: None}


# -- the model -----------------------------------------------------------------------------

class ScoringModel:
    """An open_clip model, its preprocessing and tokenizer, on one device, in eval mode."""

    def __init__(self, model: str, checkpoint: str | None, device: str, threads: int):
        import torch

        if device == "cpu":
            torch.set_num_threads(threads)
        self.torch, self.device = torch, device
        self._local = None
        self.model, self.preprocess, self.tokenizer = self._load(model, checkpoint)
        self.model.eval()

    def _load(self, model: str, checkpoint: str | None):
        import open_clip

        if checkpoint is None:
            folder = self._local_folder(model)
            name = f"{open_clip.factory.LOCAL_DIR_PREFIX}{folder}"
            net, _, preprocess = open_clip.create_model_and_transforms(name, device=self.device)
            return net, preprocess, open_clip.get_tokenizer(name)
        local = self._local_file(checkpoint)
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=local, device=self.device)
        return net, preprocess, open_clip.get_tokenizer(model)

    def _local_folder(self, folder: str) -> str:
        """A model folder on an object store is copied to a local temp folder first."""
        if "://" not in folder:
            return folder
        import tempfile

        self._local = tempfile.TemporaryDirectory(prefix="openwit-model-")
        for name in fileio.listdir(folder):
            with fileio.open_read(fileio.join(folder, name)) as src, open(f"{self._local.name}/{name}", "wb") as dst:
                dst.write(src.read())
        return self._local.name

    def _local_file(self, path: str) -> str:
        if "://" not in path:
            return path
        import tempfile

        self._local = tempfile.TemporaryDirectory(prefix="openwit-model-")
        local = f"{self._local.name}/{fileio.basename(path)}"
        with fileio.open_read(path) as src, open(local, "wb") as dst:
            dst.write(src.read())
        return local

    def image_tensor(self, data: bytes):
        """The model's input for one image; ValueError when the bytes do not decode."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (1024, 1024))
                return self.preprocess(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ValueError(f"image does not decode: {e}"[:200]) from None

    def scores(self, images: list, texts: list[str]) -> list[float]:
        torch = self.torch
        with torch.inference_mode():
            x = torch.stack(images).to(self.device)
            t = self.tokenizer(texts).to(self.device)
            a = self.model.encode_image(x, normalize=True).float()
            b = self.model.encode_text(t, normalize=True).float()
            return (a * b).sum(dim=-1).cpu().tolist()


def check_model(model: str, checkpoint: str | None) -> None:
    """One-line errors for a model that cannot be loaded, before any worker starts."""
    if checkpoint is None:
        if not fileio.isdir(model):
            raise schemas.UserError(f"--model {model}: not a model folder (an `openwit export` folder); for an "
                                    "open_clip architecture name, give its weights with --checkpoint FILE")
        if not fileio.exists(fileio.join(model, CONFIG_FILE)):
            raise schemas.UserError(f"--model {model}: no {CONFIG_FILE} in this folder (is it an `openwit export` "
                                    "folder?)")
        return
    import open_clip

    if open_clip.get_model_config(model) is None:
        raise schemas.UserError(f"--model {model}: not an open_clip architecture name (see open_clip.list_models())")
    if not fileio.isfile(checkpoint):
        raise schemas.UserError(f"--checkpoint {checkpoint}: no such file")


# -- 1. score ------------------------------------------------------------------------------

class ScoreShardFn(beam.DoFn):
    """(shard, tar path, rows with uid and key) -> SCORES rows (each with its input row under
    '_row'); rejects tagged 'rejects'."""

    def __init__(self, model: str, checkpoint: str | None, device: str, threads: int, batch: int):
        self.model_path, self.checkpoint, self.device = model, checkpoint, device
        self.threads, self.batch = threads, batch
        self.model: ScoringModel | None = None

    def setup(self) -> None:
        self.model = ScoringModel(self.model_path, self.checkpoint, self.device, self.threads)

    def process(self, job: tuple[str, str, list[dict]]) -> Iterator:
        """Streams the tar: a sample goes into the batch as soon as both its image and its
        text have been read (img2dataset writes them next to each other), so memory holds
        one batch, not one tar."""
        shard, tar_path, rows = job
        by_key = {r[C.KEY]: r for r in rows}
        images: dict[str, bytes] = {}
        texts: dict[str, str] = {}
        done: set[str] = set()
        counts: Counter = Counter()
        batch: list[tuple[dict, object, str]] = []

        def want(name: str) -> bool:
            key, _, ext = name.rpartition("/")[2].partition(".")
            ext = ext.lower()
            return key in by_key and key not in done and ((ext in IMAGE_EXTENSIONS and key not in images) or
                                                          (ext == TEXT_EXT and key not in texts))

        errors: list[str] = []
        if fileio.exists(tar_path):
            with fileio.open_read(tar_path) as fh:
                for key, ext, data in tario.wanted_samples(fh, want, errors):
                    if ext == TEXT_EXT:
                        texts[key] = data.decode("utf-8", "replace")
                    else:
                        images[key] = data
                    if key not in images or key not in texts:
                        continue
                    done.add(key)
                    row, image, text = by_key[key], images.pop(key), texts.pop(key)
                    try:
                        tensor = self.model.image_tensor(image)
                    except ValueError as e:
                        counts["score:corrupt_sample"] += 1
                        yield beam.pvalue.TaggedOutput("rejects", reject_row(row[C.UID], shard, "corrupt_sample",
                                                                             str(e), row.get(C.URL)))
                        continue
                    batch.append((row, tensor, text))
                    if len(batch) == self.batch:
                        yield from self._flush(shard, batch, counts)
                        batch = []
        if batch:
            yield from self._flush(shard, batch, counts)
        broken = f" ({fileio.basename(tar_path)} is unreadable past this point: {errors[0]})" if errors else ""
        for key in sorted(set(by_key) - done):
            row = by_key[key]
            what = "image" if key not in images else "text (.txt)"
            counts["score:missing_sample"] += 1
            yield beam.pvalue.TaggedOutput("rejects", reject_row(
                row[C.UID], shard, "missing_sample", f"no {what} for key {key}{broken}"[:300], row.get(C.URL)))
        for name, n in counts.items():
            _counter(name).inc(n)
        progress.tick("tars", len(rows))

    def _flush(self, shard: str, batch: list, counts: Counter) -> Iterator[dict]:
        values = self.model.scores([t for _, t, _ in batch], [s for _, _, s in batch])
        for (row, _, _), value in zip(batch, values):
            if not math.isfinite(value):
                raise RuntimeError(f"the model gave a score of {value} for {row[C.UID]} in {shard}.tar: "
                                   "its weights are broken")
            counts["score:kept"] += 1
            yield {C.UID: row[C.UID], C.SHARD: shard, C.KEY: row[C.KEY], C.CLIP_SCORE: value, "_row": row}


# -- 2. filter: an exact top fraction by radix select --------------------------------------

def order_key(score: float, uid: str) -> int:
    """A 64-bit key that sorts as (float32 score, uid's first 32 bits): the float's bits
    made order-preserving as an unsigned integer, then the uid as the tie-break."""
    bits = struct.unpack(">I", struct.pack(">f", score))[0]
    bits = (~bits & 0xFFFFFFFF) if bits & 0x80000000 else bits | 0x80000000
    return bits << 32 | int(uid[:8], 16)


def first_state(n: int, fraction: float) -> tuple[int, int, int]:
    """(prefix, bits still open, rank of the threshold among the keys with that prefix)."""
    return 0, 64, keep_count(n, fraction)


def keep_count(n: int, fraction: float) -> int:
    return int(math.floor(fraction * n + 0.5))


def digit_of(key: int, state: tuple[int, int, int]) -> Iterator[int]:
    prefix, open_bits, k = state
    if 0 < k and open_bits and key >> open_bits == prefix:
        yield (key >> (open_bits - DIGIT_BITS)) & 0xFFFF


def next_state(state: tuple[int, int, int], histogram: list[tuple[int, int]]) -> tuple[int, int, int]:
    """Fix the next 16 bits of the k-th largest key: walk the digits from the top."""
    prefix, open_bits, k = state
    if k <= 0 or not open_bits:
        return state
    for digit, count in sorted(histogram, reverse=True):
        if count >= k:
            return prefix << DIGIT_BITS | digit, open_bits - DIGIT_BITS, k
        k -= count
    raise AssertionError("the rank is larger than the keys counted")


def threshold_of(state: tuple[int, int, int]) -> int | None:
    """The k-th largest key (keep every key >= it); None when nothing is kept."""
    prefix, open_bits, k = state
    return None if k <= 0 else prefix


def histogram_bin(score: float) -> int:
    return min(HIST_BINS - 1, max(0, int((score + 1.0) * HIST_BINS / 2)))


class FilterFn(beam.DoFn):
    """A scored sample -> kept (its SCORES row; its KEEP row tagged 'keep') or low_clip_score."""

    def __init__(self, mode: str, min_score: float | None):
        self.mode, self.min_score = mode, min_score

    def process(self, item: dict, threshold: int | None) -> Iterator:
        score = item[C.CLIP_SCORE]
        if self.mode == "min":
            ok, detail = score >= self.min_score, f"score {score:.6f} < --min-score {self.min_score:g}"
        elif self.mode == "top":
            ok = threshold is not None and order_key(score, item[C.UID]) >= threshold
            detail = f"score {score:.6f}: outside --keep-top"
        else:
            ok, detail = True, ""
        row = item.pop("_row")
        yield beam.pvalue.TaggedOutput("scores", item)
        if ok:
            _counter("filter:kept").inc()
            yield beam.pvalue.TaggedOutput("keep", row)
        else:
            _counter("filter:low_clip_score").inc()
            yield beam.pvalue.TaggedOutput("rejects", reject_row(item[C.UID], item[C.SHARD], "low_clip_score", detail,
                                                                 row.get(C.URL)))


def merge_bins(parts: Iterable[dict]) -> dict:
    out: Counter = Counter()
    for p in parts:
        out.update(p)
    return dict(out)


# -- inputs --------------------------------------------------------------------------------

def keep_jobs(keep_files: list[str], source_tars: dict[str, str]):
    """KEEP files -> (shard, [KEEP rows]) -> (shard, tar, rows): a Beam transform's pieces."""
    def rows(path: str) -> Iterator[tuple[str, dict]]:
        for r in schemas.read_table(path, schemas.KEEP).to_pylist():
            yield r[C.SHARD], r

    def job(group: tuple[str, Iterable[dict]]) -> tuple[str, str, list[dict]]:
        shard, items = group
        path = source_tars.get(shard)
        if path is None:
            raise RuntimeError(f"the keep set names downloaded shard {shard}.tar, which --images does not hold; "
                               "give score the download folder dedupe read")
        return shard, path, sorted(items, key=lambda r: r[C.KEY])
    return rows, job


def downloaded_job(item: tuple[str, str, str]) -> tuple[str, str, list[dict]]:
    shard, tar_path, table_path = item
    table = schemas.read_table(table_path, schemas.DOWNLOADED)
    rows = [{C.UID: r[C.UID], C.KEY: r[C.KEY], C.URL: r[C.URL]} for r in table.to_pylist() if r[C.STATUS] == SUCCESS]
    return shard, tar_path, rows


def download_shards(download: str) -> tuple[list[tuple[str, str, str]], int]:
    """(shard, tar, DOWNLOADED parquet) per downloaded shard, and the count of successes."""
    shards, downloaded = fileio.join(download, "shards"), fileio.join(download, "downloaded")
    if not fileio.exists(downloaded):
        raise schemas.UserError(f"--images {download}: no downloaded/ folder (run openwit download first)")
    jobs, total = [], 0
    for table_path in sorted(fileio.expand_inputs([fileio.join(downloaded, "*.parquet")])):
        name = fileio.basename(table_path).removesuffix(".parquet")
        with fileio.open_read(table_path) as fh:
            pf = pq.ParquetFile(fh)
            schemas.check_metadata(pf.schema_arrow, schemas.DOWNLOADED, table_path)
            total += sum(s == SUCCESS for s in pf.read(columns=[C.STATUS]).column(C.STATUS).to_pylist())
        jobs.append((name, fileio.join(shards, f"{name}.tar"), table_path))
    if not jobs:
        raise schemas.UserError(f"--images {download}: downloaded/ holds no parquet files")
    return jobs, total


def _keep_files(keep: str) -> tuple[list[str], int]:
    inner = fileio.join(keep, KEEP_DIR)
    folder = inner if fileio.exists(inner) else keep
    try:
        files = schemas.parquet_files(folder)
    except schemas.SchemaError as e:
        raise schemas.UserError(f"--keep {keep}: {e}") from None
    rows = 0
    for f in files:
        with fileio.open_read(f) as fh:
            pf = pq.ParquetFile(fh)
            schemas.check_metadata(pf.schema_arrow, schemas.KEEP, f)
            rows += pf.metadata.num_rows
    return files, rows


# -- the job -------------------------------------------------------------------------------

def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", default=None,
                        help="a dedupe --output folder (or its keep/ folder): the samples to score; without it, "
                        "every downloaded sample of --images is scored (no filtering then)")
    parser.add_argument("--images", default=None, help="the download --output folder holding the images")
    parser.add_argument("--model", default=None,
                        help="an `openwit export` folder (open_clip's local-dir format), or an open_clip "
                        "architecture name with --checkpoint")
    parser.add_argument("--checkpoint", default=None, help="with an architecture name: its weights file on disk")
    parser.add_argument("--output", default=None, help="output folder (scores/, keep/, rejects/, score_stats.json)")
    parser.add_argument("--keep-top", type=float, default=None,
                        help="keep this fraction of the samples, those of highest score (DataComp: 0.3)")
    parser.add_argument("--min-score", type=float, default=None, help="keep the samples whose score is at least this")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per forward pass (default: 64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker on CPU (default: 1; locally one worker runs per core)")


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise schemas.UserError(f"--device {device}: expected cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise schemas.UserError(f"--device {device}: torch sees no CUDA device on this machine")
    index = int(device[5:]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise schemas.UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def build(p: beam.Pipeline, args: argparse.Namespace, keep_files: list[str], source_tars: dict[str, str],
          download_jobs: list, n: int) -> None:
    if keep_files:
        rows, job = keep_jobs(keep_files, source_tars)
        jobs = (p | "KeepFiles" >> beam.Create(keep_files)
                | "SpreadKeep" >> beam.Reshuffle()
                | "KeepRows" >> beam.FlatMap(rows)
                | "ByShard" >> beam.GroupByKey()
                | "Jobs" >> beam.Map(job))
    else:
        jobs = (p | "Shards" >> beam.Create(download_jobs)
                | "SpreadShards" >> beam.Reshuffle()
                | "Jobs" >> beam.Map(downloaded_job))
    scored = (jobs
              | "SpreadJobs" >> beam.Reshuffle()
              | "Score" >> beam.ParDo(ScoreShardFn(args.model, args.checkpoint, args.device, args.threads,
                                                   args.batch_size)).with_outputs("rejects", main="scored"))
    items = scored["scored"]
    mode = "top" if args.keep_top is not None else "min" if args.min_score is not None else "all"
    if mode == "top":
        keys = items | "OrderKeys" >> beam.Map(lambda it: order_key(it[C.CLIP_SCORE], it[C.UID]))
        count = keys | "CountScored" >> beam.combiners.Count.Globally()
        state = count | "FirstState" >> beam.Map(first_state, args.keep_top)
        for i in range(64 // DIGIT_BITS):
            hist = (keys
                    | f"Digit{i}" >> beam.FlatMap(digit_of, state=beam.pvalue.AsSingleton(state))
                    | f"CountDigits{i}" >> beam.combiners.Count.PerElement())
            state = state | f"Select{i}" >> beam.Map(next_state, histogram=beam.pvalue.AsList(hist))
        threshold = state | "Threshold" >> beam.Map(threshold_of)
    else:
        threshold = p | "NoThreshold" >> beam.Create([None])
    (threshold | "WriteThreshold" >> beam.Map(
        lambda k, out: fileio.write_json(fileio.join(out, "_threshold.json"), {"order_key": k}), args.output))
    (items
     | "Bins" >> beam.Map(lambda it: {histogram_bin(it[C.CLIP_SCORE]): 1})
     | "Histogram" >> beam.CombineGlobally(merge_bins)
     | "WriteHistogram" >> beam.Map(lambda h, out: fileio.write_json(fileio.join(out, "_histogram.json"),
                                                                     {str(k): v for k, v in sorted(h.items())}),
                                    args.output))
    filtered = (items | "Filter" >> beam.ParDo(FilterFn(mode, args.min_score), threshold=beam.pvalue.AsSingleton(threshold))
                .with_outputs("scores", "keep", "rejects"))
    (filtered["scores"]
     | "WriteScores" >> outputs.WriteSortedShards(fileio.join(args.output, SCORES_DIR), schemas.SCORES,
                                                  key=lambda r: r[C.UID], sort_key=lambda r: r[C.UID],
                                                  rows_per_file=20_000_000))
    if keep_files:
        (filtered["keep"]
         | "WriteKeep" >> outputs.WriteSortedShards(fileio.join(args.output, KEEP_DIR), schemas.KEEP,
                                                    key=lambda r: r[C.UID], sort_key=lambda r: r[C.UID],
                                                    rows_per_file=5_000_000))
    ((scored["rejects"], filtered["rejects"])
     | "AllRejects" >> beam.Flatten()
     | "WriteRejects" >> outputs.WriteSortedShards(fileio.join(args.output, REJECTS_DIR), schemas.REJECT,
                                                   key=lambda r: r[C.UID], sort_key=lambda r: (r[C.UID], r[C.REASON]),
                                                   rows_per_file=5_000_000))


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("images", "model", "output"):
        if not getattr(args, flag):
            raise schemas.UserError(f"--{flag} is required")
    if args.keep_top is not None and args.min_score is not None:
        raise schemas.UserError("--keep-top and --min-score both choose what to keep: give one")
    if args.keep_top is not None and not 0 < args.keep_top <= 1:
        raise schemas.UserError(f"--keep-top {args.keep_top:g}: a fraction in (0, 1]")
    if args.min_score is not None and not -1 <= args.min_score <= 1:
        raise schemas.UserError(f"--min-score {args.min_score:g}: a cosine similarity lies in [-1, 1]")
    if (args.keep_top is not None or args.min_score is not None) and not args.keep:
        raise schemas.UserError("--keep-top and --min-score filter a keep set: give --keep (a dedupe output), "
                                "which `openwit shard` then reads from this output")
    if args.batch_size <= 0 or args.threads <= 0:
        raise schemas.UserError("--batch-size and --threads must be positive")
    _check_device(args.device)
    check_model(args.model, args.checkpoint)
    try:  # once here, so that weights that do not load are one line, not a worker's traceback
        ScoringModel(args.model, args.checkpoint, "cpu", 1)
    except Exception as e:  # noqa: BLE001 - safetensors, torch and open_clip each raise their own
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = " ".join(lines[:2])[:300] if lines else type(e).__name__
        raise schemas.UserError(f"--model {args.model}: the model does not load ({first})") from None


def quantile(histogram: dict[int, int], q: float) -> float | None:
    """The upper edge of the histogram bin holding the q-quantile (0.01 resolution)."""
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if seen >= q * total:
            return round(-1.0 + (b + 1) * 2 / HIST_BINS, 4)
    return 1.0


def run(argv: list[str] | None = None) -> dict:
    argv = list(argv or [])
    args, beam_options = options.parse("openwit score", __doc__.split("\n\n")[0], add_args, argv)
    _check_args(args)
    keep_files, download_jobs = [], []
    if args.keep:
        keep_files, n = _keep_files(args.keep)
        shards_dir = fileio.join(args.images, "shards")
        if not fileio.exists(shards_dir):
            raise schemas.UserError(f"--images {args.images}: no shards/ folder (run openwit download first)")
        source_tars = {fileio.basename(t).removesuffix(".tar"): t
                       for t in fileio.expand_inputs([fileio.join(shards_dir, "*.tar")])} if n else {}
        units = len(source_tars)
    else:
        download_jobs, n = download_shards(args.images)
        source_tars, units = {}, len(download_jobs)
    fileio.makedirs(args.output)
    if fileio.exists(fileio.join(args.output, STATS_FILE)):  # a partial rerun must not look complete
        fileio.remove(fileio.join(args.output, STATS_FILE))
    start = time.perf_counter()
    p = beam.Pipeline(options=beam_options)
    build(p, args, keep_files, source_tars, download_jobs, n)
    counters = options.run_counted(p, beam_options, f"openwit.{STAGE}", {"tars": units}, "samples")
    steps = schemas.run.steps_from_counters(counters, STEPS, n)
    histogram = {int(k): v for k, v in fileio.read_json(fileio.join(args.output, "_histogram.json")).items()} \
        if fileio.exists(fileio.join(args.output, "_histogram.json")) else {}
    key = fileio.read_json(fileio.join(args.output, "_threshold.json"))["order_key"]
    for name in ("_histogram.json", "_threshold.json"):
        fileio.remove(fileio.join(args.output, name))
    threshold = None
    if args.min_score is not None:
        threshold = args.min_score
    elif key is not None:
        threshold = struct.unpack(">f", struct.pack(">I", _float_bits(key >> 32)))[0]
    scored = steps[0]["kept"]
    stats = {"job": STAGE, "keep": args.keep, "images": args.images, "model": args.model,
             "checkpoint": args.checkpoint, "device": args.device, "batch_size": args.batch_size,
             "keep_top": args.keep_top, "min_score": args.min_score,
             "threshold": threshold, "keep_count": keep_count(scored, args.keep_top) if args.keep_top else None,
             "score_quantiles": {str(q): quantile(histogram, q) for q in (0.1, 0.3, 0.5, 0.7, 0.9)},
             "histogram": {f"{-1 + b * 2 / HIST_BINS:.2f}": v for b, v in sorted(histogram.items())},
             "command": "openwit score " + " ".join(argv), "schema_version": schemas.SCHEMA_VERSION,
             **schemas.run.ledger(STAGE, steps)}
    fileio.write_json(fileio.join(args.output, STATS_FILE), stats)
    return {**stats, "seconds": round(time.perf_counter() - start, 2), "output": args.output}


def _float_bits(ordered: int) -> int:
    """Undo order_key's mapping of a float's bits."""
    return ordered & 0x7FFFFFFF if ordered & 0x80000000 else ~ordered & 0xFFFFFFFF


def summary(stats: dict) -> str:
    if stats["keep_top"]:
        how = f"top {stats['keep_top']:g}, " + (f"threshold {stats['threshold']:.4f}" if stats["threshold"] is not None
                                               else "which rounds to no sample")
    else:
        how = f"score >= {stats['min_score']:g}" if stats["min_score"] is not None else "no filter"
    lines = [f"score: {stats['in']:,} samples -> {stats['kept']:,} kept ({how}) in {stats['output']}",
             "  score quantiles: " + ", ".join(f"{q}: {v:.2f}" for q, v in stats["score_quantiles"].items()
                                               if v is not None)]
    lines += options.ledger_lines(stats["steps"], 6, 16)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    return options.job_main(run, summary, STATS_FILE, argv)
