"""What one training step of the `debug` recipe's model costs on this CPU, in memory layouts
and precisions the recipe could use, against the recipe's own (fp32, channels-last batches),
interleaved in the same run.

    python -m benchmarks.debug_step_cost [--steps 20] [--repeats 2] [--threads N]
    python -m benchmarks.debug_step_cost --data SHARDS [--train-steps 300] [--repeats 2]

The bare step: the recipe's model (token embedding locked as the recipe does),
a batch of 128 random 64 px images and 20-token texts, the CLIP loss, backward, AdamW. No
data workers and no DeepSpeed, so the figures are the model's compute only; a training run
adds both (docs/evaluation.md). Variants:

- ``channels_last`` (baseline): every layer channels-last, as the recipe ran before;
- ``nchw``: contiguous batches;
- ``narrow_bn_nchw``: channels-last, but the batch norms whose channel count is not a
  multiple of 16 (the stem's two 8-channel ones) computed in NCHW, as the recipe now does on
  the CPU (``trainer.models.narrow_batch_norms_in_nchw``);
- ``bf16_autocast``: channels-last under ``torch.autocast("cpu", bfloat16)``.

Then one batch-norm layer's forward and backward on 128 x C x 32 x 32, NCHW against NHWC,
for a few channel counts: the reason for the third variant.

With ``--data SHARDS`` (an `openwit shard` output, e.g. the demo's) it instead runs `openwit
train --recipe debug` for ``--train-steps`` steps as it is (narrow batch norms in NCHW) and
with every layer channels-last (a launcher turns the former off; nothing else changes),
interleaved, and prints each run's samples/s (train_stats.json) and whether their final
weights are byte-identical (they are not: the batch-norm sums are taken in another order).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import debug_train_run
from trainer import models
from trainer.config import RECIPES
from trainer.loss import clip_loss

BATCH, SIZE, CONTEXT = 128, 64, 20
VARIANTS = ("channels_last", "nchw", "narrow_bn_nchw", "bf16_autocast")
MODEL = RECIPES["debug"]["model"]  # the debug recipe's model


ALL_CHANNELS_LAST_LAUNCHER = """
import sys
import trainer.models as m
m.narrow_batch_norms_in_nchw = lambda model: 0
from trainer.cli import rank_main
sys.exit(rank_main(sys.argv[1:]))
"""


def train_main(data: Path, steps: int, repeats: int) -> None:
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits both
        for narrow in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                launcher = None if narrow else ALL_CHANNELS_LAST_LAUNCHER
                runs[narrow].append(debug_train_run(data, Path(tmp), steps, launcher))
    for narrow, name in ((False, "all channels_last       "), (True, "narrow_bn_nchw (recipe)")):
        print(f"{name}: " + ", ".join(f"{r['samples_per_s']:,.1f} samples/s (data wait {r['data_wait']:.1%}, "
                                      f"{r['wall_s']:.1f}s wall)" for r in runs[narrow]))
    best = {k: max(r["samples_per_s"] for r in v) for k, v in runs.items()}
    same = len({r["weights"] for r in runs[False] + runs[True]}) == 1
    print(f"ratio (narrow_bn_nchw / channels_last), best of {repeats} each: {best[True] / best[False]:.2f}; "
          f"final weights byte-identical across all runs: {same}")


def step_ms(variant: str, steps: int) -> float:
    torch.manual_seed(0)
    model = models.create(MODEL, 0.07, "clip", 0)
    models.lock_token_embedding(model)
    if variant == "narrow_bn_nchw":
        models.narrow_batch_norms_in_nchw(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = torch.randn(BATCH, 3, SIZE, SIZE)
    if variant != "nchw":
        images = images.to(memory_format=torch.channels_last)
    tokens = torch.randint(1, 1000, (BATCH, CONTEXT))
    valid = torch.ones(BATCH, dtype=torch.bool)
    cast = (torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16_autocast"
            else contextlib.nullcontext())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with cast:
            image, text, scale = model(images, tokens)[:3]
        clip_loss(image, text, scale, valid).backward()
        opt.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 1000 * (time.perf_counter() - start) / steps


def batch_norm_ms(channels: int, channels_last: bool, repeats: int = 30) -> float:
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(channels)
    x = torch.randn(BATCH, channels, 32, 32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad = torch.randn_like(x)
    for _ in range(3):
        bn(x).backward(grad)
    start = time.perf_counter()
    for _ in range(repeats):
        bn(x).backward(grad)
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the variants; the best of each counts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--data", type=Path, help="an `openwit shard` output: time real training runs instead")
    ap.add_argument("--train-steps", type=int, default=300)
    args = ap.parse_args()
    if min(args.steps, args.repeats, args.train_steps) < 1 or args.threads < 0:
        ap.error("--steps, --train-steps and --repeats must be at least 1, --threads at least 0")
    if args.data and args.threads:
        ap.error("--threads applies to the bare step; a --data run uses the recipe's threads")
    if args.data and not any(args.data.glob("*.tar")):
        ap.error(f"--data {args.data}: no shards there (an `openwit shard` output folder)")
    if args.data:
        train_main(args.data, args.train_steps, args.repeats)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):  # interleaved: a slow spell of the machine hits every variant
        for v in VARIANTS:
            times[v].append(step_ms(v, args.steps))
    base = min(times["channels_last"])
    print(f"\nbare step, batch {BATCH} at {SIZE} px ({args.steps} steps, best of {args.repeats})")
    for v in VARIANTS:
        best = min(times[v])
        runs = ", ".join(f"{t:.1f}" for t in times[v])
        print(f"  {v:<15} {best:7.1f} ms   x{base / best:.2f} against channels_last   (runs: {runs})")
    print(f"\none BatchNorm2d, forward + backward on {BATCH} x C x 32 x 32")
    for c in (8, 12, 16, 24, 32):
        nchw, nhwc = batch_norm_ms(c, False), batch_norm_ms(c, True)
        print(f"  C={c:<3} NCHW {nchw:6.2f} ms   NHWC {nhwc:6.2f} ms   NHWC/NCHW {nhwc / nchw:.2f}")


if __name__ == "__main__":
    main()
