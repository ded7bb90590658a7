"""The sample sequence: fixed by seed and global batch, whatever the workers; resumable at
any step; unreadable samples marked, counted and never a crash."""

from __future__ import annotations

import multiprocessing
import os
import shutil

import numpy as np
import pytest
import torch

import schemas
from schemas import columns as C
from trainer import data, models


def _stream(folder, start=0, rank=0, world=1, micro=8, accumulation=1, steps=6):
    index = data.Index.load(str(folder))
    plan = data.Plan.make(len(index), micro * accumulation * world, 1, steps)
    return data.RankStream(index, plan, 3, rank, world, micro, accumulation, start, 64, (0.9, 1.0),
                           models.tokenizer("openwit-debug"))


def _uids(stream, workers):
    return [(b["step"], b["micro"], tuple(b["uids"])) for b in data.loader(stream, workers)]


def test_sequence_does_not_depend_on_workers_and_resumes_exactly(shards):
    full = _uids(_stream(shards), 0)
    assert len(full) == 6 and len({u for _, _, b in full for u in b}) == 48  # one epoch: no repeats
    assert _uids(_stream(shards), 2) == full
    assert _uids(_stream(shards, start=4), 2) == full[4:]


class _Niceness(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield os.nice(0)  # the worker's own priority


def test_cpu_training_runs_its_data_workers_at_the_lowest_priority(shards):
    assert set(data.loader(_Niceness(), 2, low_priority=True)) == {19}
    assert set(data.loader(_Niceness(), 2)) == {os.nice(0)}
    # the batches are the same whatever the workers' priority
    low = [(b["uids"], b["images"], b["tokens"]) for b in data.loader(_stream(shards), 2, low_priority=True)]
    plain = [(b["uids"], b["images"], b["tokens"]) for b in data.loader(_stream(shards), 0)]
    assert len(low) == len(plain) == 6
    for (u1, i1, t1), (u2, i2, t2) in zip(low, plain):
        assert u1 == u2 and torch.equal(i1, i2) and torch.equal(t1, t2)


def test_ranks_and_micro_batches_split_the_global_batch(shards):
    one = _uids(_stream(shards, micro=8, steps=3), 0)
    two = [_uids(_stream(shards, rank=r, world=2, micro=4, steps=3), 0) for r in range(2)]
    acc = _uids(_stream(shards, micro=4, accumulation=2, steps=3), 0)
    for step in range(3):
        whole = one[step][2]
        assert two[0][step][2] + two[1][step][2] == whole
        assert acc[2 * step][2] + acc[2 * step + 1][2] == whole


def test_augmentation_repeats_on_resume(shards):
    a = next(iter(data.loader(_stream(shards, start=2), 0)))
    b = list(data.loader(_stream(shards), 0))[2]
    assert a["uids"] == b["uids"] and bool((a["images"] == b["images"]).all())
    assert a["images"].shape == (8, 3, 64, 64) and a["tokens"].shape == (8, 32) and bool(a["valid"].all())


def test_greyscale_augmentation_is_drawn_per_sample_and_repeats(shards):
    def images(p):
        stream = _stream(shards, steps=2)
        stream.grayscale = p
        return next(iter(data.loader(stream, 0)))["images"]

    colour, grey, again = images(0.0), images(0.5), images(0.5)
    assert torch.equal(grey, again)
    turned = [not torch.equal(a, b) for a, b in zip(colour, grey)]
    assert 0 < sum(turned) < len(turned)
    for img, t in zip(grey, turned):  # a greyed image has equal channels before normalisation
        raw = img * torch.tensor(data.STD)[:, None, None] + torch.tensor(data.MEAN)[:, None, None]
        assert torch.allclose(raw[0], raw[1], atol=1e-5) == t


def test_corrupt_member_and_truncated_shard_are_skipped_and_counted(shards, tmp_path):
    broken = tmp_path / "shards"
    shutil.copytree(shards, broken)
    index = schemas.read_table(broken / "index", schemas.SHARD_INDEX).to_pylist()
    first = index[0]
    tar = broken / f"{first[C.SHARD]}.tar"
    blob = bytearray(tar.read_bytes())
    start = first[C.TAR_OFFSET] + 512
    blob[start:start + 64] = b"\x00garbage" * 8  # the first member's image bytes
    tar.write_bytes(bytes(blob))
    last_tar = sorted(broken.glob("*.tar"))[-1]
    last_tar.write_bytes(last_tar.read_bytes()[:2048])  # truncated shard
    seen = invalid = 0
    for b in data.loader(_stream(broken, steps=6), 2):
        seen += len(b["uids"])
        invalid += int((~b["valid"]).sum())
    assert seen == 48 and invalid >= 1


def test_the_crop_is_torchvisions_resized_crop_pixel_for_pixel():
    import random

    import torchvision.transforms.functional as TF
    from PIL import Image

    r, g = random.Random(0), np.random.default_rng(0)
    for _ in range(300):  # odd sizes, crops of one pixel, crops already at the output size, up and down
        w, h = r.randint(8, 160), r.randint(8, 160)
        img = Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8))
        cw, ch = r.randint(1, w), r.randint(1, h)
        left, top = r.randint(0, w - cw), r.randint(0, h - ch)
        size = r.choice([64, 224, min(cw, ch)])
        if r.random() < 0.2:
            cw = ch = size = min(cw, ch)
        want = TF.resized_crop(img, top, left, ch, cw, [size, size], antialias=True)
        assert np.array_equal(np.asarray(data._crop_resize(img, left, top, cw, ch, size)), np.asarray(want))


def _cached(folder, cache_mb):  # two epochs in batches of 8
    index = data.Index.load(str(folder))
    plan = data.Plan.make(len(index), 8, 2, 0)
    return data.RankStream(index, plan, 3, 0, 1, 8, 1, 0, 64, (0.9, 1.0), models.tokenizer("openwit-debug"),
                           grayscale=0.3, cache_mb=cache_mb)


def _same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["uids"] == y["uids"] and torch.equal(x["valid"], y["valid"])
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["tokens"], y["tokens"])


def test_the_sample_cache_gives_the_same_batches_reading_each_sample_once(shards, monkeypatch):
    plain = list(data.loader(_cached(shards, 0), 0))
    reads = []
    real = data.RankStream.read
    monkeypatch.setattr(data.RankStream, "read", lambda self, i: reads.append(i) or real(self, i))
    stream = _cached(shards, 64)
    cached = list(data.loader(stream, 0))
    _same_batches(cached, plain)  # two epochs, different crops and greys each epoch: equal tensors
    n = len(stream.index)  # an epoch drops its last partial batch: two epochs see n - 8 to n samples
    assert len(reads) == len(set(reads)) >= n - 8 and set(reads) <= set(range(n))  # each read once
    assert len(stream.cache.items) == len(reads) and 0 < stream.cache.used <= 64 << 20


def test_the_sample_cache_stops_at_its_limit_and_keeps_no_unreadable_sample(shards, tmp_path, monkeypatch):
    plain = list(data.loader(_cached(shards, 0), 0))
    full = _cached(shards, 64)
    _same_batches(list(data.loader(full, 0)), plain)
    stream = _cached(shards, 1)
    stream.cache.limit = 10 * full.cache.used // len(full.cache.items)  # room for about ten samples
    _same_batches(list(data.loader(stream, 0)), plain)
    assert 5 <= len(stream.cache.items) <= 20 and stream.cache.used <= stream.cache.limit

    broken = tmp_path / "shards"
    shutil.copytree(shards, broken)
    first = schemas.read_table(broken / "index", schemas.SHARD_INDEX).to_pylist()[0]
    tar = broken / f"{first[C.SHARD]}.tar"
    blob = bytearray(tar.read_bytes())
    blob[first[C.TAR_OFFSET] + 512:first[C.TAR_OFFSET] + 576] = b"\x00garbage" * 8  # its image bytes
    tar.write_bytes(bytes(blob))
    plain = list(data.loader(_cached(broken, 0), 0))
    stream = _cached(broken, 64)
    cached = list(data.loader(stream, 0))
    _same_batches(cached, plain)
    assert sum(int((~b["valid"]).sum()) for b in cached) == 2  # the damaged sample, once per epoch
    assert len(stream.cache.items) == len(full.cache.items) - 1


def test_too_little_data_is_one_line(shards):
    index = data.Index.load(str(shards))
    with pytest.raises(schemas.UserError) as e:
        data.Plan.make(len(index), 10_000, 1, 0)
    assert "fewer than one global batch" in str(e.value)


def test_open_tar_files_stay_bounded_and_the_batches_do_not_change(shards, monkeypatch):
    full = list(data.loader(_stream(shards), 0))
    opened = []
    real = data.fileio.open_ranged

    def counting(path):
        opened.append(real(path))
        return opened[-1]

    monkeypatch.setattr(data, "MAX_OPEN_TARS", 1)
    monkeypatch.setattr(data.fileio, "open_ranged", counting)
    stream = _stream(shards)
    bounded = list(data.loader(stream, 0))
    assert [b["uids"] for b in bounded] == [b["uids"] for b in full]
    assert all(bool((a["images"] == b["images"]).all()) for a, b in zip(bounded, full))
    assert len({f.name for f in opened}) > 1 and len(opened) > len({f.name for f in opened})  # reopened after closing
    assert sum(not f.closed for f in opened) == len(stream._files) == 1


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 1000, 4097, (1 << 20) + 3])
def test_the_permutation_is_a_seeded_bijection(n):
    perm = data.Permutation(3, 0, n)
    out = perm(np.arange(n))
    assert sorted(out.tolist()) == list(range(n))
    assert np.array_equal(data.Permutation(3, 0, n)(np.arange(n)), out)  # fixed by (seed, epoch)
    assert np.array_equal(perm(np.arange(n)[::-1]), out[::-1])  # any positions, in any order
    if n >= 64:
        assert not np.array_equal(data.Permutation(3, 1, n)(np.arange(n)), out)
        assert not np.array_equal(data.Permutation(4, 0, n)(np.arange(n)), out)
    with pytest.raises(IndexError):
        perm(np.array([n]))


def test_the_permutation_spreads_every_position_evenly():
    # where position 0 and position 5 land, over 4,000 seeds: each of 10 places about 400
    # times (binomial sd 19), and the two never coincide
    n, seeds = 10, 4000
    lands = np.array([data.Permutation(s, 0, n)(np.array([0, 5])) for s in range(seeds)])
    for column in lands.T:
        counts = np.bincount(column, minlength=n)
        assert counts.min() > 320 and counts.max() < 480, counts
    assert (lands[:, 0] != lands[:, 1]).all()
    # at 1M samples, a run of 256 consecutive positions (one global batch) is spread over the whole range
    batch = data.Permutation(0, 0, 1 << 20)(np.arange(256))
    assert np.histogram(batch, bins=8, range=(0, 1 << 20))[0].min() >= 16


def test_index_memory_follows_shards_and_locates_every_sample(shards):
    index = data.Index.load(str(shards))
    rows = schemas.read_table(shards / "index", schemas.SHARD_INDEX).sort_by(
        [(C.SHARD, "ascending"), (C.SHARD_POSITION, "ascending")]).to_pylist()
    assert len(index) == len(rows) and len(index.starts) == len(index.shards) + 1 == len({r[C.SHARD] for r in rows}) + 1
    assert not any(isinstance(v, (list, np.ndarray)) and len(v) >= len(rows)
                   for v in vars(index).values())  # nothing per sample is held in memory
    for i, r in enumerate(rows):
        assert index.locate(i) == (f"{r[C.SHARD]}.tar", r[C.TAR_OFFSET], r[C.TAR_BYTES])
    assert data.RankStream(index, data.Plan.make(len(index), 8, 1, 1), 0, 0, 1, 8, 1, 0, 64, (0.9, 1.0),
                           None).read(0)[0] == rows[0][C.UID]  # the uid is the tar members' key


def test_the_records_file_is_built_once_and_rebuilt_when_the_index_changes(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    cache = tmp_path / "cache"
    a = data.Index.load(str(copy), str(cache))
    built = os.stat(a.records).st_mtime_ns
    assert data.Index.load(str(copy), str(cache)).records == a.records and os.stat(a.records).st_mtime_ns == built
    first = sorted((copy / "index").glob("*.parquet"))[0]
    os.utime(first, ns=(built + 10**9, built + 10**9))  # rewritten
    b = data.Index.load(str(copy), str(cache))
    assert b.records != a.records and not os.path.exists(a.records) and len(b) == len(a)
    stem = os.path.basename(b.records).removesuffix(".records")
    assert sorted(n for n in os.listdir(cache) if not n.endswith(".lock")) == [stem + ".json", stem + ".records"]


def test_runs_on_other_shards_of_the_same_folder_keep_each_others_files(shards, tmp_path):
    cache = tmp_path / "cache"
    a = data.Index.load(str(shards), str(cache), only={"00000"})
    b = data.Index.load(str(shards), str(cache), only={"00001"})
    whole = data.Index.load(str(shards), str(cache))
    assert len({a.records, b.records, whole.records}) == 3 and all(
        os.path.exists(i.records) for i in (a, b, whole))  # a trainer on one never loses its records to another
    assert a.locate(0)[0] == "00000.tar" and b.locate(0)[0] == "00001.tar"


def _load(args):
    folder, cache = args
    return data.Index.load(folder, cache).records


def test_ranks_starting_together_build_the_records_file_once(shards, tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        paths = pool.map(_load, [(str(shards), str(tmp_path))] * 4)
    assert len(set(paths)) == 1 and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_an_index_that_lists_a_shard_twice_or_nothing_is_one_line(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    first = sorted((copy / "index").glob("*.parquet"))[0]
    shutil.copy(first, copy / "index" / "copy.parquet")
    with pytest.raises(schemas.SchemaError, match="listed by two index files"):
        data.Index.load(str(copy), str(tmp_path / "cache"))
    assert not [n for n in os.listdir(tmp_path / "cache") if n.endswith((".tmp", ".records", ".json"))]
    shutil.rmtree(copy / "index")
    (copy / "index").mkdir()
    with pytest.raises(schemas.UserError, match="no parquet files"):
        data.Index.load(str(copy), str(tmp_path / "cache"))


def test_an_unwritable_records_folder_is_one_line(shards, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(schemas.UserError, match="set OPENWIT_WORK"):
        data.Index.load(str(shards), str(tmp_path / "file" / "cache"))


# -- online balancing ------------------------------------------------------------------

_T = 400
_QUERIES = {"head-a": 6000, "head-b": 3000, "head-c": 1200, "mid": 600, **{f"tail-{k}": 40 for k in range(50)}}


def _balanced_index(folder, shards=12, with_keep=True):
    """A SHARD_INDEX of 12,800 samples (no tars: the Index reads only the manifest), each
    matching one query of _QUERIES, its keep probability min(1, t / count) as shard writes it."""
    import pyarrow as pa

    from pipeline import balance

    queries = [q for q, n in _QUERIES.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    rng.shuffle(queries)
    per = -(-len(queries) // shards)
    (folder / "index").mkdir(parents=True)
    for s in range(shards):
        part = queries[s * per:(s + 1) * per]
        n = len(part)
        table = pa.table({
            C.UID: [f"{s:05d}-{j}" for j in range(n)], C.SHARD: [f"{s:05d}"] * n,  # not-a-column
            C.SHARD_POSITION: pa.array(range(n), pa.int32()), C.KEY: [f"{j:09d}" for j in range(n)],
            C.TAR_OFFSET: [1024 * j for j in range(n)], C.TAR_BYTES: [1024] * n,
            C.URL: ["http://x.test/i.jpg"] * n, C.TEXT: part, C.MATCHED_QUERIES: [[q] for q in part],
            C.WIDTH: pa.array([64] * n, pa.int32()), C.HEIGHT: pa.array([64] * n, pa.int32()),
            C.SHA256: ["0" * 64] * n, C.PHASH: pa.array([0] * n, pa.uint64()), C.SOURCE_FILE: ["crawl"] * n,
            C.SOURCE_OFFSET: [0] * n, C.SOURCE_FORMAT: ["list"] * n,
            C.KEEP_PROB: pa.array([balance.keep_probability([_QUERIES[q]], _T) if with_keep else None
                                   for q in part], pa.float64())})
        for f in schemas.SHARD_INDEX:
            if f.name not in table.column_names:
                table = table.append_column(f.name, pa.nulls(n, f.type))
        schemas.write_table(table, folder / "index" / f"{s:05d}.parquet", schemas.SHARD_INDEX)
    return [q for s in range(shards) for q in queries[s * per:(s + 1) * per]]  # in sample order


def _sd(count):
    p = min(1.0, _T / count)
    return (count * p * (1 - p)) ** 0.5


def test_online_balancing_draws_each_epoch_anew_within_binomial_bounds_of_t(tmp_path):
    queries = np.array(_balanced_index(tmp_path / "data"))
    index = data.Index.load(str(tmp_path / "data"), str(tmp_path / "cache"))
    assert index.balanced and len(index) == sum(_QUERIES.values())
    expected = sum(min(n, _T) for n in _QUERIES.values())
    assert index.balance["expected"] == pytest.approx(expected, rel=1e-6)
    kept_sets = []
    for epoch in range(5):
        draw = data.EpochDraw(index, 3, epoch)
        kept = draw.keeps(np.arange(len(index)))
        kept_sets.append(kept)
        assert draw.kept == kept.sum()
        for q, n in _QUERIES.items():
            got = int(kept[queries == q].sum())
            if n <= _T:
                assert got == n, q  # a tail query keeps every sample
            else:  # a head query keeps Binomial(n, t / n): t on average
                assert abs(got - _T) <= 4.5 * _sd(n), (epoch, q, got)
        assert abs(draw.kept - expected) <= 4.5 * index.balance["variance"] ** 0.5
    assert all((a != b).any() for a, b in zip(kept_sets, kept_sets[1:]))  # each epoch draws anew
    # seeded by the sample, not by the set of shards read: the same shard alone draws the same
    alone = data.Index.load(str(tmp_path / "data"), str(tmp_path / "cache2"), only={"00003"})
    first = int(index.starts[3])
    assert (data.EpochDraw(alone, 3, 2).keeps(np.arange(len(alone)))
            == kept_sets[2][first:first + len(alone)]).all()


def test_an_online_balanced_epoch_is_kept_samples_in_permuted_order_and_resumes_exactly(tmp_path):
    queries = np.array(_balanced_index(tmp_path / "data"))
    index = data.Index.load(str(tmp_path / "data"), str(tmp_path / "cache"))
    plan = data.Plan.make(len(index), 100, 2, 0, index.balance)
    assert plan.balanced and plan.samples == len(index) and "online balance" in plan.rule
    assert plan.epoch_samples == int(index.balance["expected"] - 4 * index.balance["variance"] ** 0.5)
    assert plan.steps_per_epoch == plan.epoch_samples // 100 and plan.total_steps == 2 * plan.steps_per_epoch
    cache: dict = {}
    seq = [data.micro_batch_positions(plan, 3, step, a, r, 2, 25, cache, index)
           for step in range(plan.total_steps) for a in range(2) for r in range(2)]
    for epoch in range(2):
        got = np.concatenate(seq[epoch * plan.steps_per_epoch * 4:(epoch + 1) * plan.steps_per_epoch * 4])
        kept = data.EpochDraw(index, 3, epoch).keeps(np.arange(len(index)))
        assert len(set(got.tolist())) == len(got) and kept[got].all()  # kept samples, each once
        counts = {q: int((queries[got] == q).sum()) for q in ("head-a", "head-b", "tail-0")}
        assert counts["tail-0"] <= 40 and all(abs(counts[q] - _T) <= 5 * _sd(_QUERIES[q]) + 40
                                              for q in ("head-a", "head-b")), counts
        order = data.Permutation(3, epoch, len(index))(np.arange(len(index)))
        assert got.tolist() == [i for i in order.tolist() if kept[i]][:len(got)]  # the permutation, dropped skipped
    # a resumed run on another machine (its own cache, block counts rebuilt) reads the same from step 7 on
    other = data.Index.load(str(tmp_path / "data"), str(tmp_path / "other-cache"))
    resumed = [data.micro_batch_positions(plan, 3, step, a, r, 2, 25, {}, other)
               for step in range(7, plan.total_steps) for a in range(2) for r in range(2)]
    assert all((x == y).all() for x, y in zip(resumed, seq[7 * 4:]))
    assert [n for n in os.listdir(tmp_path / "other-cache") if ".epoch-3-" in n]  # counted once per machine


def test_an_epoch_that_keeps_fewer_than_its_length_starts_over():
    class Tiny:
        starts = np.array([0, 4])
        shards = ["00000.tar"]
        records = "/nonexistent.records"

        def __len__(self):
            return 4

        def record_numbers(self, i):
            return np.zeros(len(i), np.int64), np.asarray(i)

        def keep_probs(self, i, records=None):
            return np.where(np.asarray(i) == 2, 1.0, 1e-12)

    draw = object.__new__(data.EpochDraw)
    draw.index, draw.epoch, draw.perm = Tiny(), 0, data.Permutation(0, 0, 4)
    draw.keys = np.array([7], np.uint64)
    draw.counts, draw.kept, draw._block = np.array([1]), 1, None
    assert draw(np.arange(3)).tolist() == [2, 2, 2]


def test_online_balancing_refuses_mixed_or_unusable_keep_probabilities(tmp_path):
    import pyarrow.parquet as pq

    _balanced_index(tmp_path / "a")
    _balanced_index(tmp_path / "b", with_keep=False)
    index = data.Index.load(str(tmp_path / "b"), str(tmp_path / "cache"))
    assert not index.balanced and not data.Plan.make(len(index), 100, 1, 0).balanced
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "a", mixed)
    shutil.copy(tmp_path / "b" / "index" / "00000.parquet", mixed / "index" / "00000.parquet")
    with pytest.raises(schemas.SchemaError, match=r"have a keep_prob and 1,067 do not: shard the whole dataset"):
        data.Index.load(str(mixed), str(tmp_path / "cache"))
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "a", bad)
    path = bad / "index" / "00001.parquet"
    table = pq.read_table(path)
    p = table[C.KEEP_PROB].to_pylist()
    p[5] = 1.5
    pq.write_table(table.set_column(table.schema.get_field_index(C.KEEP_PROB), C.KEEP_PROB, [p]), path)
    with pytest.raises(schemas.SchemaError, match=r"00001.parquet: a keep_prob outside \(0, 1\]"):
        data.Index.load(str(bad), str(tmp_path / "cache"))
    with pytest.raises(schemas.UserError, match="an epoch of 3 samples after online balancing"):
        data.Plan.make(1000, 64, 1, 0, {"expected": 3.0, "variance": 0.0})


def _tar_blob(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_a_samples_tar_members_read_as_tarfile_reads_them(fmt):
    import tarfile

    long = "deep/" * 25 + "0001.jpg"  # over 100 bytes: ustar's prefix field, GNU's or pax's long name
    members = [("0001.jpg", b"\xff\xd8" + bytes(range(256)) * 3), ("0001.txt", "a red circle, é".encode()),
               ("0001.json", b""), (long, b"x" * 513)]
    blob = _tar_blob(members, {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT,
                               "pax": tarfile.PAX_FORMAT}[fmt])
    assert data.tar_members(blob) == members
    assert data.tar_members(blob[:len(blob) - 1024]) == members  # no end-of-archive blocks: a sample's slice


def test_a_damaged_tar_header_or_member_is_an_error_not_a_sample():
    import tarfile

    blob = bytearray(_tar_blob([("0001.jpg", b"\xff" * 600), ("0001.txt", b"cap")], tarfile.USTAR_FORMAT))
    with pytest.raises(ValueError, match="truncated"):
        data.tar_members(bytes(blob[:1024]))  # the jpg's 600 bytes cut short
    blob[10] ^= 1  # a flipped bit in the first header's name
    with pytest.raises(ValueError, match="checksum"):
        data.tar_members(bytes(blob))
