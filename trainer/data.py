"""Training data from `openwit shard` output, deterministic down to the sample.

The SHARD_INDEX manifest gives every sample's tar and byte range, so samples are read by
position rather than by streaming shards. Each epoch is a permutation of all samples drawn
from (seed, epoch); global step ``s`` of the epoch takes the next ``global batch`` of it,
and within that, accumulation micro-batch ``a`` of rank ``r`` takes the slice
``(a * world + r) * micro_batch``. So the sequence of samples depends only on the seed and
the global batch, not on the number of data workers, and a run resumed at step ``s``
reads exactly what an uninterrupted run reads from step ``s`` on. Every rank runs the same
number of steps (the last partial global batch of an epoch is dropped).

Decoding, the random resized crop (scale ``crop_scale``) and the optional greyscale
(probability ``grayscale``), both drawn from (seed, epoch, uid) so augmentation repeats
exactly on resume, and tokenisation run in DataLoader workers; worker
``w`` of ``W`` builds micro-batches ``w, w + W, ...``, which the DataLoader hands out in
order. A sample that cannot be read or decoded is marked invalid in its batch (the loss
leaves it out) and counted, never a crash.
"""

from __future__ import annotations

import io
import math
import random
import tarfile
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

import schemas
from schemas import fileio
from schemas import columns as C

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation (open_clip's default)
STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
INDEX_DIR = "index"
MAX_OPEN_TARS = 64  # per data worker; the least recently read is closed first


@dataclass
class Index:
    folder: str
    uids: list[str]
    tars: list[str]
    offsets: np.ndarray
    sizes: np.ndarray

    @classmethod
    def load(cls, folder: str) -> "Index":
        path = fileio.join(folder, INDEX_DIR)
        if not fileio.isdir(path):
            raise schemas.UserError(f"--data {folder}: no {INDEX_DIR}/ folder (not an `openwit shard` output)")
        table = schemas.read_table(path, schemas.SHARD_INDEX).select(
            [C.UID, C.SHARD, C.SHARD_POSITION, C.TAR_OFFSET, C.TAR_BYTES]).sort_by([(C.SHARD, "ascending"),
                                                                                  (C.SHARD_POSITION, "ascending")])
        if table.num_rows == 0:
            raise schemas.UserError(f"--data {folder}: the shard index lists no samples")
        return cls(folder, table[C.UID].to_pylist(), [f"{s}.tar" for s in table[C.SHARD].to_pylist()],
                   table[C.TAR_OFFSET].to_numpy(), table[C.TAR_BYTES].to_numpy())

    def __len__(self) -> int:
        return len(self.uids)


@dataclass
class Plan:
    samples: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def make(cls, samples: int, global_batch: int, epochs: float, steps: int) -> "Plan":
        per_epoch = samples // global_batch
        if per_epoch == 0:
            raise schemas.UserError(f"the data holds {samples:,} samples, fewer than one global batch of "
                                    f"{global_batch:,}: lower micro_batch or accumulation")
        return cls(samples, global_batch, per_epoch, steps or max(1, math.ceil(epochs * per_epoch)))


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x6F77]).permutation(n)


def micro_batch_positions(plan: Plan, seed: int, step: int, micro: int, rank: int, world: int,
                          micro_batch: int, cache: dict) -> np.ndarray:
    """Index positions of one rank's micro-batch at a global step."""
    epoch, s = divmod(step, plan.steps_per_epoch)
    if cache.get("epoch") != epoch:
        cache.update(epoch=epoch, perm=permutation(seed, epoch, plan.samples))
    start = s * plan.global_batch + (micro * world + rank) * micro_batch
    return cache["perm"][start:start + micro_batch]


def _draw(seed: int, epoch: int, uid: str) -> random.Random:
    return random.Random(schemas.ids.hash64(schemas.ids.AUGMENT, seed, epoch, uid))


def random_resized_crop(img: Image.Image, size: int, scale: tuple[float, float], rng: random.Random) -> Image.Image:
    """torchvision's RandomResizedCrop (ratio 3/4..4/3), its draws taken from ``rng``."""
    w, h = img.size
    area = w * h
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
            return TF.resized_crop(img, top, left, ch, cw, [size, size], antialias=True)
    side = min(w, h)  # fallback: centre crop
    return TF.resized_crop(img, (h - side) // 2, (w - side) // 2, side, side, [size, size], antialias=True)


class RankStream(torch.utils.data.IterableDataset):
    """The micro-batches of one rank from ``start_step`` to ``plan.total_steps``."""

    def __init__(self, index: Index, plan: Plan, seed: int, rank: int, world: int, micro_batch: int,
                 accumulation: int, start_step: int, image_size: int, crop_scale: tuple[float, float],
                 tokenizer, augment: bool = True, grayscale: float = 0.0):
        super().__init__()
        self.index, self.plan, self.seed, self.rank, self.world = index, plan, seed, rank, world
        self.micro_batch, self.accumulation, self.start_step = micro_batch, accumulation, start_step
        self.image_size, self.crop_scale, self.tokenizer, self.augment = image_size, crop_scale, tokenizer, augment
        self.grayscale = grayscale
        self._files: OrderedDict[str, object] = OrderedDict()  # least recently read first

    def __len__(self) -> int:
        return (self.plan.total_steps - self.start_step) * self.accumulation

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, workers = (info.id, info.num_workers) if info else (0, 1)
        cache: dict = {}
        for m in range(w, len(self), workers):
            step = self.start_step + m // self.accumulation
            micro = m % self.accumulation
            pos = micro_batch_positions(self.plan, self.seed, step, micro, self.rank, self.world,
                                        self.micro_batch, cache)
            yield self.batch(pos, step // self.plan.steps_per_epoch, step, micro)

    def read(self, i: int) -> tuple[bytes, str]:
        tar = self.index.tars[i]
        fh = self._files.get(tar)
        if fh is None:
            if len(self._files) >= MAX_OPEN_TARS:  # 40k shards at 400M: past any file-handle limit
                self._files.popitem(last=False)[1].close()
            fh = self._files[tar] = fileio.open_ranged(fileio.join(self.index.folder, tar))
        else:
            self._files.move_to_end(tar)
        fh.seek(int(self.index.offsets[i]))
        blob = fh.read(int(self.index.sizes[i]))
        image = text = None
        with tarfile.open(fileobj=io.BytesIO(blob + b"\0" * 1024), mode="r:") as t:
            for member in t:
                ext = member.name.rpartition(".")[2].lower()
                if ext in IMAGE_EXTS and image is None:
                    image = t.extractfile(member).read()
                elif ext == "txt":
                    text = t.extractfile(member).read().decode("utf-8")
        if image is None or text is None:
            raise ValueError("sample lacks an image or a caption")
        return image, text

    def batch(self, positions: np.ndarray, epoch: int, step: int, micro: int) -> dict:
        images, texts, valid, uids = [], [], [], []
        for i in positions.tolist():
            uid = self.index.uids[i]
            try:
                data, text = self.read(i)
                with Image.open(io.BytesIO(data)) as im:
                    img = im.convert("RGB")
                if self.augment:
                    rng = _draw(self.seed, epoch, uid)
                    img = random_resized_crop(img, self.image_size, self.crop_scale, rng)
                    if self.grayscale and rng.random() < self.grayscale:
                        img = img.convert("L").convert("RGB")
                else:
                    img = TF.resize(img, [self.image_size, self.image_size], antialias=True)
                tensor = TF.normalize(TF.to_tensor(img), MEAN, STD)
                images.append(tensor)
                texts.append(text)
                valid.append(True)
            except Exception:  # corrupt member, truncated shard, undecodable image: skipped, counted
                images.append(torch.zeros(3, self.image_size, self.image_size))
                texts.append("")
                valid.append(False)
            uids.append(uid)
        return {"images": torch.stack(images), "tokens": self.tokenizer(texts),
                "valid": torch.tensor(valid, dtype=torch.bool), "uids": uids, "step": step, "micro": micro}


def loader(stream: RankStream, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                       prefetch_factor=4 if workers else None, persistent_workers=False)
