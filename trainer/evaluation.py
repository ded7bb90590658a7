"""Evaluation metrics with CLIP_benchmark's conventions: zero-shot classification from
prompt ensembles, image-text retrieval recall@k, and a linear probe on frozen features.

This module holds the arithmetic; reading datasets and the `openwit eval` command build on
it. Features are L2-normalised by the caller (``model.encode_*(..., normalize=True)``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch


def template_set(name: str) -> list:
    """Bundled template sets: 'openai' (the 80 ImageNet prompts of the CLIP paper) and
    'simple' (the short set), both as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    sets = {"openai": list(OPENAI_IMAGENET_TEMPLATES), "simple": list(SIMPLE_IMAGENET_TEMPLATES)}
    if name not in sets:
        raise ValueError(f"unknown template set '{name}' (bundled: {', '.join(sets)})")
    return sets[name]


def _fill(template: str | Callable[[str], str], classname: str) -> str:
    return template.format(classname) if isinstance(template, str) else template(classname)


@torch.no_grad()
def classifier(model, tokenizer, classnames: Sequence[str], templates: Sequence, device="cpu",
               classes_per_batch: int = 32) -> torch.Tensor:
    """[embed_dim, classes]: per class, every template's text embedding normalised, averaged,
    and the mean normalised again."""
    if not classnames or not templates:
        raise ValueError("need at least one class name and one template")
    columns = []
    for start in range(0, len(classnames), classes_per_batch):
        batch = classnames[start:start + classes_per_batch]
        texts = [_fill(t, c) for c in batch for t in templates]
        emb = model.encode_text(tokenizer(texts).to(device), normalize=True).float()
        emb = emb.reshape(len(batch), len(templates), -1).mean(dim=1)
        columns.append((emb / emb.norm(dim=1, keepdim=True)).T)
    return torch.cat(columns, dim=1)


def zeroshot_metrics(image_features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> dict:
    """Top-1, top-5 and mean per-class recall of logits = 100 x features @ weights."""
    logits = 100.0 * image_features.float() @ weights.float()
    k = min(5, weights.shape[1])
    top = logits.topk(k, dim=1).indices
    labels = labels.long()
    top1 = (top[:, 0] == labels).float()
    top5 = (top == labels[:, None]).any(dim=1).float()
    recalls = [float(top1[labels == c].mean()) for c in range(weights.shape[1]) if bool((labels == c).any())]
    return {"top1": float(top1.mean()), "top5": float(top5.mean()),
            "mean_per_class_recall": float(np.mean(recalls)) if recalls else 0.0, "samples": int(len(labels))}


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k both ways; ``text_image[j]`` is the image of caption j (an image may have
    several captions: image->text is a hit if any of them is in the top k)."""
    scores = image_features.float() @ text_features.float().T  # [images, texts]
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[text_image.long(), torch.arange(len(text_image))] = True
    out = {}
    for k in ks:
        kt = min(k, scores.shape[1])
        top_t = scores.topk(kt, dim=1).indices
        out[f"image_to_text_R@{k}"] = float(positive.gather(1, top_t).any(dim=1).float().mean())
        ki = min(k, scores.shape[0])
        top_i = scores.T.topk(ki, dim=1).indices  # [texts, k]
        out[f"text_to_image_R@{k}"] = float((top_i == text_image.long()[:, None]).any(dim=1).float().mean())
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 seed: int = 0, grid: Sequence[float] = tuple(10.0 ** np.arange(-4, 5))) -> dict:
    """Logistic regression on frozen features: the inverse regularisation C chosen on a
    20% validation split of the training features, then refit on all of them."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    n_val = max(1, len(order) // 5)
    val, fit = order[:n_val], order[n_val:]
    best_c, best_acc = grid[0], -1.0
    for c in grid:
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(train_x[fit], train_y[fit])
        acc = float((model.predict(train_x[val]) == train_y[val]).mean())
        if acc > best_acc:
            best_c, best_acc = c, acc
    model = LogisticRegression(C=best_c, max_iter=2000).fit(train_x, train_y)
    predicted = model.predict(test_x)
    recalls = [float((predicted[test_y == c] == c).mean()) for c in np.unique(test_y)]
    return {"top1": float((predicted == test_y).mean()), "mean_per_class_recall": float(np.mean(recalls)),
            "C": float(best_c), "validation_top1": best_acc}


def clip_benchmark_metrics(task: str, metrics: dict) -> dict:
    """The metrics under the names CLIP_benchmark's result records use (``task`` is
    openwit's: zeroshot, retrieval, linear_probe)."""
    if task == "zeroshot":
        names = {"top1": "acc1", "top5": "acc5", "mean_per_class_recall": "mean_per_class_recall"}
    elif task == "linear_probe":
        names = {"top1": "lp_acc1", "mean_per_class_recall": "lp_mean_per_class_recall"}
    else:  # CLIP_benchmark: image retrieval = images found from a caption
        names = {k: k.replace("text_to_image_R@", "image_retrieval_recall@").replace(
            "image_to_text_R@", "text_retrieval_recall@") for k in metrics if "_R@" in k}
    return {new: metrics[old] for old, new in names.items() if old in metrics}
