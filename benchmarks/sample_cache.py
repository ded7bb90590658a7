"""CPU training with the sample cache (decoded images and tokens kept in memory after their
first read) against the `debug` recipe without it, interleaved, in the same run.

    python -m benchmarks.sample_cache --data SHARDS [--steps 450] [--repeats 2]
    python -m benchmarks.sample_cache --data SHARDS --batch-cost

``--batch-cost`` times only the making of batches of 128 in one process on one thread (best
of 3 epochs, after one that fills the cache): with and without the cache, each with the crop
taken straight from PIL (as shipped) and through torchvision's ``resized_crop`` (the
baseline, the same pixels).

Each variant runs `openwit train --recipe debug` for ``--steps`` steps on ``SHARDS`` (an
`openwit shard` output, e.g. the demo's); only ``--set`` values change:

- ``2 workers, no cache``: the recipe without the cache (2 data workers at nice 19, each
  reading, decoding, cropping and tokenising its batches);
- ``0 workers, cache``: batches made in the training process, each sample read and decoded
  once;
- ``1 worker, cache``: one worker (nice 19) with the cache, cropping while the step runs.

Figures: samples/s and data-wait fraction (train_stats.json), wall time, and whether every
run ends with byte-identical weights (they must: the cache changes where a batch's tensors
come from, not what they hold). The first epoch reads every sample, so the longer the run,
the larger the cache's share; the demo trains 22 epochs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import debug_train_run

from trainer.config import RECIPES

MODEL = RECIPES["debug"]["model"]  # the debug recipe's model

BATCH = 128


def batch_cost(data_dir: Path) -> None:
    import time

    import torch
    import torchvision.transforms.functional as TF

    from trainer import data, models

    torch.set_num_threads(1)
    index, shipped = data.Index.load(str(data_dir)), data._crop_resize

    def through_torchvision(img, left, top, width, height, size):
        return TF.resized_crop(img, top, left, height, width, [size, size], antialias=True)

    ms = {}
    for crop_name, crop in (("torchvision resized_crop", through_torchvision), ("PIL crop, resize", shipped)):
        data._crop_resize = crop
        for cache_mb in (0, 1024):
            plan = data.Plan.make(len(index), BATCH, 4, 0)
            stream = data.RankStream(index, plan, 0, 0, 1, BATCH, 1, 0, models.image_size(MODEL),
                                     (0.9, 1.0), models.tokenizer(MODEL), cache_mb=cache_mb)
            batches, times = iter(stream), []
            for _ in range(plan.steps_per_epoch):  # the first epoch fills the cache
                next(batches)
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(plan.steps_per_epoch):
                    next(batches)
                times.append((time.perf_counter() - t) / plan.steps_per_epoch * 1e3)
            ms[crop_name, cache_mb] = min(times)
            print(f"{crop_name}, cache {cache_mb} MB: {ms[crop_name, cache_mb]:.1f} ms per batch of {BATCH}",
                  flush=True)
    data._crop_resize = shipped
    for cache_mb in (0, 1024):
        print(f"ratio (PIL / torchvision), cache {cache_mb} MB: "
              f"{ms['torchvision resized_crop', cache_mb] / ms['PIL crop, resize', cache_mb]:.2f}")

VARIANTS = {
    "2 workers, no cache": ("workers=2", "sample_cache_mb=0"),
    "0 workers, cache   ": ("workers=0", "sample_cache_mb=1024"),
    "1 worker, cache    ": ("workers=1", "sample_cache_mb=1024"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="an `openwit shard` output folder")
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; the best of each counts")
    ap.add_argument("--batch-cost", action="store_true", help="time the making of batches alone (no training)")
    args = ap.parse_args()
    if args.batch_cost:
        return batch_cost(args.data)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits all
        for name, sets in VARIANTS.items():
            with tempfile.TemporaryDirectory() as tmp:
                runs[name].append(debug_train_run(args.data, Path(tmp), args.steps, sets=sets))
            r = runs[name][-1]
            print(f"{name}: {r['samples_per_s']:,.1f} samples/s (data wait {r['data_wait']:.1%}, "
                  f"{r['wall_s']:.1f}s wall)", flush=True)
    best = {name: max(r["samples_per_s"] for r in v) for name, v in runs.items()}
    base = next(iter(VARIANTS))
    for name in list(VARIANTS)[1:]:
        print(f"ratio ({name.strip()} / {base}), best of {args.repeats} each: {best[name] / best[base]:.2f}")
    same = len({r["weights"] for v in runs.values() for r in v}) == 1
    print(f"final weights byte-identical across all runs: {same}")


if __name__ == "__main__":
    main()
