"""Training data from any webdataset, named as open_clip's trainer names it.

``--data`` is an `openwit shard` output folder, or a webdataset spec:

- shard URLs or paths with brace patterns (``shards/{00000..00099}.tar``);
- several sources joined by ``::``;
- a list file (``*.txt``, ``*.paths``, ``*.list``) of one shard per line (``#`` starts a
  comment; relative entries are resolved against the list's folder);
- ``pipe:COMMAND``, whose standard output is the tar;
- object-store URLs (``s3://``, ``gs://``) through openwit's file layer.

When every shard of the spec lies in one folder with a SHARD_INDEX that lists them
(``openwit shard`` output named by pattern), training is sample-exact as with the folder
itself (``trainer.data``). Otherwise the shards are streamed, with these semantics:

- An epoch is ``samples_per_epoch`` samples (open_clip's ``--train-num-samples``), since a
  plain webdataset does not say how many it holds.
- Each epoch permutes the shards, seeded by (seed, epoch). Of ``world × workers`` streams,
  stream ``g`` (rank ``g // workers``, worker ``g % workers``) reads shards ``g, g + G, ...``
  of that order, in sequence.
- Each stream passes its samples through a shuffle buffer of ``shuffle_buffer`` samples,
  seeded by (seed, epoch, stream), and cuts micro-batches. A stream that runs out of
  shards before its share of the epoch reads them again, in a new buffer order. A stream
  with more than its share leaves the rest for a later epoch's order.
- Micro-batch ``j`` of a rank's epoch comes from its stream ``j mod workers``. So the
  sequence is fixed by the seed, the micro batch, the number of ranks and the number of
  data workers. A run resumed with all four the same reads exactly what the uninterrupted
  run reads: each stream skips the samples it had already given, without decoding them.
  A checkpoint is refused for a run that changes any of them.

A shard that cannot be read is reported on stderr and skipped. A sample without an image
or a caption is marked invalid in its batch and counted, as in the indexed path.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import tarfile
from typing import BinaryIO, Iterator

import numpy as np
import torch

import schemas
from schemas import fileio
from trainer import data

LIST_SUFFIXES = (".txt", ".paths", ".list")


def expand(spec: str) -> list[str]:
    """The shard URLs of a webdataset spec, in order; a one-line error for one that names
    nothing or a shard that does not exist."""
    from braceexpand import braceexpand

    out: list[str] = []
    for part in (p.strip() for p in spec.split("::")):
        if not part:
            continue
        for item in braceexpand(part):
            if not item.startswith("pipe:") and item.endswith(LIST_SUFFIXES):
                if not fileio.isfile(item):
                    raise schemas.UserError(f"--data {item}: no such list file")
                base = fileio.dirname(item)
                for line in fileio.read_text(item).splitlines():
                    line = line.strip()
                    if line and not line.startswith("#"):
                        absolute = line.startswith("pipe:") or "://" in line or os.path.isabs(line)
                        out.append(line if absolute else fileio.join(base, line))
            else:
                out.append(item)
    if not out:
        raise schemas.UserError(f"--data {spec}: names no shards")
    missing = _missing([u for u in out if not u.startswith("pipe:")])
    if missing:
        raise schemas.UserError(f"--data: {missing[0]} does not exist ({len(missing)} of {len(out)} shards missing)")
    return out


def _missing(urls: list[str]) -> list[str]:
    """The shards that do not exist, with one listing per folder (not one request per shard)."""
    by_folder: dict[str, set[str]] = {}
    for u in urls:
        by_folder.setdefault(fileio.dirname(u), set()).add(fileio.basename(u))
    present = {folder: set(fileio.listdir(folder)) for folder in by_folder}
    return [u for u in urls if fileio.basename(u) not in present[fileio.dirname(u)]]


def indexed(urls: list[str]) -> tuple[str, set[str]] | None:
    """(folder, shard names) when every shard lies in one folder whose SHARD_INDEX lists
    each of them: then the sample-exact path applies."""
    if any(u.startswith("pipe:") or not u.endswith(".tar") for u in urls):
        return None
    folders = {fileio.dirname(u) for u in urls}
    if len(folders) != 1:
        return None
    folder = folders.pop()
    names = {fileio.basename(u).removesuffix(".tar") for u in urls}
    listed = {n.removesuffix(".parquet") for n in fileio.listdir(fileio.join(folder, data.INDEX_DIR))}
    return (folder, names) if names <= listed else None


def source(spec: str, cache: str | None = None) -> "data.Index | list[str]":
    """The Index of an `openwit shard` folder or of an indexed spec, else the shard list."""
    if "::" not in spec and "{" not in spec and not spec.startswith("pipe:") and fileio.isdir(spec):
        if fileio.isdir(fileio.join(spec, data.INDEX_DIR)):
            return data.Index.load(spec, cache)
        tars = [fileio.join(spec, n) for n in fileio.listdir(spec) if n.endswith(".tar")]
        if not tars:
            raise schemas.UserError(f"--data {spec}: no {data.INDEX_DIR}/ folder and no .tar shards")
        return tars
    urls = expand(spec)
    found = indexed(urls)
    if found:
        return data.Index.load(found[0], cache, only=found[1])
    return urls


# img2dataset's resize mode of the training images -> the evaluation transform that shows a
# model its images the same way (a border resize letterboxes on white)
EVAL_RESIZE_FOR = {"border": "longest"}


def eval_resize_mode(src: "data.Index | list[str]") -> str:
    """The evaluation resize mode matching how the training shards' images were made: read
    from an `openwit shard` folder's ledger (its image_preprocessing, from download);
    'shortest' (open_clip's default) when the shards do not say."""
    if not isinstance(src, data.Index):
        return "shortest"
    ledger = fileio.join(src.folder, schemas.run.stage(schemas.run.SHARD).ledger)
    try:
        made = (fileio.read_json(ledger) if fileio.isfile(ledger) else {}).get("image_preprocessing") or {}
    except (OSError, ValueError):
        made = {}
    return EVAL_RESIZE_FOR.get(made.get("resize_mode", ""), "shortest")


def open_shard(url: str) -> BinaryIO:
    if url.startswith("pipe:"):
        proc = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE)  # noqa: S602 - the user's command
        proc.stdout.process = proc  # type: ignore[attr-defined] - closed and checked by samples()
        return proc.stdout
    return fileio.open_read(url)


def samples(url: str) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(key, image bytes, caption) of each sample of one tar, members grouped by key as
    webdataset groups them (the path up to the first dot of the file name)."""
    fh = open_shard(url)
    complete = False
    try:
        with tarfile.open(fileobj=fh, mode="r|*") as tar:
            key, image, text = None, None, None
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = data.member_key(member.name)
                if k != key:
                    if key is not None:
                        yield key, image, text
                    key, image, text = k, None, None
                if ext in data.IMAGE_EXTS and image is None:
                    image = tar.extractfile(member).read()
                elif ext == "txt":
                    text = tar.extractfile(member).read().decode("utf-8", "replace")
            if key is not None:
                yield key, image, text
        complete = True
    finally:
        proc = getattr(fh, "process", None)
        status = None
        if proc is not None and not complete:
            closed_early = sys.exc_info()[0] is GeneratorExit
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = proc.poll() if closed_early else proc.wait(timeout=2)  # a read error: did it fail?
            if status is None:
                proc.kill()
        fh.close()
        if proc is not None:
            proc.wait()
            if complete:
                status = proc.returncode
            if status and sys.exc_info()[0] is not GeneratorExit:  # a failed command says so, not "empty file"
                raise OSError(f"{url}: the command exited with status {status}")


def rule(world: int, workers: int, buffer: int) -> str:
    return (f"webdataset stream: shards permuted by (seed, epoch), {world} ranks x {workers} workers, "
            f"buffer {buffer}")


class ShardStream(torch.utils.data.IterableDataset):
    """One rank's micro-batches from ``start_step`` to ``plan.total_steps``, streamed from
    plain webdataset shards (the module docstring gives the order)."""

    def __init__(self, shards: list[str], plan: data.Plan, seed: int, rank: int, world: int, micro_batch: int,
                 accumulation: int, start_step: int, image_size: int, crop_scale: tuple[float, float], tokenizer,
                 workers: int, buffer: int, augment: bool = True, grayscale: float = 0.0):
        super().__init__()
        self.shards, self.plan, self.seed, self.rank, self.world = shards, plan, seed, rank, world
        self.micro_batch, self.accumulation, self.start_step = micro_batch, accumulation, start_step
        self.image_size, self.crop_scale, self.tokenizer, self.augment = image_size, crop_scale, tokenizer, augment
        self.grayscale, self.workers, self.buffer = grayscale, max(1, workers), buffer
        if len(shards) < world * self.workers:
            raise schemas.UserError(f"--data: {len(shards)} shard(s) for {world} rank(s) x {self.workers} data "
                                    "worker(s): each reads whole shards, so give at least as many shards, or fewer "
                                    "workers")
        self.rule = rule(world, self.workers, buffer)

    def __len__(self) -> int:
        return (self.plan.total_steps - self.start_step) * self.accumulation

    def _stream(self, epoch: int, v: int) -> Iterator[list]:
        """Virtual stream ``v`` of this rank in ``epoch``: its micro-batches of samples,
        read but not decoded (``encode`` decodes the ones that are trained on)."""
        g = self.rank * self.workers + v
        order = data.Permutation(self.seed, epoch, len(self.shards))(np.arange(len(self.shards)))
        mine = [self.shards[i] for i in order[g::self.world * self.workers]]
        batch: list = []
        for rnd in range(1 << 30):  # a stream short of shards reads them again
            rng = random.Random(schemas.ids.hash64(schemas.ids.PERMUTE, self.seed, epoch, "stream", g, rnd))
            pool: list = []
            got_any = False
            for url in mine:
                try:
                    for sample in samples(url):
                        got_any = True
                        if len(pool) < self.buffer:
                            pool.append(sample)
                            continue
                        i = rng.randrange(len(pool))
                        pool[i], sample = sample, pool[i]
                        batch.append(sample)
                        if len(batch) == self.micro_batch:
                            yield batch
                            batch = []
                except Exception as e:  # noqa: BLE001 - an unreadable shard is skipped, said once
                    print(f"[data] {url}: cannot be read ({type(e).__name__}: {str(e)[:200]}); skipped",
                          file=sys.stderr, flush=True)
            rng.shuffle(pool)
            for sample in pool:
                batch.append(sample)
                if len(batch) == self.micro_batch:
                    yield batch
                    batch = []
            if not got_any:
                raise schemas.UserError(f"--data: no readable sample in the {len(mine)} shard(s) of stream {g}")

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, workers = (info.id, info.num_workers) if info else (0, 1)
        if workers != self.workers:
            raise RuntimeError(f"ShardStream built for {self.workers} data workers, run with {workers}")
        per_epoch = self.plan.steps_per_epoch * self.accumulation  # micro-batches of one rank
        first = self.start_step * self.accumulation
        current, stream = None, None
        for m in range(w, len(self), workers):
            absolute = first + m
            step, micro = divmod(absolute, self.accumulation)
            epoch, j = divmod(absolute, per_epoch)
            if epoch != current:
                v = j % workers  # constant for this worker within the epoch
                start = max(0, first - epoch * per_epoch)  # the resumed epoch: micro-batches already trained
                skip = len(range(v, start, workers))
                stream = self._stream(epoch, v)
                for _ in range(skip):
                    next(stream)
                current = epoch
            yield data.encode(self, next(stream), epoch, step, micro)
