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
