"""`openwit train` against open_clip's own trainer (`python -m open_clip_train.main`, shipped
in the open_clip wheel), in the same run, on the same shards, model config, batch size,
precision and learning-rate schedule, on CPU.

    python -m benchmarks.train_vs_open_clip --data SHARDS [--steps 300] [--batch 32]

Both train the `openwit-debug` towers (trainer/model_configs/) in fp32, one process, 2 data
workers. Figures: samples/s over the steady part of each run (open_clip: from its per-step
"Batch (t)" log lines, averaged after the first 10 steps; ours: from metrics.jsonl, after
the first 10 steps), wall time of each command, and our data-wait fraction.

open_clip_train 3.3.0 with webdataset 0.2.111 stops at its first batch (webdataset emits an
end-of-shard marker that its loader does not expect); the run below starts it from a small
launcher that passes ``eof_value=None`` to webdataset's tar expander, nothing else changed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHER = """
import functools, sys
import webdataset.tariterators as wt
import open_clip_train.data as d
d.tar_file_expander = functools.partial(wt.tar_file_expander, eof_value=None)
from open_clip_train.main import main
main(sys.argv[1:])
"""


def open_clip_dir(work: Path) -> Path:
    cfg = json.loads((Path(__file__).resolve().parents[1] / "trainer" / "model_configs" / "openwit-debug.json").read_text())
    folder = work / "open_clip_model"
    folder.mkdir()
    size = cfg["vision_cfg"]["image_size"]
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": {"size": size, "mean": [0.48145466, 0.4578275, 0.40821073],  # not-a-column
                                             "std": [0.26862954, 0.26130258, 0.27577711]}}))
    return folder


def run_open_clip(data: Path, work: Path, steps: int, batch: int, lr: float, warmup: int) -> dict:
    sizes = json.loads((data / "sizes.json").read_text())
    shards = sorted(sizes)
    urls = str(data / ("{%s..%s}.tar" % (shards[0][:-4], shards[-1][:-4])))
    samples = steps * batch
    launcher = work / "launch_open_clip.py"
    launcher.write_text(LAUNCHER)
    cmd = [sys.executable, str(launcher), "--train-data", urls, "--train-num-samples", str(samples),
           "--dataset-type", "webdataset", "--batch-size", str(batch), "--epochs", "1",
           "--model", f"local-dir:{open_clip_dir(work)}", "--precision", "fp32", "--workers", "2",
           "--lr", str(lr), "--warmup", str(warmup), "--wd", "0.1", "--beta1", "0.9", "--beta2", "0.98",
           "--eps", "1e-6", "--logs", str(work / "open_clip_logs"), "--name", "bench", "--log-every-n-steps", "1",
           "--seed", "0"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"open_clip_train failed:\n{proc.stderr[-3000:]}")
    log = proc.stdout + proc.stderr + "".join(p.read_text() for p in (work / "open_clip_logs").rglob("out.log"))
    times = [float(x) for x in re.findall(r"Batch \(t\): ([0-9.]+)", log)]
    steady = times[10:] or times
    return {"wall_s": wall, "steps_logged": len(times), "samples_per_s": batch / (sum(steady) / len(steady))}


def run_openwit(data: Path, work: Path, steps: int, batch: int, lr: float, warmup: int) -> dict:
    out = work / "openwit_run"
    cmd = [sys.executable, "-m", "trainer.main", "--recipe", "debug", "--data", str(data), "--output", str(out),
           "--set", f"steps={steps}", "--set", f"micro_batch={batch}", "--set", "precision=fp32",
           "--set", "zero_stage=0", "--set", "workers=2", "--set", f"lr={lr}", "--set", f"warmup_steps={warmup}",
           "--set", "weight_decay=0.1", "--set", "log_every=1", "--set", f"checkpoint_every={steps}",
           "--set", "gradient_clipping=0"]  # open_clip_train clips only with --grad-clip-norm
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"openwit train failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = rows[10:] or rows
    # metrics rows hold the rate since the previous row: average the time per step
    per_step = sum(batch / r["samples_per_s"] for r in steady) / len(steady)
    stats = json.loads((out / "train_stats.json").read_text())
    return {"wall_s": wall, "samples_per_s": batch / per_step, "data_wait": stats["data_wait_fraction"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="an `openwit shard` output folder")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; the best of each counts")
    args = ap.parse_args()
    theirs_all, ours_all = [], []
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
        with tempfile.TemporaryDirectory() as tmp:
            theirs_all.append(run_open_clip(args.data, Path(tmp), args.steps, args.batch, 1e-3, 20))
        with tempfile.TemporaryDirectory() as tmp:
            ours_all.append(run_openwit(args.data, Path(tmp), args.steps, args.batch, 1e-3, 20))
    for name, runs in (("open_clip_train", theirs_all), ("openwit train  ", ours_all)):
        print(f"{name}: " + ", ".join(f"{r['samples_per_s']:,.1f} samples/s steady / {r['wall_s']:.1f}s wall"
                                      for r in runs)
              + (f"; data wait {runs[0]['data_wait']:.1%}" if "data_wait" in runs[0] else ""))
    theirs = max(theirs_all, key=lambda r: r["samples_per_s"])
    ours = max(ours_all, key=lambda r: r["samples_per_s"])
    theirs["wall_s"] = min(r["wall_s"] for r in theirs_all)
    ours["wall_s"] = min(r["wall_s"] for r in ours_all)
    print(f"ratio (openwit / open_clip), best of {args.repeats} each: "
          f"{ours['samples_per_s'] / theirs['samples_per_s']:.2f} steady, {theirs['wall_s'] / ours['wall_s']:.2f} by wall time")


if __name__ == "__main__":
    main()
