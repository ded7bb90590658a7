"""`openwit train`: contrastive pretraining with DeepSpeed on `openwit shard` output or any webdataset.

    openwit train --recipe debug --data SHARDS --output RUN [--set key=value ...]
    openwit train --config run.yaml --resume latest
    openwit train --recipe debug --data SHARDS --output RUN --resume auto   (safe to rerun)
    openwit train --recipe debug --data SHARDS --output RUN --nproc 2     (2 local ranks)
    openwit train --recipe vit-l-14 --set zero_stage=3 --deepspeed-config offload.json ...
    deepspeed --num_gpus 8 --module trainer.main --recipe vit-b-32 --data ... --output ...
    deepspeed --hostfile hosts --module trainer.main ...                        (multi-node)
    torchrun --nproc-per-node 8 -m trainer.main ...
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

from schemas import fileio
from schemas.cli import Parser
from trainer.config import RECIPES, ConfigError, load

SUMMARY = "pretrain a CLIP model with DeepSpeed on openwit shards (recipes: debug, vit-b-32, vit-b-16, vit-l-14)"


class _Parser(Parser):
    error_type = ConfigError


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="openwit train", description=__doc__.split("\n\n")[0],
                epilog=__doc__.split("\n\n")[1])
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None, help="named recipe (default: debug)")
    p.add_argument("--config", default=None, help="YAML or JSON file of settings (any TrainConfig field)")
    p.add_argument("--data", default=None,
                   help="an `openwit shard` output folder, or webdataset shards as open_clip names them: "
                        "'dir/{00000..00099}.tar', several joined by '::', a list file (.txt), 'pipe:CMD', s3:// URLs")
    p.add_argument("--output", default=None, help="run folder: checkpoints, logs, final weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any setting")
    p.add_argument("--resume", default=None, help="'latest', a checkpoint tag (stepNNNNNNNN), or 'auto': the latest complete "
                   "checkpoint if there is one, else a fresh start (what a scheduler's retry wants)")
    p.add_argument("--deepspeed-config", default=None, metavar="FILE",
                   help="a DeepSpeed config (JSON or YAML) merged over the one openwit derives: ZeRO offload, "
                        "communication and activation-checkpointing settings, ... The settings openwit derives "
                        "(batch sizes, precision, clipping, optimizer, scheduler, ZeRO stage) are refused")
    p.add_argument("--nproc", type=int, default=1,
                   help="local ranks (one per GPU; CPU ranks on gloo) started with the deepspeed launcher")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher's
    return p


def parse(argv: list[str]):
    args = _parser().parse_args(argv)
    overrides = list(args.set)
    if args.data:
        overrides.append(f"data={args.data}")
    if args.output:
        overrides.append(f"output={args.output}")
    cfg = load(args.recipe, args.config, overrides, args.deepspeed_config)
    if not cfg.data:
        raise ConfigError("--data is required (an `openwit shard` output folder or webdataset shards)")
    plain = "{" not in cfg.data and "::" not in cfg.data and not cfg.data.startswith("pipe:")
    if plain and not fileio.exists(cfg.data):
        raise ConfigError(f"--data {cfg.data}: no such folder or file")
    return cfg, args.resume


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int) -> int:
    """Start ``nproc`` local ranks through the deepspeed launcher (CPU ranks use gloo)."""
    rest, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc),
           "--master_port", str(_free_port()), "--module", "trainer.main", *rest]
    return subprocess.call(cmd)


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
        parse(argv)
    except ConfigError as e:
        print(f"openwit train: {e}", file=sys.stderr)
        return 2
    if args.nproc > 1 and "RANK" not in os.environ:
        return launch(argv, args.nproc)
    return rank_main(argv)


def rank_main(argv: list[str]) -> int:
    """One rank's training (what ``trainer.main`` runs under a launcher)."""
    import torch.distributed as dist

    import schemas
    from trainer import train  # imports DeepSpeed: only once a rank runs

    cfg, resume = parse(argv)
    try:
        stats = train.run(cfg, resume)
    except schemas.UserError as e:
        print(f"openwit train: {e}", file=sys.stderr)
        return 2
    if dist.get_rank() == 0:
        balance = (f"; online balancing: {stats['samples_per_epoch']:,} of {stats['pool_samples']:,} samples drawn "
                   "anew each epoch" if stats["balance"] == "online" else "")
        print(f"train: {stats['steps_run']} steps, {stats['samples_per_s']:,.0f} samples/s, final loss "
              f"{stats['final_loss']:.4f}{balance}; checkpoints and final_weights.pt in {cfg.output}")
    return 0
