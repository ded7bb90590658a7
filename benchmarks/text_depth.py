"""What the `debug` recipe's one-layer text tower costs against the two-layer tower it
replaced, in training as the demo runs it, interleaved in the same run.

    python -m benchmarks.text_depth --data SHARDS [--train-steps 300] [--repeats 2]

``SHARDS`` is an `openwit shard` output (the demo's). Each run is `openwit train --recipe
debug` for ``--train-steps`` steps with the demo's settings (0 workers, the sample cache),
once with the recipe's model (``openwit-debug-rn-t1``: text tower of 1 layer) and once with
``model=openwit-debug-rn`` (2 layers, everything else the same). It prints samples/s per run
and the ratio of the best of each. Whether one layer also learns shape sooner is a question
of the learning curves, not of this benchmark (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import debug_train_run
from trainer.config import RECIPES

DEMO_SETS = ("workers=0", "sample_cache_mb=1024")
BASELINE = "openwit-debug-rn"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="an `openwit shard` output folder")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the two models; the best of each counts")
    args = ap.parse_args()
    if min(args.train_steps, args.repeats) < 1:
        ap.error("--train-steps and --repeats must be at least 1")
    if not any(args.data.glob("*.tar")):
        ap.error(f"--data {args.data}: no shards there (an `openwit shard` output folder)")
    recipe = RECIPES["debug"]["model"]
    runs: dict[str, list[dict]] = {BASELINE: [], recipe: []}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
        for model in runs:
            with tempfile.TemporaryDirectory() as tmp:
                runs[model].append(debug_train_run(args.data, Path(tmp), args.train_steps,
                                                   sets=(*DEMO_SETS, f"model={model}")))
    for model, rows in runs.items():
        print(f"{model:<20} " + ", ".join(f"{r['samples_per_s']:,.1f} samples/s (data wait {r['data_wait']:.1%}, "
                                          f"loss {r['final_loss']:.3f})" for r in rows))
    best = {k: max(r["samples_per_s"] for r in v) for k, v in runs.items()}
    print(f"ratio ({recipe} / {BASELINE}), best of {args.repeats} each: {best[recipe] / best[BASELINE]:.2f}")


if __name__ == "__main__":
    main()
