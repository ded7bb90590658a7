"""Three changes to the `debug` recipe's CPU step that keep its math, each timed against what
it replaces, and then whole training runs with all three against none, interleaved.

    python -m benchmarks.exact_step --data SHARDS [--train-steps 300] [--repeats 2]

``SHARDS`` is an `openwit shard` output (the demo's: its captions set the text lengths).

- ``pack_text``: the text tower's per-token layers on each caption's tokens up to its
  end-of-text token (``trainer.models.pack_text_tokens``), against open_clip's encode_text
  on the whole context; forward and backward of the tower on 128 of the shards' captions.
- attention pool: the ResNet's pool projects the one query it keeps
  (``trainer.models.first_query_attention_pool``), against open_clip's pool, which projects
  one per position; forward and backward on the debug model's 128 x 512 x 2 x 2 input.
- AdamW: torch's fused CPU kernel against its default, one step over the debug model's
  trainable tensors.

Each component also prints the largest difference of its output from what it replaces.
The training runs (`openwit train --recipe debug` as the demo runs it: 0 workers, the
sample cache) print samples/s per run and the ratio of the best of each; their weights
differ in the last bits (the same math, summed in another order), so they are compared by
their final loss only.
"""

from __future__ import annotations

import argparse
import copy
import io
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import debug_train_run
from trainer import models
from trainer.config import RECIPES

BATCH = 128
MODEL = RECIPES["debug"]["model"]  # the debug recipe's model
DEMO_SETS = ("workers=0", "sample_cache_mb=1024")
WITHOUT_LAUNCHER = """
import sys
import torch
import trainer.models as m
m.first_query_attention_pool = lambda model: 0
_AdamW = torch.optim.AdamW
class AdamW(_AdamW):
    def __init__(self, *args, fused=None, **kwargs):
        super().__init__(*args, **kwargs)
torch.optim.AdamW = AdamW
from trainer.cli import rank_main
sys.exit(rank_main(sys.argv[1:]))
"""


def captions(shards: Path, n: int) -> list[str]:
    out: list[str] = []
    for tar in sorted(shards.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for member in tf:
                if member.name.endswith(".txt"):
                    out.append(io.TextIOWrapper(tf.extractfile(member), encoding="utf-8").read())
                    if len(out) == n:
                        return out
    return out


def timed(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def components(shards: Path, rounds: int) -> None:
    plain = models.create(MODEL, 0.07, "clip", 0)
    models.lock_token_embedding(plain)
    changed = copy.deepcopy(plain)
    assert models.pack_text_tokens(changed) and models.first_query_attention_pool(changed) == 1
    texts = captions(shards, BATCH)
    tokens = models.tokenizer(MODEL)(texts)
    ends = tokens.argmax(dim=-1) + 1
    print(f"{len(texts)} captions: {ends.float().mean():.1f} tokens to the end-of-text token on average, "
          f"the longest {int(ends.max())} (context {tokens.shape[1]})")
    pool_in = torch.randn(BATCH, 512, 2, 2)
    rows = []
    for name, run in (("text tower", lambda m: m.encode_text(tokens)),
                      ("attention pool", lambda m: m.visual.attnpool(pool_in))):
        diff = (run(plain) - run(changed)).abs().max().item()
        best = {}
        for _ in range(rounds):  # interleaved
            for label, m in (("open_clip", plain), ("changed", changed)):
                ms = timed(lambda: run(m).sum().backward())
                best[label] = min(best.get(label, ms), ms)
        rows.append((name, best["open_clip"], best["changed"], diff))
    params = [p for p in plain.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    best = {}
    for _ in range(rounds):
        for label, fused in (("open_clip", False), ("changed", True)):
            opt = torch.optim.AdamW(models.param_groups(plain, 0.1), lr=1e-3, fused=fused)
            ms = timed(opt.step, 50)
            best[label] = min(best.get(label, ms), ms)
    ref, out = copy.deepcopy(params), copy.deepcopy(params)
    for group, fused in ((ref, False), (out, True)):
        for p, src in zip(group, params):
            p.grad = src.grad.clone()
        torch.optim.AdamW(group, lr=1e-3, weight_decay=0.1, fused=fused).step()
    diff = max((a - b).abs().max().item() for a, b in zip(ref, out))
    rows.append((f"AdamW step ({len(params)} tensors)", best["open_clip"], best["changed"], diff))
    print("\n| part (forward + backward) | before (ms) | after (ms) | ratio | largest difference |")
    print("|---|---:|---:|---:|---:|")
    for name, before, after, diff in rows:
        print(f"| {name} | {before:.2f} | {after:.2f} | {before / after:.2f} | {diff:.1e} |")


def training(data: Path, steps: int, repeats: int) -> None:
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits both
        for label in runs:
            with tempfile.TemporaryDirectory() as tmp:
                if label == "without":
                    r = debug_train_run(data, Path(tmp), steps, launcher=WITHOUT_LAUNCHER,
                                        sets=(*DEMO_SETS, "pack_text=false"))
                else:
                    r = debug_train_run(data, Path(tmp), steps, sets=DEMO_SETS)
            runs[label].append(r)
            print(f"{label:8s} {r['samples_per_s']:7.1f} samples/s  data wait {100 * r['data_wait']:.1f}%  "
                  f"final loss {r['final_loss']:.4f}  wall {r['wall_s']:.1f} s", flush=True)
    best = {k: max(r["samples_per_s"] for r in v) for k, v in runs.items()}
    print(f"training, {steps} steps: with the three changes {best['with']:.1f} samples/s against "
          f"{best['without']:.1f} without, ratio {best['with'] / best['without']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="an `openwit shard` output (e.g. the demo's)")
    ap.add_argument("--train-steps", type=int, default=300, help="steps per training run (0: components only)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each counts")
    args = ap.parse_args()
    if args.train_steps < 0 or args.repeats < 1:
        ap.error("--train-steps must be 0 or more and --repeats at least 1")
    if not any(args.data.glob("*.tar")):
        ap.error(f"--data {args.data}: no shards there (an `openwit shard` output folder)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    components(args.data, args.repeats)
    if args.train_steps:
        training(args.data, args.train_steps, args.repeats)


if __name__ == "__main__":
    main()
