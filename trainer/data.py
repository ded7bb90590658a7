"""Training data from `openwit shard` output, deterministic down to the sample.

The SHARD_INDEX manifest gives every sample's tar and byte range, so samples are read by
position rather than by streaming shards. Each epoch is a permutation of all samples drawn
from (seed, epoch); global step ``s`` of the epoch takes the next ``global batch`` of it,
and within that, accumulation micro-batch ``a`` of rank ``r`` takes the slice
``(a * world + r) * micro_batch``. So the sequence of samples depends only on the seed and
the global batch, not on the number of data workers, and a run resumed at step ``s``
reads exactly what an uninterrupted run reads from step ``s`` on. Every rank runs the same
number of steps (the last partial global batch of an epoch is dropped).

Online balancing (``openwit shard --balance online`` writes each sample's keep probability
``p`` into SHARD_INDEX): each epoch keeps sample ``i`` iff a uniform draw from (seed, epoch,
the sample's shard and place in it) is below ``p``, so every epoch is a fresh balanced draw
of the pool, MetaCLIP 2's balancing in the data loader. The epoch's order is the same
permutation of all samples with the dropped ones skipped; its length is fixed before the
draw at the expected kept count less four standard deviations (so every epoch has the same
number of steps, and the rare epoch that keeps fewer repeats its first samples). Which
samples an epoch keeps is counted once per machine in blocks of the permutation, so step
``s`` finds its samples without drawing the epoch from its start: resume stays exact.

Decoding, the random resized crop (scale ``crop_scale``) and the optional greyscale
(probability ``grayscale``), both drawn from (seed, epoch, uid) so augmentation repeats
exactly on resume, and tokenisation run in DataLoader workers; worker
``w`` of ``W`` builds micro-batches ``w, w + W, ...``, which the DataLoader hands out in
order. A sample that cannot be read or decoded is marked invalid in its batch (the loss
leaves it out) and counted, never a crash.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import random
import tarfile
import tempfile
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
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


RECORD = np.dtype([("offset", "<i8"), ("nbytes", "<u4")])  # one sample's byte range in its tar: 12 bytes
KEEP = np.dtype("<f4")  # one sample's keep probability (online balancing), in record order
BLOCK = 1 << 16  # permuted positions per block when an epoch's kept samples are counted
_SIGMAS = 4.0  # an epoch's length: the expected kept count less this many standard deviations
_READ_AHEAD = 32  # index files read at once while the records file is built


def cache_folder() -> str:
    """Where the records files of shard indexes are kept on this machine ($OPENWIT_WORK or
    the temp folder): local disk, one copy per machine whatever the ranks and workers."""
    return os.path.join(os.environ.get("OPENWIT_WORK") or tempfile.gettempdir(), "openwit-index")


class Index:
    """Where each sample of an `openwit shard` output lies, in memory proportional to the
    number of shards, not of samples.

    Samples are numbered in (shard, position) order. In memory: the shard names, the first
    sample number of each shard and where its records start. Each sample's (offset, bytes)
    in its tar is a 12-byte record in a local file built once from SHARD_INDEX (reading only
    its shard, position, offset, bytes and keep_prob columns) and read back one record per
    sample with ``pread``: the page cache holds it once per machine, no process keeps it
    resident. Keep probabilities, when set, go to a second file of 4 bytes per sample. The
    file is named by the folder and its index files' names, sizes and modification times,
    so a rewritten index is read anew; a lock lets one process per machine build it while
    the others wait. A sample's uid comes from its tar members' names when it is read.
    """

    def __init__(self, folder: str, shards: list[str], starts: np.ndarray, bases: np.ndarray, records: str,
                 balance: dict | None = None):
        self.folder, self.shards, self.starts, self.bases, self.records = folder, shards, starts, bases, records
        self.balance = balance  # online balancing: {"expected": sum of p, "variance": sum of p(1-p)}
        self._fd: int | None = None
        self._pid = 0
        self._keep: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict:  # a data worker opens the records file itself
        return {**self.__dict__, "_fd": None, "_pid": 0, "_keep": None}

    @property
    def balanced(self) -> bool:
        return self.balance is not None

    def record_numbers(self, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard number, record number) of samples ``i``."""
        s = np.searchsorted(self.starts, i, side="right") - 1
        return s, self.bases[s] + i - self.starts[s]

    def keep_probs(self, i: np.ndarray, records: np.ndarray | None = None) -> np.ndarray:
        """The keep probabilities of samples ``i`` (online balancing; ``records``: their
        record numbers, when the caller has them)."""
        if self._keep is None:
            self._keep = np.memmap(self.records.removesuffix(".records") + ".keep", KEEP, mode="r")
        return np.asarray(self._keep[self.record_numbers(i)[1] if records is None else records], np.float64)

    def locate(self, i: int) -> tuple[str, int, int]:
        """(tar name, byte offset, byte count) of sample ``i``."""
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.records, os.O_RDONLY), os.getpid()
        at = (int(self.bases[s]) + i - int(self.starts[s])) * RECORD.itemsize
        rec = np.frombuffer(os.pread(self._fd, RECORD.itemsize, at), RECORD)
        if len(rec) != 1:
            raise OSError(f"{self.records}: short read at record {at // RECORD.itemsize}")
        return self.shards[s], int(rec["offset"][0]), int(rec["nbytes"][0])

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    @classmethod
    def load(cls, folder: str, cache: str | None = None, only: set[str] | None = None) -> "Index":
        """The index of ``folder`` (of its shards named in ``only``, e.g. {"00003"}, if given)."""
        path = fileio.join(folder, INDEX_DIR)
        files = [f for f in fileio.listing(path) if f[0].endswith(".parquet") and not f[0].startswith(".")
                 and (only is None or f[0].removesuffix(".parquet") in only)]
        if not files:
            what = "no parquet files in its" if fileio.isdir(path) else "no"
            raise schemas.UserError(f"--data {folder}: {what} {INDEX_DIR}/ folder (not an `openwit shard` output)")
        cache = cache or cache_folder()
        try:
            os.makedirs(cache, exist_ok=True)
            with tempfile.TemporaryFile(dir=cache):
                pass
        except OSError as e:
            raise schemas.UserError(f"cannot write the shard index's records under {cache} ({e.strerror}): "
                                    "set OPENWIT_WORK to a writable local folder") from None
        return cls._load(folder, path, files, cache, only)

    @classmethod
    def _load(cls, folder: str, path: str, files: list, cache: str, only: set[str] | None = None) -> "Index":
        # named by the folder and the shards chosen: a run on other shards of the same folder
        # never removes this one's files; a rewritten index replaces its own older version
        chosen = str(folder) + ("|" + ",".join(sorted(only)) if only is not None else "")
        where = hashlib.blake2b(chosen.encode(), digest_size=6).hexdigest()
        what = hashlib.blake2b(json.dumps(files).encode(), digest_size=10).hexdigest()
        base = os.path.join(cache, f"{where}-{what}")
        with open(base + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine; the others wait, then read
            if not os.path.exists(base + ".json"):
                _build(folder, [fileio.join(path, f[0]) for f in files], base)
                for old in os.listdir(cache):  # earlier versions of the same folder's index
                    if old.startswith(where + "-") and not old.startswith(os.path.basename(base)):
                        with contextlib.suppress(OSError):
                            os.remove(os.path.join(cache, old))
        meta = json.loads(open(base + ".json").read())
        if meta["samples"] == 0:
            raise schemas.UserError(f"--data {folder}: the shard index lists no samples")
        return cls(folder, meta["shards"], np.asarray(meta["starts"], np.int64), np.asarray(meta["bases"], np.int64),
                   base + ".records", meta.get("balance"))


def _read_index_file(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    with fileio.open_ranged(path) as fh:
        try:
            pf = pq.ParquetFile(fh)
            schemas.check_metadata(pf.schema_arrow, schemas.SHARD_INDEX, path)
            table = pf.read(columns=[C.SHARD, C.SHARD_POSITION, C.TAR_OFFSET, C.TAR_BYTES, C.KEEP_PROB])
        except (pa.ArrowInvalid, OSError) as e:
            raise schemas.SchemaError(f"{path}: not a readable Parquet file ({e})") from None
    if any(col.null_count for col in table.columns[:4]):
        raise schemas.SchemaError(f"{path}: null shard, position, offset or bytes")
    keep = table[C.KEEP_PROB]
    if keep.null_count not in (0, len(keep)):
        raise schemas.SchemaError(f"{path}: {C.KEEP_PROB} is set for some samples and not for others")
    if keep.null_count == 0 and len(keep):
        p = keep.to_numpy()
        if not (np.isfinite(p).all() and p.min() > 0 and p.max() <= 1):
            raise schemas.SchemaError(f"{path}: a {C.KEEP_PROB} outside (0, 1]")
    return table.sort_by([(C.SHARD, "ascending"), (C.SHARD_POSITION, "ascending")])


def _build(folder: str, files: list[str], base: str) -> None:
    """The records file (every sample's offset and bytes, each shard's samples together) and
    its sidecar (shard names in order, first sample number and first record of each)."""
    segments: dict[str, tuple[int, int]] = {}  # shard -> (first record, samples)
    balance = {"expected": 0.0, "variance": 0.0, "with": 0, "without": 0}
    tmp, tmp_keep = base + f".records.{os.getpid()}.tmp", base + f".keep.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as out, open(tmp_keep, "wb") as keep, concurrent.futures.ThreadPoolExecutor(8) as pool:
            _write_records(folder, files, out, keep, pool, segments, balance)
        if balance["with"] and balance["without"]:
            raise schemas.SchemaError(
                f"--data {folder}: {balance['with']:,} samples have a {C.KEEP_PROB} and {balance['without']:,} "
                "do not: shard the whole dataset with --balance online, or with neither")
        os.replace(tmp, base + ".records")
        if balance["with"]:
            os.replace(tmp_keep, base + ".keep")
    finally:
        for path in (tmp, tmp_keep):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    n = sum(count for _, count in segments.values())
    order = sorted(segments)
    starts = np.zeros(len(order) + 1, np.int64)
    starts[1:] = np.cumsum([segments[s][1] for s in order])
    meta = {"folder": str(folder), "samples": n, "shards": [f"{s}.tar" for s in order],
            "starts": starts.tolist(), "bases": [segments[s][0] for s in order],
            "balance": {"expected": balance["expected"], "variance": balance["variance"]} if balance["with"] else None}
    with fileio.atomic_local(base + ".json") as tmp:
        with open(tmp, "w") as fh:
            json.dump(meta, fh)


def _write_records(folder: str, files: list[str], out, keep, pool, segments: dict[str, tuple[int, int]],
                   balance: dict) -> None:
    n = 0
    for chunk in range(0, len(files), _READ_AHEAD):  # bounded: a few files in memory at a time
        names = files[chunk:chunk + _READ_AHEAD]
        for path, table in zip(names, pool.map(_read_index_file, names)):
            shard = table[C.SHARD].to_numpy(zero_copy_only=False)
            offsets, sizes = table[C.TAR_OFFSET].to_numpy(), table[C.TAR_BYTES].to_numpy()
            if table.num_rows and (offsets.min() < 0 or sizes.min() <= 0 or sizes.max() >= 1 << 32):
                raise schemas.SchemaError(f"{path}: a sample's offset or byte count is out of range")
            cuts = [0, *(np.flatnonzero(shard[1:] != shard[:-1]) + 1).tolist(), len(shard)]
            for a, b in zip(cuts, cuts[1:]):
                if a == b:
                    continue
                if shard[a] in segments:
                    raise schemas.SchemaError(f"--data {folder}: shard {shard[a]} is listed by two index files")
                segments[shard[a]] = (n + a, b - a)
            rec = np.empty(len(shard), RECORD)
            rec["offset"], rec["nbytes"] = offsets, sizes
            out.write(rec.tobytes())
            n += len(shard)
            if table[C.KEEP_PROB].null_count:
                balance["without"] += len(shard)
            else:
                p = table[C.KEEP_PROB].to_numpy().astype(KEEP)
                keep.write(p.tobytes())
                p = p.astype(np.float64)  # the figures of the probabilities the draws will use
                balance["with"] += len(shard)
                balance["expected"] += float(p.sum())
                balance["variance"] += float((p * (1 - p)).sum())


@dataclass
class Plan:
    samples: int  # the pool the epoch's permutation runs over
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    rule: str = ""  # how samples are ordered (the checkpoint sidecar's data.rule)
    epoch_samples: int = 0  # samples an epoch uses (online balancing: fewer than the pool)
    balanced: bool = False  # online balancing: each epoch draws its samples with their keep probabilities

    @classmethod
    def make(cls, samples: int, global_batch: int, epochs: float, steps: int,
             balance: dict | None = None) -> "Plan":
        rule, epoch_samples = ORDER_RULE, samples
        if balance is not None:
            epoch_samples = max(0, math.floor(balance["expected"] - _SIGMAS * math.sqrt(balance["variance"])))
            rule = (f"{ORDER_RULE}; online balance: kept iff splitmix64(hash(seed, epoch, shard), place) < "
                    f"{C.KEEP_PROB} (expected {balance['expected']:.1f}), the first {epoch_samples} kept")
        per_epoch = epoch_samples // global_batch
        if per_epoch == 0:
            what = (f"an epoch of {epoch_samples:,} samples after online balancing (of {samples:,})"
                    if balance is not None else f"{samples:,} samples")
            raise schemas.UserError(f"the data holds {what}, fewer than one global batch of "
                                    f"{global_batch:,}: lower micro_batch or accumulation")
        return cls(samples, global_batch, per_epoch, steps or max(1, math.ceil(epochs * per_epoch)), rule,
                   epoch_samples, balance is not None)


ORDER_RULE = "feistel6(seed, epoch) over [0, samples); global batch s of the epoch"
_ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every output bit depends on every input bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class Permutation:
    """A seeded bijection of [0, n), evaluated at any positions without building it.

    A balanced Feistel network of six rounds over the smallest even number of bits that
    holds n (round keys drawn from (seed, epoch)), restricted to [0, n) by cycle walking:
    a value that lands at n or above is encrypted again until it falls inside. Memory is
    constant in n (an epoch at 400M samples would otherwise be a 3.2 GB array in every
    data worker), and a resumed run computes the same positions from the same numbers.
    """

    def __init__(self, seed: int, epoch: int, n: int):
        self.n = n
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)
        self.mask = np.uint64((1 << self.half) - 1)
        self.keys = [np.uint64(schemas.ids.hash64(schemas.ids.PERMUTE, seed, epoch, r)) for r in range(_ROUNDS)]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = x >> h, x & self.mask
        with np.errstate(over="ignore"):
            for k in self.keys:
                left, right = right, left ^ (_mix(right ^ k) & self.mask)
        return (left << h) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        x = np.asarray(positions, dtype=np.uint64)
        if x.size and int(x.max()) >= self.n:
            raise IndexError(f"position {int(x.max())} is outside [0, {self.n})")
        x = self._encrypt(x)
        out = x >= self.n
        while out.any():
            x[out] = self._encrypt(x[out])
            out = x >= self.n
        return x.astype(np.int64)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class EpochDraw:
    """Which samples one epoch keeps under online balancing, and the k-th of them in the
    epoch's order.

    Sample ``i`` (place ``j`` in shard ``s``) is kept iff ``u < p``, ``u`` the 53-bit
    uniform of SplitMix64's ``j``-th output seeded with hash(seed, epoch, shard name): a
    draw that depends on the sample, not on which other shards are read. Kept counts per
    block of ``BLOCK`` permuted positions are computed once per machine and epoch (a few
    seconds per 10M samples) into the index's cache folder; the k-th kept sample is then
    found by recounting one block.
    """

    def __init__(self, index: Index, seed: int, epoch: int):
        self.index, self.epoch = index, epoch
        self.perm = Permutation(seed, epoch, len(index))
        self.keys = np.array([schemas.ids.hash64(schemas.ids.ONLINE_BALANCE, seed, epoch, name)
                              for name in index.shards], np.uint64)
        self._block: tuple[int, np.ndarray] | None = None  # the last block recounted
        self.counts = self._block_counts(seed)
        self.kept = int(self.counts[-1]) if len(self.counts) else 0

    def keeps(self, i: np.ndarray) -> np.ndarray:
        """Whether this epoch keeps samples ``i``."""
        s, records = self.index.record_numbers(i)
        place = (i - self.index.starts[s]).astype(np.uint64)
        with np.errstate(over="ignore"):
            u = _mix(self.keys[s] + (place + np.uint64(1)) * _GOLDEN) >> np.uint64(11)
        return u.astype(np.float64) * 2.0 ** -53 < self.index.keep_probs(i, records)

    def _kept_in(self, b: int) -> np.ndarray:
        """Sample numbers this epoch keeps among permuted positions of block ``b``, in order."""
        if self._block is None or self._block[0] != b:
            i = self.perm(np.arange(b * BLOCK, min((b + 1) * BLOCK, len(self.index))))
            self._block = (b, i[self.keeps(i)])
        return self._block[1]

    def _block_counts(self, seed: int) -> np.ndarray:
        path = self.index.records.removesuffix(".records") + f".epoch-{seed}-{self.epoch}.npy"
        with open(self.index.records.removesuffix(".records") + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one machine's processes count an epoch once
            if not os.path.exists(path):
                blocks = -(-len(self.index) // BLOCK)
                counts = np.cumsum([len(self._kept_in(b)) for b in range(blocks)], dtype=np.int64)
                with fileio.atomic_local(path) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, counts)
                return counts
        return np.load(path)

    def __call__(self, ks: np.ndarray) -> np.ndarray:
        """Sample numbers of the epoch's kept samples ``ks`` (0-based, in the epoch's order);
        past the epoch's kept count they start over."""
        if self.kept == 0:
            raise schemas.UserError(f"epoch {self.epoch} of online balancing keeps no sample")
        ks = np.asarray(ks, np.int64) % self.kept
        blocks = np.searchsorted(self.counts, ks, side="right")
        out = np.empty(len(ks), np.int64)
        for b in np.unique(blocks).tolist():
            at = blocks == b
            out[at] = self._kept_in(b)[ks[at] - (int(self.counts[b - 1]) if b else 0)]
        return out


def micro_batch_positions(plan: Plan, seed: int, step: int, micro: int, rank: int, world: int,
                          micro_batch: int, cache: dict, index: Index | None = None) -> np.ndarray:
    """Index positions of one rank's micro-batch at a global step (``index``: the data's
    Index, needed under online balancing)."""
    epoch, s = divmod(step, plan.steps_per_epoch)
    if cache.get("epoch") != epoch:
        cache.update(epoch=epoch, order=EpochDraw(index, seed, epoch) if plan.balanced
                     else Permutation(seed, epoch, plan.samples))
    start = s * plan.global_batch + (micro * world + rank) * micro_batch
    return cache["order"](np.arange(start, start + micro_batch))


def tar_members(blob: bytes) -> list[tuple[str, bytes]]:
    """(path, bytes) of the regular files in ``blob``, a run of tar members (one sample's).
    Plain ustar headers, as openwit's shards have, are read here, their checksums checked;
    anything else (pax or GNU long names, base-256 sizes) goes through tarfile."""
    out, pos, end = [], 0, len(blob)
    while pos + 512 <= end:
        header = blob[pos:pos + 512]
        if header == _ZERO_BLOCK:
            break
        if header[156:157] not in (b"0", b"\0") or header[124] & 0x80:
            return _tar_members_slow(blob)
        stored = int(header[148:156].strip(b"\0 ") or b"0", 8)
        if stored != sum(header[:148]) + 256 + sum(header[156:]):  # the checksum field counts as 8 spaces
            raise ValueError(f"bad tar header checksum at byte {pos}")
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        name = header[:100].split(b"\0", 1)[0]
        if header[257:265] == b"ustar\x0000" and header[345] != 0:  # POSIX ustar (GNU's keeps times there)
            name = header[345:500].split(b"\0", 1)[0] + b"/" + name
        if pos + 512 + size > end:
            raise ValueError("truncated tar member")
        out.append((name.decode("utf-8", "surrogateescape"), blob[pos + 512:pos + 512 + size]))
        pos += 512 + -(-size // 512) * 512
    return out


_ZERO_BLOCK = bytes(512)


def _tar_members_slow(blob: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(blob + b"\0" * 1024), mode="r:") as t:
        return [(m.name, t.extractfile(m).read()) for m in t if m.isfile()]


def member_key(path: str) -> tuple[str, str]:
    """(sample key, lower-case extension) of a tar member, as webdataset splits them: the
    key is the path up to the first dot of the file name."""
    folder, _, name = path.rpartition("/")
    stem, _, ext = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


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
            return _crop_resize(img, left, top, cw, ch, size)
    side = min(w, h)  # fallback: centre crop
    return _crop_resize(img, (w - side) // 2, (h - side) // 2, side, side, size)


def _crop_resize(img: Image.Image, left: int, top: int, width: int, height: int, size: int) -> Image.Image:
    """torchvision's resized_crop of a PIL image (antialiased bilinear; no resampling when the
    crop already has the size), pixel for pixel, without its per-call dispatch."""
    crop = img.crop((left, top, left + width, top + height))
    return crop if crop.size == (size, size) else crop.resize((size, size), Image.BILINEAR)


class RankStream(torch.utils.data.IterableDataset):
    """The micro-batches of one rank from ``start_step`` to ``plan.total_steps``."""

    def __init__(self, index: Index, plan: Plan, seed: int, rank: int, world: int, micro_batch: int,
                 accumulation: int, start_step: int, image_size: int, crop_scale: tuple[float, float],
                 tokenizer, augment: bool = True, grayscale: float = 0.0, cache_mb: int = 0):
        super().__init__()
        self.index, self.plan, self.seed, self.rank, self.world = index, plan, seed, rank, world
        self.micro_batch, self.accumulation, self.start_step = micro_batch, accumulation, start_step
        self.image_size, self.crop_scale, self.tokenizer, self.augment = image_size, crop_scale, tokenizer, augment
        self.grayscale = grayscale
        self.cache = SampleCache(cache_mb << 20) if cache_mb > 0 else None
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
                                        self.micro_batch, cache, self.index)
            yield self.batch(pos, step // self.plan.steps_per_epoch, step, micro)

    def read(self, i: int) -> tuple[str, bytes, str]:
        """(uid, image bytes, caption) of sample ``i``; the uid is its tar members' key."""
        tar, offset, size = self.index.locate(i)
        fh = self._files.get(tar)
        if fh is None:
            if len(self._files) >= MAX_OPEN_TARS:  # 40k shards at 400M: past any file-handle limit
                self._files.popitem(last=False)[1].close()
            fh = self._files[tar] = fileio.open_ranged(fileio.join(self.index.folder, tar))
        else:
            self._files.move_to_end(tar)
        fh.seek(offset)
        blob = fh.read(size)
        key = image = text = None
        for path, payload in tar_members(blob):
            name, ext = member_key(path)
            key = key or name
            if ext in IMAGE_EXTS and image is None:
                image = payload
            elif ext == "txt":
                text = payload.decode("utf-8")
        if image is None or text is None:
            raise ValueError("sample lacks an image or a caption")
        return key, image, text

    def batch(self, positions: np.ndarray, epoch: int, step: int, micro: int) -> dict:
        if self.cache is not None:
            return self._cached_batch(positions, epoch, step, micro)
        return encode(self, [self._read_or_mark(i) for i in positions.tolist()], epoch, step, micro)

    def _read_or_mark(self, i: int) -> tuple[str, bytes | None, str | None]:
        try:
            return self.read(i)
        except Exception:  # noqa: BLE001 - corrupt member, truncated shard: marked invalid, counted
            return f"#{i}", None, None  # an unreadable sample is logged by its number

    def _cached_batch(self, positions: np.ndarray, epoch: int, step: int, micro: int) -> dict:
        """``batch`` with each sample's decoded image and tokens kept from its first read:
        the same tensors, without reading, decoding and tokenising the sample again."""
        items: list = []
        missed: list[int] = []
        order = positions.tolist()
        for n, i in enumerate(order):
            hit = self.cache.get(i)
            if hit is None:
                missed.append(n)
                uid, blob, text = self._read_or_mark(i)
                hit = (uid, decode(blob, text), text)
            items.append(hit)
        if missed:  # tokenised together, as encode does; a row does not depend on the others
            tokens = self.tokenizer([items[n][2] if items[n][1] is not None else "" for n in missed])
            for row, n in zip(tokens, missed):
                uid, rgb, _ = items[n]
                items[n] = (uid, rgb, row.clone())  # its own memory, not a view that keeps the whole batch
                if rgb is not None:
                    self.cache.put(order[n], items[n])
        return assemble(self, [(uid, rgb) for uid, rgb, _ in items], torch.stack([t for _, _, t in items]),
                        epoch, step, micro)


def decode(data: bytes | None, text: str | None) -> Image.Image | None:
    """A sample's image, decoded, in RGB; None when it cannot be read or decoded."""
    if data is None or text is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")  # a new image, its pixels loaded
    except Exception:  # noqa: BLE001 - undecodable image: marked invalid, counted
        return None


def encode(stream, samples: list[tuple[str, bytes | None, str | None]], epoch: int, step: int, micro: int) -> dict:
    """One micro-batch from (uid, image bytes, caption) samples: decoded, augmented with
    draws from (seed, epoch, uid), normalised, tokenised; a sample that cannot be read or
    decoded is a zero image marked invalid (the loss leaves it out)."""
    decoded = [(uid, decode(data, text)) for uid, data, text in samples]
    texts = [text if rgb is not None else "" for (_, rgb), (_, _, text) in zip(decoded, samples)]
    return assemble(stream, decoded, stream.tokenizer(texts), epoch, step, micro)


def assemble(stream, decoded: list[tuple[str, Image.Image | None]], tokens: torch.Tensor, epoch: int, step: int,
             micro: int) -> dict:
    """One micro-batch from decoded (uid, RGB image or None) samples and their tokens; the
    images are not changed (the sample cache hands the same ones to every epoch)."""
    side = stream.image_size
    pixels = np.zeros((len(decoded), side, side, 3), dtype=np.uint8)  # one NHWC batch
    valid = []
    for n, (uid, img) in enumerate(decoded):
        try:
            if img is None:
                raise ValueError("unreadable sample")
            if stream.augment:
                rng = _draw(stream.seed, epoch, uid)
                img = random_resized_crop(img, side, stream.crop_scale, rng)
                if stream.grayscale and rng.random() < stream.grayscale:
                    img = img.convert("L").convert("RGB")
            else:
                img = TF.resize(img, [side, side], antialias=True)
            pixels[n] = np.asarray(img)
            valid.append(True)
        except Exception:  # noqa: BLE001 - an image that cannot be cropped: skipped, counted
            valid.append(False)
    mask = torch.tensor(valid, dtype=torch.bool)
    # to_tensor's and normalize's arithmetic, once for the batch (NCHW view of NHWC memory:
    # channels-last); an invalid sample is a zero image
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255)
    images.sub_(_MEAN).div_(_STD).masked_fill_(~mask.view(-1, 1, 1, 1), 0.0)
    return {"images": images, "tokens": tokens, "valid": mask, "uids": [uid for uid, _ in decoded],
            "step": step, "micro": micro}


class SampleCache:
    """Decoded images and tokenised captions by sample number, in the process that makes the
    batches, up to ``limit`` bytes: a small dataset trained for many epochs is then read and
    decoded once. It fills in first-read order and then stops growing (under a random order
    each epoch, evicting would not raise the hit rate); an unreadable sample is not kept."""

    def __init__(self, limit: int):
        self.limit, self.used, self.items = limit, 0, {}

    def get(self, i: int):
        return self.items.get(i)

    def put(self, i: int, item: tuple[str, Image.Image, torch.Tensor]) -> None:
        im = item[1]  # its pixels, the tokens, the uid, the objects
        size = im.width * im.height * len(im.getbands()) + item[2].nbytes + len(item[0]) + 400
        if self.used + size <= self.limit:
            self.items[i] = item
            self.used += size


_MEAN, _STD = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))


def loader(stream: RankStream, workers: int, low_priority: bool = False) -> torch.utils.data.DataLoader:
    """The stream's batches from ``workers`` processes. ``low_priority``: the workers run at
    the lowest CPU priority (nice 19), for training on the CPU: they then take the cores when
    the step's threads leave them, rather than preempting those threads in the middle of
    a parallel op, which stalls all of them (debug recipe on 2 cores: 1.01-1.08x, the same
    batches; docs/benchmarks.md)."""
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                       prefetch_factor=4 if workers else None, persistent_workers=False,
                                       worker_init_fn=_lowest_priority if workers and low_priority else None)


def _lowest_priority(worker: int) -> None:
    os.nice(19)  # capped at 19 by the kernel whatever the starting value
