"""DeepSpeed: the only module that imports it.

Builds the DeepSpeed config from the trainer config (micro-batch, accumulation, bf16,
ZeRO stage, explicit gradient clipping), starts the process group (gloo on CPU, NCCL on
GPUs), wraps the model and an AdamW whose weight decay skips gains, biases, every
embedding (token, position, class) and the temperature (open_clip decays the token and
positional embeddings), clamps the temperature on the fp32 master weights,
and saves/loads checkpoints.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import socket

import deepspeed
import torch
from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

from schemas import UserError
from trainer import models
from trainer.config import TrainConfig, merged


def init_distributed() -> tuple[int, int]:
    """(rank, world size); a single process started without a launcher gets a world of 1."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # DeepSpeed's torch backend JIT-builds (24 s on a 2-core machine's first run) and starts a
    # shared-memory all-reduce that only its inference path (inference_all_reduce) uses; training's
    # collectives are the process group's, so it is not built
    importlib.import_module("deepspeed.comm.torch").build_shm_op = _no_shm_op  # the module, not comm's torch
    deepspeed.init_distributed(dist_backend=backend)
    if backend == "gloo":
        share_cores()
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def share_cores() -> int:
    """CPU ranks on one machine split its cores: each takes cores / local ranks threads, not
    torch's default of every core each (two ranks of two threads on two cores spin against each
    other). OMP_NUM_THREADS, when set, is the user's choice and is kept. Returns the threads."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or 1)
    if os.environ.get("OMP_NUM_THREADS") or local <= 1:
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // local)
    torch.set_num_threads(threads)
    return threads


def _no_shm_op() -> None:
    return None


def ds_config(cfg: TrainConfig) -> dict:
    """The DeepSpeed config derived from ``cfg``, with the user's ``cfg.deepspeed`` settings
    (checked not to touch what openwit derives) merged over it."""
    return merged({
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.accumulation,
        "gradient_clipping": cfg.gradient_clipping,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "zero_optimization": {"stage": cfg.zero_stage},  # not-a-column
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }, cfg.deepspeed)


def initialize(model: torch.nn.Module, cfg: TrainConfig):
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    # on the CPU, torch's fused AdamW: one vectorised kernel per tensor instead of a dozen small
    # operations each (the debug model's 95 tensors: 1.4 ms a step against 7.8); GPUs keep the default
    optimizer = torch.optim.AdamW(models.param_groups(model, cfg.weight_decay), lr=cfg.learning_rate(1),
                                  betas=tuple(cfg.betas), eps=cfg.eps, fused=not torch.cuda.is_available())
    try:
        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config(cfg))
    except ValueError as e:  # DeepSpeed's own check of its config (pydantic), e.g. a user's bad value
        if type(e).__name__ != "ValidationError":
            raise
        error = e.errors()[0]
        where = ".".join(str(x) for x in error.get("loc", ())) or "?"
        raise UserError(f"DeepSpeed refuses its config: {e.title}.{where}: {error.get('msg')} "
                        f"(got {error.get('input')!r})") from None
    return engine, optimizer


def gathered(engine):
    """A context in which every parameter is whole on every rank. ZeRO-3 splits each one
    across the ranks and gathers what a layer reads only inside the engine's forward; the
    periodic evaluation calls the model's encoders directly, which read parameters of the
    top module (positional embedding, text projection) outside any layer. Other stages: no-op."""
    if engine.zero_optimization_stage() == 3:
        return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clamp_temperature(engine, max_scale: float) -> float:
    """Clamp log(logit scale) to log(max_scale) on the weights the optimizer updates: the
    fp32 master copy under bf16/ZeRO (an in-place clamp of the module's bf16 copy would be
    overwritten at the next step), the parameter itself in fp32. Returns the scale."""
    p = engine.module.logit_scale
    bound = math.log(max_scale)
    master = safe_get_full_fp32_param(p) if _has_master(engine) else None
    if master is not None:
        if float(master.max()) > bound:
            safe_set_full_fp32_param(p, master.clamp(max=bound))
    with torch.no_grad():
        p.clamp_(max=bound)
    value = safe_get_full_fp32_param(p) if master is not None else p.detach()
    return float(value.float().exp().reshape(-1)[0])


def _has_master(engine) -> bool:
    return bool(engine.bfloat16_enabled() or engine.zero_optimization_stage() > 0)


def save(engine, folder: str, tag: str, client_state: dict) -> None:
    engine.save_checkpoint(folder, tag=tag, client_state=client_state)


def load(engine, folder: str, tag: str) -> dict:
    _, client_state = engine.load_checkpoint(folder, tag=tag, load_optimizer_states=True,
                                             load_lr_scheduler_states=False)
    return client_state or {}


def grad_norm(engine, fallback: float | None = None) -> float:
    """DeepSpeed's global gradient norm; without ZeRO it keeps none, so the caller measures
    it (``boundary_grad_norm``) before the step."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        norm = fallback
    return float(norm) if norm is not None else float("nan")


def boundary_grad_norm(engine) -> float | None:
    """The 2-norm of the module's gradients after the last backward of a step (already
    averaged across ranks without ZeRO), before clipping; None when grads are partitioned."""
    if engine.zero_optimization_stage() > 0:
        return None
    sq = [p.grad.detach().float().pow(2).sum() for p in engine.module.parameters() if p.grad is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else None


def consolidated_state_dict(folder: str, tag: str) -> dict:
    """The full fp32 model state of a checkpoint, whatever the ZeRO stage and world size:
    ZeRO checkpoints through DeepSpeed's consolidation (the fp32 master weights), others
    from the saved module."""
    import glob

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    path = os.path.join(folder, tag)
    module = torch.load(os.path.join(path, "mp_rank_00_model_states.pt"), map_location="cpu",
                        weights_only=False)["module"]
    if glob.glob(os.path.join(path, "*optim_states.pt")) and glob.glob(os.path.join(path, "*zero_pp_rank_*")):
        state = get_fp32_state_dict_from_zero_checkpoint(folder, tag=tag)
        # ZeRO-1 keeps frozen parameters (a locked token embedding) only in the module's state,
        # in the precision training held them; ZeRO-2 and 3 also save them for the consolidation
        state.update({k: v for k, v in module.items() if k not in state and v.numel()})
    else:
        state = module
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
