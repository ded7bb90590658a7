"""`openwit eval`: zero-shot classification of a trained or exported model on a dataset in
CLIP_benchmark's webdataset layout or an ImageFolder layout.

    openwit eval --model MODEL_DIR_OR_RUN --task zeroshot --dataset PATH [--templates openai|simple|FILE]
                 [--classnames FILE] [--output results.json]

MODEL_DIR_OR_RUN: an `openwit export` folder (open_clip's local-dir format) or an
`openwit train` run folder (its final_weights.pt and config.json). Results: one JSON record
(model, dataset, task, metrics, command) appended to --output, and a markdown row printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from trainer import evaluation, evalsets, models

SUMMARY = "evaluate a model zero-shot on a CLIP_benchmark-layout or ImageFolder dataset"
TASKS = ("zeroshot",)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise evalsets.DatasetError(message)


def load_model(path: str):
    """(model, preprocess, tokenizer) from an export folder or a training run folder."""
    root = Path(path)
    if (root / "open_clip_config.json").is_file():
        from trainer import export

        model, preprocess, tokenizer = export.load_exported(path)
        return model.eval(), preprocess, tokenizer
    if (root / "final_weights.pt").is_file() and (root / "config.json").is_file():
        import open_clip

        cfg = json.loads((root / "config.json").read_text())
        model = models.create(cfg["model"])
        model.load_state_dict(torch.load(root / "final_weights.pt"))
        preprocess = open_clip.image_transform(models.image_size(cfg["model"]), is_train=False)
        return model.eval(), preprocess, models.tokenizer(cfg["model"])
    raise evalsets.DatasetError(f"--model {path}: neither an `openwit export` folder (open_clip_config.json) "
                                "nor a training run (final_weights.pt + config.json)")


@torch.no_grad()
def zeroshot(model, preprocess, tokenizer, data: evalsets.Classification, templates: list, batch: int = 128) -> dict:
    weights = evaluation.classifier(model, tokenizer, data.classnames, templates)
    feats, labels, chunk, chunk_labels = [], [], [], []
    for _, img, label in data.images():
        chunk.append(preprocess(img))
        chunk_labels.append(label)
        if len(chunk) == batch:
            feats.append(model.encode_image(torch.stack(chunk), normalize=True).float())
            labels += chunk_labels
            chunk, chunk_labels = [], []
    if chunk:
        feats.append(model.encode_image(torch.stack(chunk), normalize=True).float())
        labels += chunk_labels
    if not feats:
        raise evalsets.DatasetError(f"{data.name}: no images")
    return evaluation.zeroshot_metrics(torch.cat(feats), torch.tensor(labels), weights)


def main(argv: list[str]) -> int:
    p = _Parser(prog="openwit eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--task", choices=TASKS, default="zeroshot")
    p.add_argument("--dataset", required=True)
    p.add_argument("--templates", default=None, help="openai | simple | a file (default: the dataset's, else simple)")
    p.add_argument("--classnames", default=None, help="class-name file (default: the dataset's classnames.txt)")
    p.add_argument("--output", default=None, help="append the JSON result record to this file")
    try:
        args = p.parse_args(argv)
        data = evalsets.load(args.dataset, args.classnames,
                             args.templates if args.templates not in (None, "openai", "simple") else None)
        templates = (evaluation.template_set(args.templates) if args.templates in ("openai", "simple")
                     else data.templates or evaluation.template_set("simple"))
        model, preprocess, tokenizer = load_model(args.model)
        metrics = zeroshot(model, preprocess, tokenizer, data, templates)
    except (evalsets.DatasetError, ValueError) as e:
        print(f"openwit eval: {e}", file=sys.stderr)
        return 2
    record = {"model": args.model, "dataset": args.dataset, "task": args.task, "templates": len(templates),
              "classes": len(data.classnames), **metrics, "command": "openwit eval " + shlex.join(argv)}
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    print("| dataset | task | samples | top-1 | top-5 | mean per-class recall |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| {data.name} | {args.task} | {metrics['samples']:,} | {metrics['top1']:.3f} | {metrics['top5']:.3f} | "
          f"{metrics['mean_per_class_recall']:.3f} |")
    return 0
