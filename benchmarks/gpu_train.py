"""Training throughput and model FLOPs utilisation of openwit's engine on synthetic
in-memory batches (the disk and the decoder are not measured).

    python -m benchmarks.gpu_train --model ViT-B-16 --batch 256 --steps 60 [--peak-tflops 989]

FLOPs per step are counted once with torch's FlopCounterMode on a real forward + backward
of the model (matmuls and convolutions), so MFU = counted FLOPs x steps/s / peak. The peak
defaults to an H200's dense bf16 figure (989 TFLOP/s). On a CPU, use a tiny model to check
that the script runs (`--model openwit-debug --batch 8 --steps 3`): the MFU is then meaningless.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer import engine, models
from trainer.config import load
from trainer.loss import clip_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args()
    cfg = load("debug", None, [f"model={args.model}", f"micro_batch={args.batch}", f"precision={args.precision}",
                               "zero_stage=1", "data=/dev/null"])
    rank, world = engine.init_distributed()
    model = models.create(args.model)
    eng, optimizer = engine.initialize(model, cfg)
    device, dtype = eng.device, torch.bfloat16 if args.precision == "bf16" else torch.float32
    size = models.image_size(args.model)
    ctx = models.model_config(args.model)["text_cfg"].get("context_length", 77)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, size, size, generator=gen).to(device, dtype)
    tokens = torch.randint(1, 49000, (args.batch, ctx), generator=gen).to(device)
    valid = torch.ones(args.batch, dtype=torch.bool, device=device)

    def step() -> None:
        img, txt, scale = eng(images, tokens)[:3]
        loss = clip_loss(img, txt, scale, valid)
        eng.backward(loss)
        eng.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    steps_s = args.steps / seconds
    result = {"model": args.model, "batch_per_rank": args.batch, "ranks": world, "precision": args.precision,
              "device": str(device), "samples_per_s": steps_s * args.batch * world,
              "tflops_per_step": flops / 1e12, "achieved_tflops": flops * steps_s / 1e12,
              "mfu": flops * steps_s / (args.peak_tflops * 1e12)}
    if rank == 0:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
