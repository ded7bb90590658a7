"""Plain webdataset shards in, as open_clip names them: brace patterns, '::', list files,
pipe: and object-store URLs; sample-exact when a SHARD_INDEX lists the shards, otherwise
streamed with a sequence fixed by seed, ranks and workers that resumes exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import schemas
from schemas import fileio
from trainer import data, models, streams


@pytest.fixture(scope="module")
def plain(shards, tmp_path_factory):
    """The same shards as a plain webdataset: the tars only, no index."""
    out = tmp_path_factory.mktemp("plain")
    for tar in sorted(shards.glob("*.tar")):
        shutil.copy(tar, out / tar.name)
    return out


def _stream(source, steps=6, micro=8, accumulation=1, start=0, workers=2, per_epoch=40, buffer=16, rank=0, world=1):
    plan = data.Plan.make(per_epoch, micro * accumulation * world, 1, steps)
    return streams.ShardStream(source, plan, 3, rank, world, micro, accumulation, start, 32, (0.9, 1.0),
                               models.tokenizer("openwit-debug"), workers, buffer)


def _uids(stream):
    return [(b["step"], b["micro"], tuple(b["uids"])) for b in data.loader(stream, stream.workers)]


def test_specs_expand_braces_lists_pipes_and_the_missing(tmp_path):
    for i in range(3):
        (tmp_path / f"{i:05d}.tar").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.tar").write_bytes(b"")
    assert streams.expand(f"{tmp_path}/{{00000..00002}}.tar") == [str(tmp_path / f"{i:05d}.tar") for i in range(3)]
    assert streams.expand(f"{tmp_path}/00000.tar::{tmp_path}/sub/x.tar") == [str(tmp_path / "00000.tar"),
                                                                             str(tmp_path / "sub" / "x.tar")]
    (tmp_path / "list.txt").write_text(f"# shards\n00001.tar\n\nsub/x.tar\n{tmp_path}/00002.tar\npipe:cat a.tar\n")
    assert streams.expand(str(tmp_path / "list.txt")) == [
        str(tmp_path / "00001.tar"), str(tmp_path / "sub" / "x.tar"), str(tmp_path / "00002.tar"), "pipe:cat a.tar"]
    with pytest.raises(schemas.UserError, match=r"00003.tar does not exist \(1 of 4"):
        streams.expand(f"{tmp_path}/{{00000..00003}}.tar")
    with pytest.raises(schemas.UserError, match="no such list file"):
        streams.expand(str(tmp_path / "nope.txt"))


def test_a_spec_of_indexed_shards_is_the_exact_path(shards, plain):
    names = sorted(p.stem for p in shards.glob("*.tar"))
    whole = streams.source(str(shards))
    spec = streams.source(f"{shards}/{{{names[0]}..{names[-1]}}}.tar")
    assert isinstance(spec, data.Index) and len(spec) == len(whole)
    part = streams.source(f"{shards}/{names[0]}.tar")
    assert isinstance(part, data.Index) and 0 < len(part) < len(whole) and part.shards == [f"{names[0]}.tar"]
    assert streams.source(str(plain)) == [str(plain / f"{n}.tar") for n in names]  # no index: streamed
    assert isinstance(streams.source(f"{plain}/{{{names[0]}..{names[-1]}}}.tar"), list)


def test_the_stream_is_fixed_by_its_settings_and_resumes_exactly_across_epochs(plain):
    source = streams.source(str(plain))
    full = _uids(_stream(source, steps=7))  # 40 samples an epoch at batch 8: 5 steps, then epoch 1
    assert len(full) == 7 and _uids(_stream(source, steps=7)) == full
    assert len({u for _, _, b in full[:5] for u in b}) == 40  # an epoch never repeats a sample
    for start in (1, 3, 5, 6):
        assert _uids(_stream(source, steps=7, start=start)) == full[start:], start
    acc = _uids(_stream(source, steps=7, micro=4, accumulation=2))
    assert _uids(_stream(source, steps=7, micro=4, accumulation=2, start=3)) == acc[6:]
    assert _uids(_stream(source, steps=7, workers=1)) != full  # the sequence names its worker count
    assert _uids(_stream(source, steps=7, buffer=1)) != full


def test_ranks_read_disjoint_shards_and_a_short_stream_reads_its_shards_again(plain):
    source = streams.source(str(plain))
    n = len(source)
    ranks = [_uids(_stream(source, steps=2, workers=1, per_epoch=16, rank=r, world=2)) for r in range(2)]
    seen = [{u for _, _, b in r for u in b} for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    long = _uids(_stream(source, steps=2, micro=120, workers=n, per_epoch=120 * 2))  # more than each stream holds
    assert all(len(b) == 120 for _, _, b in long)


def test_pipe_and_an_unreadable_shard(plain, tmp_path, capfd):
    tars = sorted(plain.glob("*.tar"))
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar" * 100)
    spec = f"pipe:cat {tars[0]}::{broken}::{tars[1]}"
    batches = list(data.loader(_stream(streams.source(spec), steps=3, workers=1), 0))
    assert len(batches) == 3 and all(bool(b["valid"].all()) for b in batches)
    assert "broken.tar: cannot be read" in capfd.readouterr().err
    failing = list(data.loader(_stream(streams.source(f"pipe:false::{tars[0]}"), steps=2, micro=40, workers=1,
                                       per_epoch=80), 0))
    assert len(failing) == 2 and "the command exited with status 1" in capfd.readouterr().err


def test_too_few_shards_for_the_streams_is_one_line(plain):
    with pytest.raises(schemas.UserError, match="shard\\(s\\) for 2 rank\\(s\\) x 8 data worker"):
        _stream(streams.source(str(plain)), workers=8, world=2)


def test_shards_on_object_storage_stream(s3, plain):
    for tar in sorted(plain.glob("*.tar")):
        fileio.publish(str(tar), f"{s3}/wds/{tar.name}")
    names = sorted(p.stem for p in plain.glob("*.tar"))
    remote = streams.source(f"{s3}/wds/{{{names[0]}..{names[-1]}}}.tar")
    assert remote == [f"{s3}/wds/{n}.tar" for n in names]
    assert _uids(_stream(remote, steps=3)) == _uids(_stream(streams.source(str(plain)), steps=3))


@pytest.mark.slow
def test_train_on_a_brace_pattern_of_plain_shards(plain, tmp_path):
    names = sorted(p.stem for p in plain.glob("*.tar"))
    base = [sys.executable, "-m", "trainer.main", "--recipe", "debug", "--set", "model=openwit-debug",
            "--set", "workers=2", "--set", "steps=3", "--set", "micro_batch=8", "--set", "log_every=1",
            "--data", f"{plain}/{{{names[0]}..{names[-1]}}}.tar", "--output", str(tmp_path / "run")]
    bad = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "set samples_per_epoch=N" in bad.stderr and "Traceback" not in bad.stderr
    cached = subprocess.run([*base, "--set", "sample_cache_mb=64"], capture_output=True, text=True, timeout=600)
    assert cached.returncode == 2 and "sample_cache_mb" in cached.stderr and "SHARD_INDEX" in cached.stderr
    assert "Traceback" not in cached.stderr  # the cache is for `openwit shard` outputs; a stream is not kept
    ok = subprocess.run([*base, "--set", "samples_per_epoch=32"], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    state = fileio.read_json(str(tmp_path / "run" / "checkpoints" / "step00000003" / "openwit.json"))
    assert state["data"]["rule"] == streams.rule(1, 2, 1000) and state["data"]["samples"] == 32
