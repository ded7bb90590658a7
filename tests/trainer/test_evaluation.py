"""Evaluation arithmetic: our zero-shot classifier equals open_clip's, retrieval recall on a
hand-made case, a linear probe that separates separable features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_classifier import build_zero_shot_classifier

from trainer import evaluation, models


def test_classifier_equals_open_clip_build_zero_shot_classifier():
    model = models.create("openwit-debug").eval()
    tokenizer = models.tokenizer("openwit-debug")
    classes = ["circle", "square", "triangle", "star", "heart"]
    templates = evaluation.template_set("simple")
    ours = evaluation.classifier(model, tokenizer, classes, templates, classes_per_batch=2)
    theirs = build_zero_shot_classifier(model, tokenizer, classes, templates, num_classes_per_batch=10)
    assert ours.shape == theirs.shape == (64, 5)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert len(evaluation.template_set("openai")) == 80


def test_zeroshot_metrics():
    weights = torch.eye(3)  # class c <-> axis c
    feats = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0.4, 0.6], [0.9, 0.1, 0]])
    labels = torch.tensor([0, 1, 1, 2])
    m = evaluation.zeroshot_metrics(feats, labels, weights)
    assert m["top1"] == 0.5 and m["top5"] == 1.0
    assert abs(m["mean_per_class_recall"] - (1 + 0.5 + 0) / 3) < 1e-9


def test_retrieval_recall_on_four_pairs_with_known_answers():
    # 4 images, 5 captions (image 0 has two); caption 3 is closer to image 1 than to its own image 2
    img = F.normalize(torch.eye(4), dim=1)
    txt = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1.0, 0, 0], [0, 0.8, 0.6, 0],
                                    [0, 0, 0, 1.0]]), dim=1)
    text_image = torch.tensor([0, 0, 1, 2, 3])
    m = evaluation.retrieval_metrics(img, txt, text_image, ks=(1, 2))
    assert m["text_to_image_R@1"] == pytest.approx(4 / 5)  # caption 3 retrieves image 1 first
    assert m["text_to_image_R@2"] == 1.0
    assert m["image_to_text_R@1"] == 1.0  # every image's best caption is one of its own (image 2: caption 3)
    assert m["image_to_text_R@2"] == 1.0
    img_swapped = img[[0, 2, 1, 3]]  # images 1 and 2 swapped: captions 2 and 3 now point at the wrong one
    m = evaluation.retrieval_metrics(img_swapped, txt, text_image, ks=(1,))
    assert m["image_to_text_R@1"] == pytest.approx(2 / 4) and m["text_to_image_R@1"] == pytest.approx(4 / 5)


def test_linear_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 5
    y = rng.integers(0, 4, size=400)
    x = centres[y] + rng.normal(size=(400, 16))
    m = evaluation.linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert m["top1"] == 1.0 and m["validation_top1"] == 1.0
