"""Real DeepSpeed on CPU (gloo), started by its own launcher: parity across rank counts,
exact resume after kill -9, ZeRO stages, bf16, accumulation, activation checkpointing,
the temperature clamp on the fp32 masters."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.servers import free_port

pytestmark = pytest.mark.slow

# the ViT tower: no batch statistics, so rank counts and micro-batches can be compared exactly
BASE = ["--recipe", "debug", "--set", "model=openwit-debug", "--set", "workers=1", "--set", "log_every=1",
        "--set", "warmup_steps=2", "--set", "lr=1e-3"]


def train(shards, out, *settings, nproc=1, resume=None, wait=True, extra=(), env=None):
    args = [*BASE, "--data", str(shards), "--output", str(out), *extra]
    for s in settings:
        args += ["--set", s]
    if resume:
        args += ["--resume", resume]
    if nproc == 1:
        cmd = [sys.executable, "-m", "trainer.main", *args]
    else:
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc), "--master_port",
               str(free_port()), "--module", "trainer.main", *args]
    env = {**os.environ, "MASTER_PORT": str(free_port()), **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    if not wait:
        return proc
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    return output


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "final_weights.pt")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-12))


def _shm_buffers() -> set[str]:
    return set(glob.glob("/dev/shm/deepspeed_allreduce_buffer_*"))


def test_two_ranks_equal_one_rank_with_the_whole_batch(shards, tmp_path):
    shm_before = _shm_buffers()
    common = ["steps=3", "precision=fp32", "zero_stage=0"]
    train(shards, tmp_path / "one", *common, "micro_batch=16")
    # DeepSpeed's shared-memory all-reduce (inference only) is neither JIT-built nor started
    built = tmp_path / "torch_extensions"
    train(shards, tmp_path / "two", *common, "micro_batch=8", nproc=2, env={"TORCH_EXTENSIONS_DIR": str(built)})
    assert not built.exists() or not any(built.rglob("*shm*"))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["step"] for m in one] == [m["step"] for m in two] == [1, 2, 3]
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"])
        # without ZeRO the norm is measured after the gradients are averaged over ranks
        assert a["grad_norm"] > 0 and abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * a["grad_norm"]
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert wa.keys() == wb.keys()
    # Biases start at zero, so after 3 steps each element is the sum of three AdamW steps
    # of about +-lr, and an element whose gradient is near zero (the key third of
    # attention's in_proj_bias has an exactly zero true gradient: softmax ignores a shift
    # shared by all keys; other elements come close) moves by an amount that rounding
    # decides. A bias's relative error says nothing; biases are compared element by element
    # in units of the steps taken: within 1/1000 of a step. A mis-averaged gradient would be
    # off by whole steps. Every other tensor agrees within 1e-5 relative.
    steps = sum(m["lr"] for m in one)
    bias = [k for k in wa if k.endswith("bias")]
    assert bias
    worst_bias = max(float((wb[k] - wa[k]).abs().max()) for k in bias)
    assert worst_bias <= 1e-3 * steps, (worst_bias, steps)
    worst = max((rel(wb[k], wa[k]), k) for k in wa if k not in bias)
    assert worst[0] <= 1e-5, worst
    total = sum(float((wb[k] - wa[k]).norm() ** 2) for k in wa) ** 0.5 / sum(float(wa[k].norm() ** 2) for k in wa) ** 0.5
    assert total <= 1e-6, total
    assert _shm_buffers() <= shm_before  # no shared-memory all-reduce buffers are left in RAM
    # the two CPU ranks split the cores instead of each spinning a thread on every one
    # (an OMP_NUM_THREADS in the environment is the user's choice, and is kept)
    cores = len(os.sched_getaffinity(0))
    expected = int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS") else max(1, cores // 2)
    assert json.loads((tmp_path / "two" / "train_stats.json").read_text())["torch_threads"] == expected


def test_cpu_ranks_on_one_machine_split_its_cores_unless_omp_num_threads_is_set(monkeypatch):
    from trainer import engine

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    try:
        monkeypatch.setenv("LOCAL_SIZE", "1")  # one rank: torch's default is kept
        assert engine.share_cores() == before
        monkeypatch.setenv("LOCAL_SIZE", "4")  # the deepspeed launcher's name
        assert engine.share_cores() == 2 == torch.get_num_threads()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # torchrun's name; more ranks than cores: one each
        assert engine.share_cores() == 1
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
        assert engine.share_cores() == before
    finally:
        torch.set_num_threads(before)


def test_kill_9_then_resume_sees_the_same_samples_and_ends_with_the_same_weights(shards, tmp_path):
    common = ["steps=8", "precision=fp32", "zero_stage=1", "micro_batch=8", "checkpoint_every=4",
              'extra={"record_samples": true}']
    full = tmp_path / "full"
    train(shards, full, *common)
    part = tmp_path / "part"
    proc = train(shards, part, *common, wait=False)
    sidecar = part / "checkpoints" / "step00000004" / "openwit.json"
    deadline = time.time() + 600
    while not sidecar.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert sidecar.exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    train(shards, part, *common, resume="auto")  # what a scheduler's retry runs

    def sequence(folder, start_files):
        lines = []
        for name, until in start_files:
            for line in (folder / name).read_text().splitlines():
                step = int(line.split()[0])
                if step < until:
                    lines.append(line)
        return lines

    whole = sequence(full, [("samples-rank0-from00000000.txt", 8)])
    resumed = sequence(part, [("samples-rank0-from00000000.txt", 4), ("samples-rank0-from00000004.txt", 8)])
    assert whole == resumed and len(whole) == 8
    wf, wp = weights(full), weights(part)
    assert all(torch.equal(wf[k], wp[k]) for k in wf)
    # one metrics row per step, as in the uninterrupted run: the killed attempt's rows past
    # its checkpoint were dropped and written again
    losses = [(x["step"], x["loss"]) for x in metrics(part) if "loss" in x]
    assert losses == [(x["step"], x["loss"]) for x in metrics(full) if "loss" in x] and len(losses) == 8
    # a retry of a finished run changes nothing
    train(shards, part, *common, resume="auto")
    assert all(torch.equal(wf[k], w) for k, w in weights(part).items())
    assert [(x["step"], x["loss"]) for x in metrics(part) if "loss" in x] == losses
    # a checkpoint made under another sample order is refused, not resumed onto other samples
    sidecar = part / "checkpoints" / "step00000008" / "openwit.json"
    state = json.loads(sidecar.read_text())
    state["data"]["rule"] = "permutation(seed, epoch); global batch s of the epoch"
    sidecar.write_text(json.dumps(state))
    proc = train(shards, part, *common, resume="latest", wait=False)
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 2 and "the sample sequence would differ" in output and "Traceback" not in output


@pytest.mark.parametrize("settings", [
    ["zero_stage=1", "precision=bf16"],
    ["zero_stage=2", "precision=bf16", "accumulation=2", "grad_checkpointing=true"],
    ["zero_stage=3", "precision=bf16", "eval_every=6", "eval_suite=SUITE"],  # evaluation on partitioned params
])
def test_zero_stages_bf16_accumulation_checkpointing_learn(shards, suite, tmp_path, settings):
    out = tmp_path / "run"
    extra = ()
    if "zero_stage=3" in settings:  # split every parameter, however small (DeepSpeed keeps those under 1e5 whole)
        ds = tmp_path / "ds.json"
        ds.write_text(json.dumps({"zero_optimization": {"stage3_param_persistence_threshold": 0}}))
        extra = ("--deepspeed-config", str(ds))
    train(shards, out, "steps=12", "micro_batch=8", *[x.replace("SUITE", str(suite)) for x in settings], nproc=2,
          extra=extra)
    m = [x for x in metrics(out) if "loss" in x]
    evals = [x for x in metrics(out) if "eval" in x]
    assert [x["step"] for x in evals] == ([6, 12] if "eval_every=6" in settings else [])
    assert all(0 <= v <= 1 for x in evals for v in x["eval"].values())
    first, last = sum(x["loss"] for x in m[:3]) / 3, sum(x["loss"] for x in m[-3:]) / 3
    assert last < first, (first, last)


def test_a_users_deepspeed_config_reaches_deepspeed(shards, tmp_path):
    """--deepspeed-config settings are merged into the config DeepSpeed runs with (the run
    records the config the engine holds), and DeepSpeed's own check of them applies: a bad
    value is one line naming the setting."""
    ds_file = tmp_path / "ds.json"
    ds_file.write_text('{"steps_per_print": 2, "zero_optimization": {"reduce_bucket_size": 1000000}}')
    out = tmp_path / "ds"
    train(shards, out, "steps=4", "micro_batch=8", "zero_stage=2", "precision=bf16",
          extra=["--deepspeed-config", str(ds_file)])
    recorded = json.loads((out / "deepspeed_config.json").read_text())
    assert recorded["steps_per_print"] == 2 and recorded["zero_optimization"] == {
        "stage": 2, "reduce_bucket_size": 1000000}  # not-a-column
    assert json.loads((out / "config.json").read_text())["deepspeed"]["steps_per_print"] == 2
    ds_file.write_text('{"zero_optimization": {"reduce_bucket_size": "lots"}}')
    proc = train(shards, tmp_path / "bad", "steps=2", "micro_batch=8", "zero_stage=2",
                 extra=["--deepspeed-config", str(ds_file)], wait=False)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert "DeepSpeed refuses its config: DeepSpeedZeroConfig.reduce_bucket_size" in output


def test_temperature_clamp_holds_on_the_fp32_master_under_bf16_zero2(shards, tmp_path):
    out = tmp_path / "clamp"
    # start above the bound and push up with a large learning rate on the temperature's gradient
    train(shards, out, "steps=4", "micro_batch=8", "zero_stage=2", "precision=bf16", "init_temperature=0.02",
          "max_logit_scale=20", "lr=0.05", nproc=2)
    assert all(x["logit_scale"] <= 20.0 * (1 + 1e-6) for x in metrics(out))
    w = weights(out)
    assert float(w["logit_scale"].exp().max()) <= 20.0 * 1.01  # the module copy (bf16 rounding)
    from trainer import export  # the fp32 master weights, consolidated from the ZeRO-2 partitions

    export.export(str(out), str(tmp_path / "export"))
    master = torch.load(tmp_path / "export" / "model.pt")["logit_scale"]
    assert float(master.exp()) <= 20.0 * (1 + 1e-6)
    # the recipe's locked token embedding survives ZeRO-2's consolidation: the initial weights
    # in the precision the run held them (bf16)
    from trainer import models

    initial = models.create("openwit-debug", 0.02).state_dict()["token_embedding.weight"]
    exported = torch.load(tmp_path / "export" / "model.pt")["token_embedding.weight"]
    assert torch.equal(exported, initial.bfloat16().float())


def test_a_locked_token_embedding_stays_as_initialised_and_an_unlocked_one_learns(shards, tmp_path):
    from trainer import models

    initial = models.create("openwit-debug").state_dict()
    for lock in ("true", "false"):
        out = tmp_path / lock
        train(shards, out, "steps=3", "micro_batch=8", "zero_stage=0", "precision=fp32", f"lock_token_embedding={lock}")
        final = weights(out)
        assert json.loads((out / "config.json").read_text())["lock_token_embedding"] is (lock == "true")
        assert torch.equal(final["token_embedding.weight"], initial["token_embedding.weight"]) is (lock == "true")
        assert not torch.equal(final["positional_embedding"], initial["positional_embedding"])


def test_export_round_trip_through_open_clip(shards, tmp_path):
    from trainer import export, models

    out = tmp_path / "run"
    train(shards, out, "steps=2", "micro_batch=8", "zero_stage=1", "precision=fp32")
    assert all(x["grad_norm"] > 0 for x in metrics(out))  # DeepSpeed keeps it under ZeRO
    export.export(str(out), str(tmp_path / "export"))
    loaded, preprocess, tokenizer = export.load_exported(str(tmp_path / "export"))
    ours = models.create("openwit-debug")
    state = weights(out)
    ours.load_state_dict(state)
    loaded.eval()
    ours.eval()
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64)
    tokens = tokenizer(["a red circle", "a blue star", "a green square", "a picture"])
    with torch.no_grad():
        a_img, a_txt = loaded.encode_image(images), loaded.encode_text(tokens)
        b_img, b_txt = ours.encode_image(images), ours.encode_text(tokens)
    assert rel(a_img, b_img) <= 1e-5 and rel(a_txt, b_txt) <= 1e-5
    assert float(loaded.logit_scale.exp()) == pytest.approx(float(state["logit_scale"].exp()), rel=1e-6)
    assert preprocess.transforms[0].size in (64, (64, 64))


def test_two_nodes_on_loopback_with_the_deepspeed_launcher(shards, tmp_path):
    """The documented multi-node recipe, on one machine: a hostfile naming it twice, one
    CPU rank per 'node', each node started with --no_ssh and its --node_rank."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    out = tmp_path / "run"
    port = str(free_port())
    args = [*BASE, "--data", str(shards), "--output", str(out), "--set", "steps=3", "--set", "micro_batch=8",
            "--set", "checkpoint_every=3", "--set", "zero_stage=1", "--set", "precision=bf16"]
    procs = [subprocess.Popen([sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile),
                               "--no_ssh", "--node_rank", str(rank), "--master_addr", "127.0.0.1",
                               "--master_port", port, "--module", "trainer.main", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for rank in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    assert (out / "checkpoints" / "step00000003" / "openwit.json").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]


def test_online_balancing_draws_each_epoch_anew_and_resumes_exactly(shards, tmp_path):
    from pipeline import shard

    root = shards.parent
    balanced = tmp_path / "balanced"
    shard.run(["--keep", str(root / "dedupe"), "--images", str(root / "download"), "--curated",
               str(root / "curate"), "--output", str(balanced), "--samples-per-shard", "64",
               "--balance", "online", "--t", "100"])  # every sample matches one query: p = 100 / 202
    stats = json.loads((balanced / "shard_stats.json").read_text())
    common = ["epochs=3", "precision=fp32", "zero_stage=0", "micro_batch=16", "checkpoint_every=2",
              'extra={"record_samples": true}']
    full = tmp_path / "full"
    output = train(balanced, full, *common)
    run = json.loads((full / "train_stats.json").read_text())
    assert run["balance"] == "online" and run["pool_samples"] == stats["kept"]
    assert 0 < run["samples_per_epoch"] < stats["kept"]
    assert run["samples_per_epoch"] <= stats["expected_samples_per_epoch"]
    assert f"online balancing: {run['samples_per_epoch']:,} of {stats['kept']:,} samples drawn anew" in output
    per_epoch = run["samples_per_epoch"] // 16
    lines = (full / "samples-rank0-from00000000.txt").read_text().splitlines()
    epochs = [[u for line in lines if int(line.split()[0]) // per_epoch == e for u in line.split()[2:]]
              for e in range(3)]
    assert all(len(set(e)) == len(e) == per_epoch * 16 for e in epochs)  # each sample once in an epoch
    assert len({frozenset(e) for e in epochs}) == 3  # and each epoch a new draw
    # stopped after a checkpoint, then resumed: the same samples, the same weights
    part = tmp_path / "part"
    train(balanced, part, *common[:-1], 'extra={"record_samples": true, "stop_at": 2}')
    train(balanced, part, *common, resume="latest")
    resumed = [line for name in ("samples-rank0-from00000000.txt", "samples-rank0-from00000002.txt")
               for line in (part / name).read_text().splitlines()]
    assert resumed == lines
    assert all(torch.equal(a, b) for a, b in zip(weights(full).values(), weights(part).values()))
    # balance=online on data without keep probabilities is one line
    proc = train(shards, tmp_path / "refused", "steps=1", "balance=online", wait=False)
    text, _ = proc.communicate(timeout=900)
    assert proc.returncode == 2 and "balance=online" in text and "--balance online" in text and "Traceback" not in text
