"""Evaluation of a model, as a library: the preprocessing, features, the three tasks
(zero-shot classification, retrieval, linear probe) on CLIP_benchmark layouts, suites of
sets, and ``Periodic`` (the evaluation the trainer runs every ``eval_every`` steps). The
metrics themselves are in ``trainer.evaluation``; ``openwit eval`` (``trainer.eval_cli``)
is the command around this module."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

from trainer import evaluation, evalsets, export, models

TASKS = ("zeroshot", "retrieval", "linear_probe")
# CLIP_benchmark's names of the tasks, as its result records carry them
CLIP_BENCHMARK_TASKS = {"zeroshot": "zeroshot_classification", "retrieval": "zeroshot_retrieval",
                        "linear_probe": "linear_probe"}
TASK_ALIASES = {**{v: k for k, v in CLIP_BENCHMARK_TASKS.items()}, **{k: k for k in TASKS}}
RESIZE_MODES = export.RESIZE_MODES


def preprocess_for(size: int, resize_mode: str):
    """open_clip's evaluation transform; 'longest' letterboxes on white (as img2dataset's
    border resize does), 'shortest' resizes and centre-crops (the ImageNet protocol)."""
    import open_clip

    return open_clip.image_transform(size, is_train=False, resize_mode=resize_mode,
                                     fill_color=export.fill_color(resize_mode))


def load_pretrained(name: str, checkpoint: str, resize_mode: str | None = None):
    """(model, preprocess, tokenizer) of an open_clip model name with its weights from a
    checkpoint file on disk (a state dict: .pt, .bin or .safetensors); nothing is fetched."""
    import open_clip

    models.register()
    known = set(open_clip.list_models())
    if name not in known:
        raise evalsets.DatasetError(f"--model {name}: not an open_clip model name (nor an `openwit export` or "
                                    f"`openwit train` folder); open_clip knows {len(known)}, e.g. ViT-B-32, ViT-L-14")
    if not Path(checkpoint).is_file():
        raise evalsets.DatasetError(f"--pretrained {checkpoint}: no such file")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=checkpoint)
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise evalsets.DatasetError(f"--pretrained {checkpoint}: cannot load it into {name} "
                                    f"({str(e).splitlines()[0][:300]})") from None
    if resize_mode:
        preprocess = preprocess_for(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple)
                                    else model.visual.image_size, resize_mode)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def load_model(path: str, resize_mode: str | None = None, pretrained: str | None = None):
    """(model, preprocess, tokenizer) from an export folder, a training run folder, or an
    open_clip model name with ``pretrained`` weights on disk."""
    if pretrained:
        return load_pretrained(path, pretrained, resize_mode)
    root = Path(path)
    if (root / "open_clip_config.json").is_file():
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
        # the run's recorded mode (resolved from its shards), unless the caller names one
        recorded = cfg.get("eval_resize_mode")
        preprocess = preprocess_for(models.image_size(cfg["model"]),
                                    resize_mode or (recorded if recorded in RESIZE_MODES else "shortest"))
        return model.eval(), preprocess, models.tokenizer(cfg["model"])
    raise evalsets.DatasetError(f"--model {path}: neither an `openwit export` folder (open_clip_config.json) "
                                "nor a training run (final_weights.pt + config.json)")


@torch.no_grad()
def image_features(model, preprocess, images, batch: int = 128, device="cpu", dtype=torch.float32,
                   workers: int = 0) -> torch.Tensor:
    """Normalised image embeddings of an iterable of PIL images (or of preprocessed
    tensors when ``preprocess`` is None), in order; ``workers`` threads preprocess a batch
    (resizing releases the GIL)."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    feats, chunk = [], []
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 1 and preprocess else None

        def flush():
            tensors = list(pool.map(preprocess, chunk)) if pool else [preprocess(i) for i in chunk] if preprocess \
                else chunk
            x = torch.stack(tensors).to(device, dtype)
            feats.append(model.encode_image(x, normalize=True).float().cpu())
            chunk.clear()
        for img in images:
            chunk.append(img)
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
             device="cpu", dtype=torch.float32, batch: int = 128, workers: int = 0) -> dict:
    """Zero-shot metrics; ``images`` are PIL images, or preprocessed tensors when
    ``preprocess`` is None (the periodic evaluation prepares them once)."""
    weights = evaluation.classifier(model, tokenizer, classnames, templates, device=device).cpu()
    feats = image_features(model, preprocess, images, batch, device=device, dtype=dtype, workers=workers)
    if not len(feats):
        raise evalsets.DatasetError(f"{name}: no images")
    return evaluation.zeroshot_metrics(feats, torch.as_tensor(labels), weights)


def retrieval(model, preprocess, tokenizer, images, texts: list, text_image: list, ks=(1, 5, 10), device="cpu",
              dtype=torch.float32, batch: int = 128, workers: int = 0) -> dict:
    feats = image_features(model, preprocess, images, batch, device=device, dtype=dtype, workers=workers)
    return evaluation.retrieval_metrics(feats, text_features(model, tokenizer, texts, device=device),
                                        torch.as_tensor(text_image), ks=ks)


def linear_probe(model, preprocess, train: evalsets.Classification, test: evalsets.Classification,
                 seed: int = 0, device="cpu", batch: int = 128, workers: int = 0) -> dict:
    tr = image_features(model, preprocess, (img for _, img, _ in train.images()), batch, device=device,
                        workers=workers).numpy()
    te = image_features(model, preprocess, (img for _, img, _ in test.images()), batch, device=device,
                        workers=workers).numpy()
    return {**evaluation.linear_probe(tr, np.asarray(train.labels), te, np.asarray(test.labels), seed=seed),
            "train_samples": len(tr), "samples": len(te)}


def evaluate(model, preprocess, tokenizer, dataset: str, task: str, templates: str | None = None,
             classnames: str | None = None, split: str = "test", train_split: str = "train", device="cpu",
             batch: int = 128, workers: int = 0) -> dict:
    """Metrics of one task on one dataset (raises DatasetError naming the file on bad data)."""
    run = {"device": device, "batch": batch, "workers": workers}
    if task == "retrieval":
        pairs = evalsets.load_retrieval(dataset, split)
        return {**retrieval(model, preprocess, tokenizer, (img for _, img in pairs.decoded()), pairs.texts,
                            pairs.text_image, **run), "images": len(pairs.images), "texts": len(pairs.texts)}
    file_templates = templates if templates not in (None, "openai", "simple") else None
    data = evalsets.load(dataset, classnames, file_templates, split)
    if task == "linear_probe":
        if not (Path(dataset) / train_split).is_dir():
            raise evalsets.DatasetError(f"{dataset}: no {train_split}/ split to fit the linear probe on")
        train = evalsets.load(dataset, classnames, file_templates, train_split)
        return {**linear_probe(model, preprocess, train, data, **run), "classes": len(data.classnames)}
    chosen = (evaluation.template_set(templates) if templates in ("openai", "simple")
              else data.templates or evaluation.template_set("simple"))
    return {**zeroshot(model, preprocess, tokenizer, (img for _, img, _ in data.images()), data.labels,
                       data.classnames, chosen, data.name, **run),
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
