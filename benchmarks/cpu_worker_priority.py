"""CPU training with its data workers at the lowest priority (what `openwit train` does on
the CPU) against the same run with the workers at normal priority, interleaved, in the same run.

    python -m benchmarks.cpu_worker_priority --data SHARDS [--steps 300] [--repeats 2]

Both run the `debug` recipe (its model, batch 128, 2 data workers, DeepSpeed) for ``--steps``
steps on ``SHARDS`` (an `openwit shard` output, e.g. the demo's). The baseline is started from a
small launcher that leaves the workers' priority as it is, nothing else changed. Figures: the
run's samples/s (train_stats.json: every step, checkpoints included), its data-wait fraction,
and whether the two runs end with byte-identical weights (they must: priority changes when a
batch is made, not what it holds).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import debug_train_run

PLAIN_PRIORITY = """
import sys
import trainer.data as d
d._lowest_priority = lambda worker: None
from trainer.cli import rank_main
sys.exit(rank_main(sys.argv[1:]))
"""


def run(data: Path, work: Path, steps: int, lowest: bool) -> dict:
    return debug_train_run(data, work, steps, None if lowest else PLAIN_PRIORITY)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="an `openwit shard` output folder")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; the best of each counts")
    args = ap.parse_args()
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
        for lowest in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                runs[lowest].append(run(args.data, Path(tmp), args.steps, lowest))
    for lowest, name in ((False, "workers at normal priority"), (True, "workers at nice 19        ")):
        print(f"{name}: " + ", ".join(f"{r['samples_per_s']:,.1f} samples/s (data wait {r['data_wait']:.1%}, "
                                      f"{r['wall_s']:.1f}s wall)" for r in runs[lowest]))
    same = len({r["weights"] for r in runs[False] + runs[True]}) == 1
    best = {k: max(r["samples_per_s"] for r in v) for k, v in runs.items()}
    print(f"ratio (nice 19 / normal), best of {args.repeats} each: {best[True] / best[False]:.2f}; "
          f"final weights byte-identical across all runs: {same}")


if __name__ == "__main__":
    main()
