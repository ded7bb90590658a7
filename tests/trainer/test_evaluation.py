"""Evaluation arithmetic: our zero-shot classifier equals open_clip's, retrieval recall on a
hand-made case, a linear probe that separates separable features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_classifier import build_zero_shot_classifier

from trainer import evaltasks, evaluation, models


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


def _dataset(tmp_path, labels=(0, 1, 2, 1), classnames=("red circle", "blue star", "green square")):
    import io

    from PIL import Image

    from pipeline.synth import benchmark

    samples = []
    for i, label in enumerate(labels):
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), (60 * i, 100, 200)).save(buf, "PNG")
        samples.append((buf.getvalue(), "cls", str(label).encode()))
    benchmark.write_set(tmp_path, "set", list(classnames), ["a photo of a {c}.", "a {c}."], {"test": samples})
    return tmp_path / "set"


def _eval(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pipeline.cli", "eval", *map(str, args)], capture_output=True,
                          text=True)


def test_eval_command_on_a_clip_benchmark_layout(tmp_path):
    import json

    from trainer import evalsets

    folder = _dataset(tmp_path)
    data = evalsets.load(str(folder))
    assert data.classnames == ["red circle", "blue star", "green square"] and data.labels == [0, 1, 2, 1]
    assert data.templates == ["a photo of a {}.", "a {}."]
    run = _random_run(tmp_path)
    proc = _eval("--model", run, "--dataset", folder, "--output", tmp_path / "results.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [record] = json.loads((tmp_path / "results.json").read_text())
    assert record["samples"] == 4 and record["classes"] == 3 and 0 <= record["top1"] <= 1
    assert record["command"].startswith("openwit eval --model") and record["task"] == "zeroshot_classification"
    # CLIP_benchmark's record: its keys and its metric names
    assert record["dataset"] == str(folder) and record["pretrained"] is None and record["language"] == "en"
    assert record["metrics"] == {"acc1": record["top1"], "acc5": record["top5"],
                                 "mean_per_class_recall": record["mean_per_class_recall"]}
    assert record["device"] == "cpu"
    assert "| set | zeroshot_classification | 4 |" in proc.stdout


def test_bad_evaluation_datasets_name_the_file(tmp_path):
    import io
    import tarfile

    run = _random_run(tmp_path)
    folder = _dataset(tmp_path)
    (folder / "classnames.txt").unlink()
    proc = _eval("--model", run, "--dataset", folder)
    assert proc.returncode == 2 and "classnames.txt" in proc.stderr and "missing class-name file" in proc.stderr
    folder = _dataset(tmp_path / "b", labels=(0, 7))
    proc = _eval("--model", run, "--dataset", folder)
    assert proc.returncode == 2 and "class index 7" in proc.stderr and "00000.tar" in proc.stderr
    folder = _dataset(tmp_path / "c")
    with tarfile.open(folder / "test" / "00000.tar", "a") as tar:
        for ext, blob in (("png", b"not an image"), ("cls", b"0")):
            info = tarfile.TarInfo(f"zz.{ext}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    proc = _eval("--model", run, "--dataset", folder)
    assert proc.returncode == 2 and "unreadable image" in proc.stderr and "00000.tar:zz" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _random_run(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    torch.save(models.create("openwit-debug").state_dict(), run / "final_weights.pt")
    (run / "config.json").write_text(json.dumps({"model": "openwit-debug"}))
    return run


def test_open_clip_name_with_pretrained_weights_device_and_batch(tmp_path):
    """An open_clip model name with its checkpoint on disk (as CLIP_benchmark and open_clip
    take them) gives the same figures as the run folder those weights came from; the
    batch size and preprocessing threads change nothing."""
    import json

    folder = _dataset(tmp_path)
    run = _random_run(tmp_path)
    by_run = _eval("--model", run, "--dataset", folder, "--output", tmp_path / "a.json", "--resize-mode", "shortest")
    by_name = _eval("--model", "openwit-debug", "--pretrained", run / "final_weights.pt", "--dataset", folder,
                    "--output", tmp_path / "b.json", "--device", "cpu", "--batch-size", "3", "--workers", "2",
                    "--resize-mode", "shortest")
    assert by_run.returncode == 0 and by_name.returncode == 0, by_run.stderr[-2000:] + by_name.stderr[-2000:]
    [a], [b] = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert b["model"] == "openwit-debug" and b["pretrained"] == str(run / "final_weights.pt")
    assert b["metrics"] == a["metrics"] and b["top1"] == a["top1"]


@pytest.mark.parametrize("args, words", [
    (["--model", "no-such-model", "--pretrained", "/etc/hostname"], ["--model no-such-model", "not an open_clip"]),
    (["--model", "openwit-debug", "--pretrained", "/nonexistent.pt"], ["--pretrained /nonexistent.pt", "no such file"]),
    (["--model", "openwit-debug", "--pretrained", "/etc/hostname"], ["--pretrained /etc/hostname", "cannot load"]),
    (["--model", "RUN", "--device", "cuda:0"] if not torch.cuda.is_available() else
     ["--model", "RUN", "--device", "cuda:99"], ["--device cuda"]),
    (["--model", "RUN", "--device", "tpu-ish"], ["--device tpu-ish", "not a torch device"]),
    (["--model", "RUN", "--batch-size", "0"], ["--batch-size"]),
    (["--model", "RUN", "--output", "/proc/results.json"], ["/proc", "cannot write"]),
])
def test_bad_model_device_and_sizes_are_one_line(tmp_path, args, words):
    folder = _dataset(tmp_path)
    run = _random_run(tmp_path)
    proc = _eval(*[str(run) if a == "RUN" else a for a in args], "--dataset", folder)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr[-2000:]


def test_retrieval_on_shard_output_and_on_multi_caption_sets(tmp_path, shards, suite):
    import json

    from trainer import evalsets

    pairs = evalsets.load_retrieval(str(shards))
    assert len(pairs.images) == len(pairs.texts) > 0 and pairs.text_image == list(range(len(pairs.images)))
    multi = evalsets.load_retrieval(str(suite / "retrieval"))
    assert len(multi.images) == 16 and len(multi.texts) == 16 * 5 and multi.text_image[:6] == [0] * 5 + [1]
    run = _random_run(tmp_path)
    proc = _eval("--model", run, "--task", "retrieval", "--dataset", shards, "--output", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [record] = json.loads((tmp_path / "r.json").read_text())
    assert record["images"] == len(pairs.images) and 0 <= record["text_to_image_R@10"] <= 1
    assert set(record) >= {f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}


def test_suite_runs_every_set_with_its_task_and_the_linear_probe(tmp_path, suite):
    import json

    run = _random_run(tmp_path)
    proc = _eval("--model", run, "--suite", suite, "--linear-probe", "--resize-mode", "longest",
                 "--output", tmp_path / "all.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads((tmp_path / "all.json").read_text())
    jobs = [(r["dataset"].rsplit("/", 1)[-1], r["task"]) for r in records]
    assert jobs == [("retrieval", "zeroshot_retrieval"), ("zeroshot_colour", "zeroshot_classification"),
                    ("zeroshot_colour", "linear_probe"), ("zeroshot_combination", "zeroshot_classification"),
                    ("zeroshot_shape", "zeroshot_classification"), ("zeroshot_shape", "linear_probe")]
    assert set(records[0]["metrics"]) == {f"{way}_retrieval_recall@{k}"
                                          for way in ("image", "text") for k in (1, 5, 10)}  # not-a-column
    assert records[0]["metrics"]["image_retrieval_recall@5"] == records[0]["text_to_image_R@5"]
    assert set(records[2]["metrics"]) == {"lp_acc1", "lp_mean_per_class_recall"}
    probe = records[2]
    assert probe["train_samples"] == 16 and probe["samples"] == 16 and 0 <= probe["top1"] <= 1 and probe["C"] > 0
    assert records[3]["classes"] == 64 and len(proc.stdout.strip().splitlines()) == 2 + len(records)


def test_periodic_evaluation_scores_the_live_model(suite):
    from trainer.evaltasks import Periodic

    model = models.create("openwit-debug")
    scores = Periodic(str(suite), 64, "longest", models.tokenizer("openwit-debug"))(model)
    assert model.training  # restored
    assert set(scores) == {"zeroshot_shape/top1", "zeroshot_colour/top1", "zeroshot_combination/top1",
                           *(f"retrieval/{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5))}
    assert all(0 <= v <= 1 for v in scores.values())


def test_bad_retrieval_and_probe_inputs_name_the_file(tmp_path, suite):
    import shutil

    from pipeline.synth import benchmark

    run = _random_run(tmp_path)
    proc = _eval("--model", run, "--task", "linear_probe", "--dataset", suite / "zeroshot_combination")
    assert proc.returncode == 2 and "no train/ split" in proc.stderr and "zeroshot_combination" in proc.stderr
    benchmark.write_set(tmp_path, "bad", None, (), {"test": [(b"\x89PNG\r\n\x1a\nxx", "cls", b"1")]})
    proc = _eval("--model", run, "--task", "retrieval", "--dataset", tmp_path / "bad")
    assert proc.returncode == 2 and "lacks an image or a txt member" in proc.stderr and "00000.tar" in proc.stderr
    shutil.copytree(suite / "zeroshot_shape", tmp_path / "nonames")
    (tmp_path / "nonames" / "classnames.txt").unlink()
    proc = _eval("--model", run, "--suite", tmp_path / "empty-suite")
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    proc = _eval("--model", tmp_path / "nowhere", "--dataset", suite / "zeroshot_shape")
    assert proc.returncode == 2 and "neither an `openwit export` folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_export_records_letterboxing_and_open_clip_applies_it(tmp_path):
    """An export for letterboxed training images carries resize_mode longest and fill 255 in
    its preprocess_cfg, so open_clip's own loader (and `openwit eval` through it) pads a
    non-square image on white, with no --resize-mode anywhere."""
    import open_clip
    from PIL import Image

    from trainer import export, models

    net = models.create("openwit-debug", seed=0)
    export.write(net.state_dict(), models.model_config("openwit-debug"), str(tmp_path / "m"), {}, "longest")
    cfg = json.loads((tmp_path / "m" / "open_clip_config.json").read_text())["preprocess_cfg"]
    assert cfg["resize_mode"] == "longest" and cfg["fill_color"] == 255
    models.register()
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'm'}")
    size = cfg["size"]  # not-a-column
    wide = preprocess(Image.new("RGB", (size * 4, size), (0, 0, 0)))  # black, four times wider than tall
    mean, std = torch.tensor(cfg["mean"]).view(3, 1), torch.tensor(cfg["std"]).view(3, 1)
    pixels = wide.reshape(3, -1) * std + mean
    white = (pixels > 0.99).all(0).float().mean().item()
    assert 0.70 < white < 0.80, white  # the letterbox: 3/4 of the square is white padding
    _, default, _ = evaltasks.load_model(str(tmp_path / "m"))
    assert torch.equal(default(Image.new("RGB", (size * 4, size))), wide)
