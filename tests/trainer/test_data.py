"""The sample sequence: fixed by seed and global batch, whatever the workers; resumable at
any step; unreadable samples marked, counted and never a crash."""

from __future__ import annotations

import shutil

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
