"""`openwit eval`: zero-shot classification, image-text retrieval and linear probes of a
trained or exported model, with CLIP_benchmark's conventions and dataset layouts.

    openwit eval --model MODEL --task zeroshot     --dataset SET [--templates openai|simple|FILE] [--classnames FILE]
    openwit eval --model MODEL --task retrieval    --dataset SET
    openwit eval --model MODEL --task linear_probe --dataset SET [--train-split train]
    openwit eval --model MODEL --suite FOLDER      (every set in FOLDER with its task)

MODEL: an `openwit export` folder (open_clip's local-dir format) or an `openwit train` run
folder (final_weights.pt + config.json). SET: a CLIP_benchmark webdataset folder (shards
at the top or under ``--split``/), an ImageFolder, or, for retrieval, `openwit shard`
output. A suite folder (such as `openwit synth`'s ``eval/``) holds sets: those with a
``classnames.txt`` are evaluated zero-shot (and by a linear probe when they have a train
split and ``--linear-probe`` is given), the others by retrieval.

Results: one JSON record per dataset and task (model, dataset, task, metrics, command),
written as a JSON list to --output, and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from trainer import evaluation, evalsets, models

SUMMARY = "evaluate a model: zero-shot classification, retrieval, linear probe (CLIP_benchmark layouts)"
TASKS = ("zeroshot", "retrieval", "linear_probe")
RESIZE_MODES = ("shortest", "longest", "squash")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise evalsets.DatasetError(message)


def preprocess_for(size: int, resize_mode: str):
    """open_clip's evaluation transform; 'longest' letterboxes on white (as img2dataset's
    border resize does), 'shortest' resizes and centre-crops (the ImageNet protocol)."""
    import open_clip

    return open_clip.image_transform(size, is_train=False, resize_mode=resize_mode,
                                     fill_color=255 if resize_mode == "longest" else 0)


def load_model(path: str, resize_mode: str | None = None):
    """(model, preprocess, tokenizer) from an export folder or a training run folder."""
    root = Path(path)
    if (root / "open_clip_config.json").is_file():
        from trainer import export

        model, preprocess, tokenizer = export.load_exported(path)
        if resize_mode:
            size = json.loads((root / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"]["image_size"]
            preprocess = preprocess_for(size, resize_mode)
        return model.eval(), preprocess, tokenizer
    if (root / "final_weights.pt").is_file() and (root / "config.json").is_file():
        cfg = json.loads((root / "config.json").read_text())
        model = models.create(cfg["model"])
        try:
            model.load_state_dict(torch.load(root / "final_weights.pt"))
        except (RuntimeError, OSError, EOFError) as e:
            raise evalsets.DatasetError(f"{root / 'final_weights.pt'}: cannot load ({str(e).splitlines()[0]})") from None
        preprocess = preprocess_for(models.image_size(cfg["model"]), resize_mode or "shortest")
        return model.eval(), preprocess, models.tokenizer(cfg["model"])
    raise evalsets.DatasetError(f"--model {path}: neither an `openwit export` folder (open_clip_config.json) "
                                "nor a training run (final_weights.pt + config.json)")


@torch.no_grad()
def image_features(model, preprocess, images, batch: int = 128, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Normalised image embeddings of an iterable of PIL images (or of preprocessed
    tensors when ``preprocess`` is None), in order."""
    feats, chunk = [], []

    def flush():
        x = torch.stack(chunk).to(device, dtype)
        feats.append(model.encode_image(x, normalize=True).float().cpu())
        chunk.clear()
    for img in images:
        chunk.append(preprocess(img) if preprocess else img)
        if len(chunk) == batch:
            flush()
    if chunk:
        flush()
    return torch.cat(feats) if feats else torch.empty(0)


@torch.no_grad()
def text_features(model, tokenizer, texts: list[str], batch: int = 256, device="cpu") -> torch.Tensor:
    return torch.cat([model.encode_text(tokenizer(texts[i:i + batch]).to(device), normalize=True).float().cpu()
                      for i in range(0, len(texts), batch)])


def zeroshot(model, preprocess, tokenizer, images, labels: list, classnames: list, templates: list, name: str,
             device="cpu", dtype=torch.float32) -> dict:
    """Zero-shot metrics; ``images`` are PIL images, or preprocessed tensors when
    ``preprocess`` is None (the periodic evaluation prepares them once)."""
    weights = evaluation.classifier(model, tokenizer, classnames, templates, device=device).cpu()
    feats = image_features(model, preprocess, images, device=device, dtype=dtype)
    if not len(feats):
        raise evalsets.DatasetError(f"{name}: no images")
    return evaluation.zeroshot_metrics(feats, torch.as_tensor(labels), weights)


def retrieval(model, preprocess, tokenizer, images, texts: list, text_image: list, ks=(1, 5, 10), device="cpu",
              dtype=torch.float32) -> dict:
    feats = image_features(model, preprocess, images, device=device, dtype=dtype)
    return evaluation.retrieval_metrics(feats, text_features(model, tokenizer, texts, device=device),
                                        torch.as_tensor(text_image), ks=ks)


def linear_probe(model, preprocess, train: evalsets.Classification, test: evalsets.Classification,
                 seed: int = 0, device="cpu") -> dict:
    tr = image_features(model, preprocess, (img for _, img, _ in train.images()), device=device).numpy()
    te = image_features(model, preprocess, (img for _, img, _ in test.images()), device=device).numpy()
    return {**evaluation.linear_probe(tr, np.asarray(train.labels), te, np.asarray(test.labels), seed=seed),
            "train_samples": len(tr), "samples": len(te)}


def evaluate(model, preprocess, tokenizer, dataset: str, task: str, templates: str | None = None,
             classnames: str | None = None, split: str = "test", train_split: str = "train", device="cpu") -> dict:
    """Metrics of one task on one dataset (raises DatasetError naming the file on bad data)."""
    if task == "retrieval":
        pairs = evalsets.load_retrieval(dataset, split)
        return {**retrieval(model, preprocess, tokenizer, (img for _, img in pairs.decoded()), pairs.texts,
                            pairs.text_image, device=device), "images": len(pairs.images), "texts": len(pairs.texts)}
    file_templates = templates if templates not in (None, "openai", "simple") else None
    data = evalsets.load(dataset, classnames, file_templates, split)
    if task == "linear_probe":
        if not (Path(dataset) / train_split).is_dir():
            raise evalsets.DatasetError(f"{dataset}: no {train_split}/ split to fit the linear probe on")
        train = evalsets.load(dataset, classnames, file_templates, train_split)
        return {**linear_probe(model, preprocess, train, data, device=device), "classes": len(data.classnames)}
    chosen = (evaluation.template_set(templates) if templates in ("openai", "simple")
              else data.templates or evaluation.template_set("simple"))
    return {**zeroshot(model, preprocess, tokenizer, (img for _, img, _ in data.images()), data.labels,
                       data.classnames, chosen, data.name, device=device),
            "templates": len(chosen), "classes": len(data.classnames)}


class Periodic:
    """The evaluation `openwit train` runs every K steps: the zero-shot and retrieval sets
    of a suite folder, loaded and preprocessed once, scored on the live model."""

    def __init__(self, suite: str, image_size: int, resize_mode: str, tokenizer):
        preprocess = preprocess_for(image_size, resize_mode)
        self.tokenizer = tokenizer
        self.sets = []
        for dataset, task in suite_jobs(suite):
            if task == "zeroshot":
                data = evalsets.load(dataset)
                images = torch.stack([preprocess(img) for _, img, _ in data.images()])
                self.sets.append((Path(dataset).name, task, images, data.classnames,
                                  data.templates or evaluation.template_set("simple"), torch.tensor(data.labels)))
            else:
                data = evalsets.load_retrieval(dataset)
                images = torch.stack([preprocess(img) for _, img in data.decoded()])
                self.sets.append((Path(dataset).name, task, images, None, data.texts, torch.tensor(data.text_image)))

    @torch.no_grad()
    def __call__(self, model, device="cpu", dtype=torch.float32) -> dict:
        """{"set/metric": value}: top-1 for zero-shot sets, R@1/R@5 both ways for retrieval."""
        was_training = model.training
        model.eval()
        out = {}
        try:
            for name, task, images, classnames, texts, labels in self.sets:
                if task == "zeroshot":
                    out[f"{name}/top1"] = zeroshot(model, None, self.tokenizer, images, labels, classnames, texts, name,
                                                   device=device, dtype=dtype)["top1"]
                else:
                    m = retrieval(model, None, self.tokenizer, images, texts, labels, ks=(1, 5), device=device,
                                  dtype=dtype)
                    out.update({f"{name}/{k}": v for k, v in m.items()})
        finally:
            model.train(was_training)
        return out


def suite_jobs(folder: str, linear: bool = False) -> list[tuple[str, str]]:
    """(dataset folder, task) for every set in a suite folder, in name order."""
    root = Path(folder)
    if not root.is_dir():
        raise evalsets.DatasetError(f"--suite {folder}: no such folder")
    jobs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (d / evalsets.CLASSNAMES).is_file():
            jobs.append((str(d), "zeroshot"))
            if linear and (d / "train").is_dir():
                jobs.append((str(d), "linear_probe"))
        elif any(d.glob("*.tar")) or any(d.glob("*/*.tar")):
            jobs.append((str(d), "retrieval"))
    if not jobs:
        raise evalsets.DatasetError(f"--suite {folder}: no evaluation sets in it")
    return jobs


def table(records: list[dict]) -> str:
    """A markdown table: one row per record, the task's headline metrics."""
    lines = ["| dataset | task | samples | top-1 | top-5 | mean per-class recall | I→T R@1 | I→T R@5 | T→I R@1 | T→I R@5 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(r, k):
        return f"{r[k]:.3f}" if k in r else ""
    for r in records:
        n = r.get("samples", r.get("images", 0))
        lines.append(f"| {Path(r['dataset']).name} | {r['task']} | {n:,} | {f(r, 'top1')} | {f(r, 'top5')} | "
                     f"{f(r, 'mean_per_class_recall')} | {f(r, 'image_to_text_R@1')} | {f(r, 'image_to_text_R@5')} | "
                     f"{f(r, 'text_to_image_R@1')} | {f(r, 'text_to_image_R@5')} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = _Parser(prog="openwit eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", help="one evaluation set")
    what.add_argument("--suite", help="a folder of evaluation sets (e.g. `openwit synth`'s eval/)")
    p.add_argument("--task", choices=TASKS, default="zeroshot")
    p.add_argument("--split", default="test", help="split subfolder evaluated (when the set has splits)")
    p.add_argument("--train-split", default="train", help="split the linear probe is fitted on")
    p.add_argument("--linear-probe", action="store_true", help="with --suite: also probe sets with a train split")
    p.add_argument("--templates", default=None, help="openai | simple | a file (default: the dataset's, else simple)")
    p.add_argument("--classnames", default=None, help="class-name file (default: the dataset's classnames.txt)")
    p.add_argument("--resize-mode", choices=RESIZE_MODES, default=None,
                   help="image preprocessing (default: the export's, else shortest); 'longest' matches "
                        "img2dataset's border resize")
    p.add_argument("--output", default=None, help="write the JSON result records (a list) to this file")
    try:
        args = p.parse_args(argv)
        jobs = suite_jobs(args.suite, args.linear_probe) if args.suite else [(args.dataset, args.task)]
        model, preprocess, tokenizer = load_model(args.model, args.resize_mode)
        records = []
        for dataset, task in jobs:
            metrics = evaluate(model, preprocess, tokenizer, dataset, task, args.templates, args.classnames,
                               args.split, args.train_split)
            records.append({"model": args.model, "dataset": dataset, "task": task, **metrics,
                            "command": "openwit eval " + shlex.join(argv)})
    except (evalsets.DatasetError, ValueError) as e:
        print(f"openwit eval: {e}", file=sys.stderr)
        return 2
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(records, indent=1) + "\n")
        os.replace(tmp, out)
    print(table(records))
    return 0
