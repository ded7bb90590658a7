"""Training with its data and its run folder on object storage (the S3 server fixture):
killed after a checkpoint, resumed on a machine that has none of its local files, it ends
with the weights and the metrics of an uninterrupted local run."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time

import pytest
import torch

from schemas import fileio
from tests.trainer.test_train import train, weights

pytestmark = pytest.mark.slow
COMMON = ["steps=8", "precision=fp32", "zero_stage=1", "micro_batch=8", "checkpoint_every=4", "keep_checkpoints=1"]


def _losses(text: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, text.splitlines()) if "loss" in r]


def test_killed_on_s3_and_resumed_elsewhere_equals_an_uninterrupted_local_run(s3, shards, tmp_path, monkeypatch):
    full = tmp_path / "full"
    train(shards, full, *COMMON)
    data, run = f"{s3}/train-data/shards", f"{s3}/train-run"
    fileio.put_tree(str(shards), data)
    work = tmp_path / "work"
    monkeypatch.setenv("OPENWIT_WORK", str(work))
    proc = train(data, run, *COMMON, wait=False)
    sidecar = f"{run}/checkpoints/step00000004/openwit.json"
    deadline = time.time() + 600
    while not fileio.exists(sidecar) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert fileio.exists(sidecar), proc.communicate()[0][-3000:] if proc.poll() is not None else "no checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert fileio.read_json(sidecar)["step"] == 4
    shutil.rmtree(work)  # another machine: nothing local survives, the bucket has it all
    train(data, run, *COMMON, resume="auto")

    remote = torch.load(io.BytesIO(fileio.read_bytes(f"{run}/final_weights.pt")))
    local = weights(full)
    assert sorted(remote) == sorted(local) and all(torch.equal(local[k], remote[k]) for k in local)
    losses = _losses(fileio.read_text(f"{run}/metrics.jsonl"))
    assert losses == _losses((full / "metrics.jsonl").read_text()) and len(losses) == 8
    # keep_checkpoints=1: the older checkpoint was removed from the bucket
    assert sorted({n.split("/")[0] for n in fileio.walk(f"{run}/checkpoints")}) == ["step00000008"]
    assert fileio.read_json(f"{run}/train_stats.json")["start_step"] == 4
