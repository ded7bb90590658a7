"""`openwit eval`: zero-shot classification, image-text retrieval and linear probes of a
trained or exported model, with CLIP_benchmark's conventions and dataset layouts.

    openwit eval --model MODEL --task zeroshot     --dataset SET [--templates openai|simple|FILE] [--classnames FILE]
    openwit eval --model MODEL --task retrieval    --dataset SET
    openwit eval --model MODEL --task linear_probe --dataset SET [--train-split train]
    openwit eval --model MODEL --suite FOLDER      (every set in FOLDER with its task)
    openwit eval --model ViT-B-32 --pretrained open_clip_pytorch_model.bin --dataset SET --device cuda

MODEL: an `openwit export` folder (open_clip's local-dir format), an `openwit train` run
folder (final_weights.pt + config.json), or an open_clip model name with its weights in
a file on disk (--pretrained; nothing is downloaded). --task also takes CLIP_benchmark's
names (zeroshot_classification, zeroshot_retrieval). SET: a CLIP_benchmark webdataset folder (shards
at the top or under ``--split``/), an ImageFolder, or, for retrieval, `openwit shard`
output. A suite folder (such as `openwit synth`'s ``eval/``) holds sets: those with a
``classnames.txt`` are evaluated zero-shot (and by a linear probe when they have a train
split and ``--linear-probe`` is given), the others by retrieval.

Results: one JSON record per dataset and task, as CLIP_benchmark writes them (dataset,
model, pretrained, task, metrics, language) with openwit's own figures and the command
beside them, written as a JSON list to --output, and a markdown table on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import tempfile

from schemas import fileio
from schemas.cli import Parser

from trainer import evalsets
from trainer.evaluation import clip_benchmark_metrics
from trainer.evaltasks import CLIP_BENCHMARK_TASKS, RESIZE_MODES, TASK_ALIASES, evaluate, load_model, suite_jobs

SUMMARY = "evaluate a model: zero-shot classification, retrieval, linear probe (CLIP_benchmark layouts)"


class _Parser(Parser):
    error_type = evalsets.DatasetError


def table(records: list[dict]) -> str:
    """A markdown table: one row per record, the task's headline metrics."""
    lines = ["| dataset | task | samples | top-1 | top-5 | mean per-class recall | I→T R@1 | I→T R@5 | T→I R@1 | T→I R@5 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(r, k):
        return f"{r[k]:.3f}" if k in r else ""
    for r in records:
        n = r.get("samples", r.get("images", 0))
        lines.append(f"| {fileio.basename(r['dataset'])} | {r['task']} | {n:,} | {f(r, 'top1')} | {f(r, 'top5')} | "
                     f"{f(r, 'mean_per_class_recall')} | {f(r, 'image_to_text_R@1')} | {f(r, 'image_to_text_R@5')} | "
                     f"{f(r, 'text_to_image_R@1')} | {f(r, 'text_to_image_R@5')} |")
    return "\n".join(lines)


MODEL_FILES = ("open_clip_config.json", "open_clip_model.safetensors", "config.json", "final_weights.pt")


def _local(path: str, stack: contextlib.ExitStack, names: tuple[str, ...] | None = None) -> str:
    """``path`` itself when local; a model or evaluation set on object storage is copied to
    local temp space first (only ``names`` of it, when given: a run's checkpoints stay)."""
    if fileio.is_local(path):
        return path
    if not fileio.isdir(path):
        raise evalsets.DatasetError(f"{path}: no such folder")
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="openwit-eval-"))
    if names is None:
        fileio.get_tree(path, tmp)
    else:
        for name in names:
            if fileio.isfile(fileio.join(path, name)):
                fileio.publish(fileio.join(path, name), os.path.join(tmp, name))
    return tmp


def _device(name: str | None) -> str:
    """The torch device asked for, checked; by default CUDA when a GPU is visible."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise evalsets.DatasetError(f"--device {name}: not a torch device (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise evalsets.DatasetError(f"--device {name}: no CUDA device is visible to torch here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise evalsets.DatasetError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return str(device)


def _local_file(path: str, stack: contextlib.ExitStack) -> str:
    """A checkpoint file, copied to local temp space first when it lies on object storage."""
    if fileio.is_local(path):
        return path
    if not fileio.isfile(path):
        raise evalsets.DatasetError(f"--pretrained {path}: no such file")
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="openwit-eval-"))
    local = os.path.join(tmp, fileio.basename(path))
    fileio.publish(path, local)
    return local


def record(model: str, pretrained: str | None, dataset: str, task: str, metrics: dict, device: str,
           argv: list[str]) -> dict:
    """One result record: CLIP_benchmark's keys (dataset, model, pretrained, task, metrics,
    language), then openwit's figures under its own names, the device and the command."""
    return {"dataset": dataset, "model": model, "pretrained": pretrained, "task": CLIP_BENCHMARK_TASKS[task],
            "metrics": clip_benchmark_metrics(task, metrics), "language": "en", **metrics, "device": device,
            "command": "openwit eval " + shlex.join(argv)}


def main(argv: list[str]) -> int:
    p = _Parser(prog="openwit eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True,
                   help="an `openwit export` folder, an `openwit train` run folder, or an open_clip model name "
                        "(with --pretrained)")
    p.add_argument("--pretrained", default=None, metavar="FILE",
                   help="weights of the open_clip model named by --model: a checkpoint file on disk")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", help="one evaluation set")
    what.add_argument("--suite", help="a folder of evaluation sets (e.g. `openwit synth`'s eval/)")
    p.add_argument("--task", choices=sorted(TASK_ALIASES), default="zeroshot", help="what --dataset is evaluated on")
    p.add_argument("--split", default="test", help="split subfolder evaluated (when the set has splits)")
    p.add_argument("--train-split", default="train", help="split the linear probe is fitted on")
    p.add_argument("--linear-probe", action="store_true", help="with --suite: also probe sets with a train split")
    p.add_argument("--templates", default=None, help="openai | simple | a file (default: the dataset's, else simple)")
    p.add_argument("--classnames", default=None, help="class-name file (default: the dataset's classnames.txt)")
    p.add_argument("--resize-mode", choices=RESIZE_MODES, default=None,
                   help="image preprocessing (default: the one the model was trained for, as its export or "
                        "its run recorded it; else shortest); 'longest' letterboxes, as img2dataset's border resize")
    p.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:1, ... (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="threads preprocessing images (default: the cores, at most 8)")
    p.add_argument("--output", default=None, help="write the JSON result records (a list) to this file")
    try:
        args = p.parse_args(argv)
        device = _device(args.device)
        if args.batch_size < 1 or args.workers < 0:
            raise evalsets.DatasetError("--batch-size must be positive and --workers 0 or more")
        if args.output:  # now, not after the evaluation
            out_dir = fileio.dirname(args.output) or "."
            if fileio.is_local(args.output):
                fileio.makedirs(out_dir)
        with contextlib.ExitStack() as stack:
            given = args.suite or args.dataset
            where = _local(given, stack)
            jobs = suite_jobs(where, args.linear_probe) if args.suite else [(where, TASK_ALIASES[args.task])]
            model_path = args.model if args.pretrained else _local(args.model, stack, MODEL_FILES)
            pretrained = _local_file(args.pretrained, stack) if args.pretrained else None
            model, preprocess, tokenizer = load_model(model_path, args.resize_mode, pretrained)
            model = model.to(device)
            records = []
            for dataset, task in jobs:
                metrics = evaluate(model, preprocess, tokenizer, dataset, task, args.templates, args.classnames,
                                   args.split, args.train_split, device=device, batch=args.batch_size,
                                   workers=args.workers)
                named = given + dataset[len(where):] if dataset.startswith(where) else dataset
                records.append(record(args.model, args.pretrained, named, task, metrics, device, argv))
    except (evalsets.DatasetError, ValueError) as e:
        print(f"openwit eval: {e}", file=sys.stderr)
        return 2
    if args.output:
        fileio.write_text(args.output, json.dumps(records, indent=1) + "\n")
    print(table(records))
    return 0
