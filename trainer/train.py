"""The training loop: contrastive pretraining of an open_clip model with DeepSpeed.

Reads top to bottom: start the process group, load the shard index and plan the steps,
build the model and the engine, resume if asked, then for every global step set the
learning rate from the step, run the micro-batches (forward, loss over features gathered
across ranks, backward, step), clamp the temperature, log, and checkpoint every K steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time

import torch
import torch.distributed as dist

import schemas
from schemas import columns as C
from schemas import fileio
from trainer import checkpoints, data, engine, models, streams
from trainer.config import TrainConfig
from trainer.loss import clip_loss, siglip_loss

METRICS = "metrics.jsonl"


def _truncate_metrics(run: str, work: str, start_step: int) -> None:
    """Drop metric rows past the step this run starts from: the rows an interrupted attempt
    wrote after its last checkpoint are written again, so a rerun leaves one row per step.
    The rows are kept in the local work folder and published with each checkpoint."""
    src = fileio.join(run, METRICS)
    if not fileio.isfile(src):
        with contextlib.suppress(FileNotFoundError):  # an unpublished attempt's rows
            os.unlink(os.path.join(work, METRICS))
        return
    keep = [line for line in fileio.read_text(src).splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= start_step]
    fileio.write_text(os.path.join(work, METRICS), "".join(f"{line}\n" for line in keep))


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _publish(work: str, run: str, names: list[str]) -> None:
    """Copy files of the local work folder to a run on object storage (nothing when the
    run is local: it is the work folder)."""
    if fileio.is_local(run):
        return
    for name in names:
        local = os.path.join(work, name)
        if os.path.isdir(local):
            fileio.put_tree(local, fileio.join(run, name))
        elif os.path.isfile(local):
            fileio.publish(local, fileio.join(run, name))


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
    run_dir = str(cfg.output)
    out = checkpoints.work_folder(run_dir)  # where files are made; the run folder itself when local
    ckpt_dir = checkpoints.folder(run_dir)
    src = streams.source(cfg.data)
    if cfg.eval_resize_mode == "auto":  # recorded as resolved: config.json, checkpoints, export
        cfg = dataclasses.replace(cfg, eval_resize_mode=streams.eval_resize_mode(src))
    if isinstance(src, data.Index):
        if cfg.samples_per_epoch:
            raise schemas.UserError(f"samples_per_epoch is for plain webdataset shards; --data {cfg.data} has a "
                                    f"SHARD_INDEX of {len(src):,} samples, which sets the epoch")
        if cfg.balance == "online" and not src.balanced:
            raise schemas.UserError(f"balance=online: --data {cfg.data} has no {C.KEEP_PROB} in its SHARD_INDEX "
                                    "(shard it with --balance online)")
        plan = data.Plan.make(len(src), cfg.global_batch(world), cfg.epochs, cfg.steps,
                              src.balance if cfg.balance != "off" else None)
        order_rule = plan.rule
    else:
        if cfg.balance == "online":
            raise schemas.UserError(f"balance=online needs an `openwit shard --balance online` output; --data "
                                    f"{cfg.data} is plain webdataset shards")
        if cfg.sample_cache_mb:
            raise schemas.UserError(f"sample_cache_mb: --data {cfg.data} is plain webdataset shards, read as streams; "
                                    "the cache needs an `openwit shard` output (SHARD_INDEX)")
        if not cfg.samples_per_epoch:
            raise schemas.UserError(f"--data {cfg.data}: no SHARD_INDEX lists these {len(src):,} shards, so set "
                                    "samples_per_epoch=N (open_clip's --train-num-samples)")
        plan = data.Plan.make(cfg.samples_per_epoch, cfg.global_batch(world), cfg.epochs, cfg.steps)
        order_rule = plan.rule = streams.rule(world, max(1, cfg.workers), cfg.shuffle_buffer)
    stop_at = int(cfg.extra.get("stop_at", 0)) or plan.total_steps

    model = models.create(cfg.model, cfg.init_temperature, cfg.loss, cfg.seed)
    if cfg.lock_token_embedding:
        try:
            models.lock_token_embedding(model)
        except ValueError as e:
            raise schemas.UserError(f"lock_token_embedding: {e} (model {cfg.model})") from None
    if cfg.pack_text and not models.pack_text_tokens(model):
        raise schemas.UserError(f"pack_text: model {cfg.model}'s text tower is not open_clip's causal CLIP "
                                "transformer with argmax pooling, which packing needs; set pack_text=false")
    models.first_query_attention_pool(model)
    # image batches in NHWC order: the convolutions then run channels-last (the weights stay as
    # they are, which DeepSpeed's broadcast and ZeRO's flat buffers need)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    eng, optimizer = engine.initialize(model, cfg)
    device = eng.device
    if cfg.channels_last and device.type == "cpu":
        models.narrow_batch_norms_in_nchw(eng.module)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32

    start_step = 0
    if resume == "auto":
        resume = "latest" if checkpoints.done(ckpt_dir) else None
    if resume:
        tag, sidecar = checkpoints.find(ckpt_dir, resume)
        if tag is None:
            raise schemas.UserError(f"--resume latest: no complete checkpoint under {ckpt_dir}")
        if not fileio.isfile(sidecar):
            raise schemas.UserError(f"--resume {resume}: {sidecar} does not exist")
        state = fileio.read_json(sidecar)
        if state["global_batch"] != plan.global_batch or state["data"]["seed"] != cfg.seed:
            raise schemas.UserError(
                f"--resume {tag}: it was trained with global batch {state['global_batch']} and seed "
                f"{state['data']['seed']}; this run has {plan.global_batch} and {cfg.seed}: the sample "
                "sequence would differ")
        if state["data"].get("samples") != plan.samples or state["data"].get("rule") != order_rule:
            raise schemas.UserError(
                f"--resume {tag}: it was trained on {state['data'].get('samples')} samples in the order "
                f"'{state['data'].get('rule')}'; this run has {plan.samples} in the order '{order_rule}': "
                "the sample sequence would differ")
        if not fileio.is_local(ckpt_dir) and _local_rank() == 0:  # one copy per machine
            shutil.rmtree(os.path.join(checkpoints.folder(out), tag), ignore_errors=True)
            fileio.get_tree(fileio.join(ckpt_dir, tag), os.path.join(checkpoints.folder(out), tag))
        dist.barrier()
        engine.load(eng, checkpoints.folder(out), tag)
        start_step = state["step"]

    if isinstance(src, data.Index):
        stream = data.RankStream(src, plan, cfg.seed, rank, world, cfg.micro_batch, cfg.accumulation, start_step,
                                 models.image_size(cfg.model), cfg.crop_scale, models.tokenizer(cfg.model),
                                 grayscale=cfg.grayscale, cache_mb=cfg.sample_cache_mb)
    else:
        stream = streams.ShardStream(src, plan, cfg.seed, rank, world, cfg.micro_batch, cfg.accumulation,
                                     start_step, models.image_size(cfg.model), cfg.crop_scale,
                                     models.tokenizer(cfg.model), cfg.workers, cfg.shuffle_buffer,
                                     grayscale=cfg.grayscale)
    batches = iter(data.loader(stream, cfg.workers, low_priority=device.type == "cpu"))
    writer = None
    os.makedirs(out, exist_ok=True)
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(out, "tensorboard"), purge_step=start_step)
        fileio.write_json(fileio.join(run_dir, "config.json"), {**cfg.to_dict(), "world_size": world,
                                                                 "plan": plan.__dict__})
        fileio.write_json(fileio.join(run_dir, "deepspeed_config.json"), eng.config)  # the config DeepSpeed holds
    evaluator = None
    if cfg.eval_every and cfg.eval_suite and (rank == 0 or cfg.zero_stage == 3):  # ZeRO-3: every rank gathers
        from trainer.evaltasks import Periodic

        evaluator = Periodic(cfg.eval_suite, models.image_size(cfg.model), cfg.eval_resize_mode,
                             models.tokenizer(cfg.model))
    record = cfg.extra.get("record_samples")
    uid_name = f"samples-rank{rank}-from{start_step:08d}.txt"
    uid_log = open(os.path.join(out, uid_name), "w") if record else None  # noqa: SIM115
    if rank == 0:
        _truncate_metrics(run_dir, out, start_step)
    metrics = open(os.path.join(out, METRICS), "a") if rank == 0 else None  # noqa: SIM115

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
            out_ = eng(batch["images"].to(device, dtype, memory_format=layout), batch["tokens"].to(device))
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
            with engine.gathered(eng):
                scores = evaluator(eng.module, device, dtype)
            eval_seconds += time.perf_counter() - t_eval
            if rank == 0:
                for k, v in scores.items():
                    writer.add_scalar(f"eval/{k}", v, done)
                metrics.write(json.dumps({"step": done, "eval": scores}) + "\n")
                metrics.flush()
                print(f"[eval] step {done}  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
        if done % cfg.checkpoint_every == 0 or done == plan.total_steps:
            checkpoint(eng, cfg, out, run_dir, done, plan, world, rank)

    if uid_log:
        uid_log.close()
        _publish(out, run_dir, [uid_name])
    seconds = time.perf_counter() - started
    steps_run = max(0, min(plan.total_steps, stop_at) - start_step)
    stats = {"steps": plan.total_steps, "start_step": start_step, "steps_run": steps_run,
             "samples_seen": min(plan.total_steps, stop_at) * plan.global_batch, "world_size": world,
             "global_batch": plan.global_batch, "seconds": round(seconds, 2),
             "balance": "online" if plan.balanced else "off", "samples_per_epoch": plan.epoch_samples,
             "pool_samples": plan.samples,
             "samples_per_s": steps_run * plan.global_batch / max(seconds, 1e-9),
             "data_wait_fraction": wait / max(wait + compute, 1e-9), "final_loss": loss_value,
             "logit_scale": scale, "invalid_samples": invalid_total, "eval_seconds": round(eval_seconds, 2),
             "torch_threads": torch.get_num_threads()}
    if rank == 0:
        writer.close()
        metrics.close()
        _publish(out, run_dir, [METRICS, "tensorboard"])
        if world == 1 or cfg.zero_stage < 3:
            weights = {k: v.detach().float().cpu() for k, v in eng.module.state_dict().items()}
            # to a file object: the archive inside is then named the same whatever the temp name
            with fileio.atomic_local(fileio.join(run_dir, "final_weights.pt")) as tmp, open(tmp, "wb") as fh:
                torch.save(weights, fh)
        fileio.write_json(fileio.join(run_dir, "train_stats.json"), stats)
    dist.barrier()
    return stats


def done_logs(done: int, cfg: TrainConfig, plan: data.Plan) -> bool:
    return done % cfg.log_every == 0 or done == plan.total_steps


def checkpoint(eng, cfg: TrainConfig, work: str, run_dir: str, step: int, plan: data.Plan, world: int,
               rank: int) -> None:
    """DeepSpeed state on every rank (into the local work folder; for a run on object
    storage each machine then uploads what its ranks wrote), then rank 0 writes the sidecar
    (which marks the checkpoint complete) and removes all but the newest
    ``keep_checkpoints``."""
    tag = checkpoints.tag(step)
    local, ckpt_dir = checkpoints.folder(work), checkpoints.folder(run_dir)
    engine.save(eng, local, tag, {"step": step})
    dist.barrier()
    if not fileio.is_local(run_dir) and _local_rank() == 0:
        fileio.put_tree(os.path.join(local, tag), fileio.join(ckpt_dir, tag))
        shutil.rmtree(os.path.join(local, tag), ignore_errors=True)  # the bucket holds it now
    dist.barrier()
    if rank == 0:
        _publish(work, run_dir, [METRICS])
        epoch, in_epoch = divmod(step, plan.steps_per_epoch)
        fileio.write_json(fileio.join(ckpt_dir, tag, checkpoints.SIDECAR), {
            "step": step, "samples_seen": step * plan.global_batch, "global_batch": plan.global_batch,
            "world_size": world, "data": {"seed": cfg.seed, "epoch": epoch, "step_in_epoch": in_epoch,
                                          "steps_per_epoch": plan.steps_per_epoch, "samples": plan.samples,
                                          "epoch_samples": plan.epoch_samples, "rule": plan.rule},
            "model": cfg.model, "model_config": models.model_config(cfg.model), "config": cfg.to_dict(),
            "schema_version": schemas.SCHEMA_VERSION, "torch": torch.__version__})
        for _, old in checkpoints.done(ckpt_dir)[:-cfg.keep_checkpoints]:
            fileio.remove_tree(fileio.join(ckpt_dir, old))
    dist.barrier()
