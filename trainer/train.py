"""The training loop: contrastive pretraining of an open_clip model with DeepSpeed.

Reads top to bottom: start the process group, load the shard index and plan the steps,
build the model and the engine, resume if asked, then for every global step set the
learning rate from the step, run the micro-batches (forward, loss over features gathered
across ranks, backward, step), clamp the temperature, log, and checkpoint every K steps.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

import schemas
from trainer import checkpoints, data, engine, models
from trainer.config import TrainConfig
from trainer.loss import clip_loss, siglip_loss

def _truncate_metrics(path: Path, start_step: int) -> None:
    """Drop metric rows past the step this run starts from: the rows an interrupted attempt
    wrote after its last checkpoint are written again, so a rerun leaves one row per step."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= start_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in keep))
    os.replace(tmp, path)


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _mean(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0]) / dist.get_world_size()


def _sum(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t)
    return int(t[0])


def run(cfg: TrainConfig, resume: str | None = None) -> dict:
    rank, world = engine.init_distributed()
    out = Path(cfg.output)
    ckpt_dir = checkpoints.folder(out)
    index = data.Index.load(cfg.data)
    plan = data.Plan.make(len(index), cfg.global_batch(world), cfg.epochs, cfg.steps)
    stop_at = int(cfg.extra.get("stop_at", 0)) or plan.total_steps

    model = models.create(cfg.model, cfg.init_temperature, cfg.loss, cfg.seed)
    eng, optimizer = engine.initialize(model, cfg)
    device = eng.device
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32

    start_step = 0
    if resume == "auto":
        resume = "latest" if checkpoints.done(ckpt_dir) else None
    if resume:
        tag, sidecar = checkpoints.find(ckpt_dir, resume)
        if tag is None:
            raise schemas.UserError(f"--resume latest: no complete checkpoint under {ckpt_dir}")
        if not sidecar.is_file():
            raise schemas.UserError(f"--resume {resume}: {sidecar} does not exist")
        state = json.loads(sidecar.read_text())
        if state["global_batch"] != plan.global_batch or state["data"]["seed"] != cfg.seed:
            raise schemas.UserError(
                f"--resume {tag}: it was trained with global batch {state['global_batch']} and seed "
                f"{state['data']['seed']}; this run has {plan.global_batch} and {cfg.seed}: the sample "
                "sequence would differ")
        engine.load(eng, str(ckpt_dir), tag)
        start_step = state["step"]

    stream = data.RankStream(index, plan, cfg.seed, rank, world, cfg.micro_batch, cfg.accumulation, start_step,
                             models.image_size(cfg.model), cfg.crop_scale, models.tokenizer(cfg.model),
                             grayscale=cfg.grayscale)
    batches = iter(data.loader(stream, cfg.workers))
    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step)
        _atomic_json(out / "config.json", {**cfg.to_dict(), "world_size": world, "plan": plan.__dict__})
    evaluator = None
    if cfg.eval_every and cfg.eval_suite and (rank == 0 or cfg.zero_stage == 3):  # ZeRO-3: every rank gathers
        from trainer.evaltasks import Periodic

        evaluator = Periodic(cfg.eval_suite, models.image_size(cfg.model), cfg.eval_resize_mode,
                             models.tokenizer(cfg.model))
    record = cfg.extra.get("record_samples")
    uid_log = open(out / f"samples-rank{rank}-from{start_step:08d}.txt", "w") if record else None  # noqa: SIM115
    if rank == 0:
        _truncate_metrics(out / "metrics.jsonl", start_step)
    metrics = open(out / "metrics.jsonl", "a") if rank == 0 else None  # noqa: SIM115

    started = time.perf_counter()
    wait = compute = 0.0
    invalid_total = 0
    eval_seconds = 0.0
    last_log = (time.perf_counter(), start_step)
    loss_value = float("nan")
    scale = float("nan")
    step = start_step
    for step in range(start_step, min(plan.total_steps, stop_at)):
        lr = cfg.lr_at(step, plan.total_steps, world)
        engine.set_lr(optimizer, lr)
        losses, invalid, norm = [], 0, None
        for micro in range(cfg.accumulation):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            wait += t1 - t0
            valid = batch["valid"].to(device)
            invalid += int((~batch["valid"]).sum())
            out_ = eng(batch["images"].to(device, dtype), batch["tokens"].to(device))
            if cfg.loss == "siglip":
                loss = siglip_loss(out_[0], out_[1], out_[2], out_[3], valid)
            else:
                loss = clip_loss(out_[0], out_[1], out_[2], valid)
            eng.backward(loss)
            if micro == cfg.accumulation - 1 and done_logs(step + 1, cfg, plan):
                norm = engine.boundary_grad_norm(eng)
            eng.step()
            losses.append(float(loss.detach()))
            compute += time.perf_counter() - t1
            if uid_log:
                uid_log.write(f"{step} {batch['micro']} {' '.join(batch['uids'])}\n")
        if uid_log:
            uid_log.flush()
        scale = engine.clamp_temperature(eng, cfg.max_logit_scale)
        loss_value = _mean(sum(losses) / len(losses))
        invalid_total += _sum(invalid)
        done = step + 1
        if rank == 0 and done_logs(done, cfg, plan):
            now = time.perf_counter()
            rate = (done - last_log[1]) * plan.global_batch / max(now - last_log[0], 1e-9)
            last_log = (now, done)
            wait_frac = wait / max(wait + compute, 1e-9)
            eta = (plan.total_steps - done) * plan.global_batch / max(rate, 1e-9)
            row = {"step": done, "loss": loss_value, "lr": lr, "logit_scale": scale, "samples_per_s": rate,
                   "data_wait": wait_frac, "grad_norm": engine.grad_norm(eng, norm), "invalid_samples": invalid_total}
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(f"train/{k}", v, done)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            print(f"[train] step {done}/{plan.total_steps}  loss {loss_value:.4f}  lr {lr:.2e}  "
                  f"T {1 / scale:.4f}  {rate:,.0f} samples/s  data wait {wait_frac:.0%}  ETA {eta:,.0f}s",
                  flush=True)
        if evaluator and (done % cfg.eval_every == 0 or done == plan.total_steps):
            t_eval = time.perf_counter()
            scores = evaluator(eng.module, device, dtype)
            eval_seconds += time.perf_counter() - t_eval
            if rank == 0:
                for k, v in scores.items():
                    writer.add_scalar(f"eval/{k}", v, done)
                metrics.write(json.dumps({"step": done, "eval": scores}) + "\n")
                metrics.flush()
                print(f"[eval] step {done}  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
        if done % cfg.checkpoint_every == 0 or done == plan.total_steps:
            checkpoint(eng, cfg, ckpt_dir, done, plan, world, rank)

    if uid_log:
        uid_log.close()
    seconds = time.perf_counter() - started
    steps_run = max(0, min(plan.total_steps, stop_at) - start_step)
    stats = {"steps": plan.total_steps, "start_step": start_step, "steps_run": steps_run,
             "samples_seen": min(plan.total_steps, stop_at) * plan.global_batch, "world_size": world,
             "global_batch": plan.global_batch, "seconds": round(seconds, 2),
             "samples_per_s": steps_run * plan.global_batch / max(seconds, 1e-9),
             "data_wait_fraction": wait / max(wait + compute, 1e-9), "final_loss": loss_value,
             "logit_scale": scale, "invalid_samples": invalid_total, "eval_seconds": round(eval_seconds, 2)}
    if rank == 0:
        writer.close()
        metrics.close()
        _atomic_json(out / "train_stats.json", stats)
        if world == 1 or cfg.zero_stage < 3:
            weights = {k: v.detach().float().cpu() for k, v in eng.module.state_dict().items()}
            tmp = out / ".final_weights.pt.tmp"
            torch.save(weights, tmp)
            os.replace(tmp, out / "final_weights.pt")
    dist.barrier()
    return stats


def done_logs(done: int, cfg: TrainConfig, plan: data.Plan) -> bool:
    return done % cfg.log_every == 0 or done == plan.total_steps


def checkpoint(eng, cfg: TrainConfig, ckpt_dir: Path, step: int, plan: data.Plan, world: int, rank: int) -> None:
    """DeepSpeed state on every rank, then rank 0 writes the sidecar (which marks the
    checkpoint complete) and removes all but the newest ``keep_checkpoints``."""
    tag = checkpoints.tag(step)
    engine.save(eng, str(ckpt_dir), tag, {"step": step})
    dist.barrier()
    if rank == 0:
        epoch, in_epoch = divmod(step, plan.steps_per_epoch)
        _atomic_json(ckpt_dir / tag / checkpoints.SIDECAR, {
            "step": step, "samples_seen": step * plan.global_batch, "global_batch": plan.global_batch,
            "world_size": world, "data": {"seed": cfg.seed, "epoch": epoch, "step_in_epoch": in_epoch,
                                          "steps_per_epoch": plan.steps_per_epoch, "samples": plan.samples,
                                          "rule": "permutation(seed, epoch); global batch s of the epoch"},
            "model": cfg.model, "model_config": models.model_config(cfg.model), "config": cfg.to_dict(),
            "schema_version": schemas.SCHEMA_VERSION, "torch": torch.__version__})
        for _, old in checkpoints.done(ckpt_dir)[:-cfg.keep_checkpoints]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    dist.barrier()
