"""How many samples the debug recipe needs before shape is learned, and how much the
answer moves with the training seed: many short runs of the recipe on one demo's shards.

    python -m benchmarks.recipe_sweep pack --run openwit-demo --output SWEEP   # here
    python -m benchmarks.recipe_sweep run --data SWEEP --plan PLAN.json [--device cuda]

`pack` takes a finished `openwit demo` folder: its training shards (images re-encoded as
JPEG quality 85, captions) into one file, and the test splits of its evaluation suite.
`run` trains the debug recipe's model (init temperature 0.07) with its
loss (CLIP's, both ways), optimiser (AdamW, betas 0.9/0.98, eps 1e-6, decay on weight
matrices only), schedule (linear warmup, constant, linear cooldown over the last 15%) and
augmentation (random resized crop, scale 0.9-1, ratio 3/4-4/3; here as roi_align on the
device), in a plain loop with the images on the device, once per PLAN entry
({"steps", "seed", "batch", "lr", "warmup", "cooldown", "wd", "temp", "crop", "schedule",
"every"}), and evaluates with `openwit train`'s own periodic evaluation (letterboxed
images). One JSON line per run: the final and the periodic (step, shape top-1, colour
top-1). Plan entries may also change the model: "image" (its image size; crops are
resized to it), "text_layers", and "lock_tokens" (train with the token embedding as
initialised). It is a replica of the trainer's arithmetic for sweeping on a GPU, not the
trainer: figures differ from a DeepSpeed run on CPU in the draws, not in the recipe.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import pickle
import shutil
import tarfile
import time

from trainer.config import RECIPES

MODEL = RECIPES["debug"]["model"]  # the debug recipe's model


def pack(run: str, output: str) -> int:
    from PIL import Image

    items = []
    for path in sorted(glob.glob(os.path.join(run, "shards", "*.tar"))):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                key, _, ext = m.name.rpartition(".")
                if ext in ("jpg", "txt"):
                    members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for key in sorted(members):
            buf = io.BytesIO()
            Image.open(io.BytesIO(members[key]["jpg"])).convert("RGB").save(buf, "JPEG", quality=85)
            items.append((buf.getvalue(), members[key]["txt"].decode()))
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "train.pkl"), "wb") as fh:
        pickle.dump(items, fh)
    for folder in glob.glob(os.path.join(run, "crawl", "eval", "*", "test")):
        name = os.path.basename(os.path.dirname(folder))
        dest = os.path.join(output, "suite", name)
        shutil.copytree(folder, os.path.join(dest, "test"), dirs_exist_ok=True)
        for f in glob.glob(os.path.join(os.path.dirname(folder), "*.txt")):
            shutil.copy(f, dest)
    return len(items)


def sweep(data: str, plan: list[dict], device: str) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision.ops import roi_align

    from trainer import evaltasks, models
    from trainer.data import MEAN, STD
    from trainer.models import param_groups

    with open(os.path.join(data, "train.pkl"), "rb") as fh:
        items = pickle.load(fh)
    images = torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b, _ in items]))
    images = images.permute(0, 3, 1, 2).contiguous().to(device)
    n = len(items)
    models.register()
    tokenizer = models.tokenizer(MODEL)
    texts = tokenizer([t for _, t in items]).to(device)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (MEAN, STD))
    evaluators: dict[int, evaltasks.Periodic] = {}
    base = models.model_config(MODEL)

    def crops(idx, gen, scale, out_side):
        b, side = len(idx), images.shape[-1]
        uniform = lambda: torch.rand(b, generator=gen, device=device)  # noqa: E731
        area = side * side * (scale[0] + (scale[1] - scale[0]) * uniform())
        ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * uniform())
        w, h = torch.sqrt(area * ratio).clamp(max=side), torch.sqrt(area / ratio).clamp(max=side)
        x, y = (side - w) * uniform(), (side - h) * uniform()
        boxes = torch.stack([torch.arange(b, device=device, dtype=torch.float), x, y, x + w, y + h], 1)
        out = roi_align(images[idx].float() / 255, boxes, output_size=out_side, sampling_ratio=2, aligned=True)
        return (out - mean) / std

    for c in plan:
        seed, batch, lr, total = c.get("seed", 0), c.get("batch", 128), c.get("lr", 2e-3), c["steps"]
        warmup, cooldown_start = c.get("warmup", 20), total - max(1, round(c.get("cooldown", 0.15) * total))
        side = c.get("image", base["vision_cfg"]["image_size"])
        model = models.create(MODEL, c.get("temp", 0.07), "clip", seed,
                              vision_cfg={**base["vision_cfg"], "image_size": side},
                              text_cfg={**base["text_cfg"], "layers": c.get("text_layers", base["text_cfg"]["layers"])})
        model = model.to(device)
        if c.get("lock_tokens"):
            models.lock_token_embedding(model)
        models.pack_text_tokens(model)  # the trainer's exact step changes (docs/training.md)
        models.first_query_attention_pool(model)
        layout = torch.contiguous_format
        if device == "cpu":  # as the debug recipe runs there: channels-last, the stem's batch norms in NCHW
            layout = torch.channels_last
            models.narrow_batch_norms_in_nchw(model)
        if side not in evaluators:
            evaluators[side] = evaltasks.Periodic(os.path.join(data, "suite"), side, "longest", tokenizer)
        evaluate = evaluators[side]
        opt = torch.optim.AdamW(param_groups(model, c.get("wd", 0.1)), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                                fused=device == "cpu")
        gen = torch.Generator(device=device)
        gen.manual_seed(1000 + seed)
        order = torch.Generator().manual_seed(seed)
        perm, pos, curve, start = torch.randperm(n, generator=order), 0, [], time.time()
        for step in range(total):
            if pos + batch > n:
                perm, pos = torch.randperm(n, generator=order), 0
            idx = perm[pos:pos + batch].to(device)
            pos += batch
            if step < warmup:
                rate = lr * (step + 1) / warmup
            elif c.get("schedule") == "cosine":
                rate = 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            else:
                rate = lr if step < cooldown_start else lr * (total - step) / (total - cooldown_start)
            for group in opt.param_groups:
                group["lr"] = rate
            image = F.normalize(model.encode_image(crops(idx, gen, tuple(c.get("crop", (0.9, 1.0))), side)
                                                .contiguous(memory_format=layout)), dim=-1)
            text = F.normalize(model.encode_text(texts[idx]), dim=-1)
            logits = model.logit_scale.exp().reshape(()) * image @ text.t()
            labels = torch.arange(len(idx), device=device)
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if (step + 1) % c.get("every", 100) == 0 or step + 1 == total:
                e = evaluate(model, device=device)
                curve.append((step + 1, round(e["zeroshot_shape/top1"], 3), round(e["zeroshot_colour/top1"], 3)))
                print(json.dumps({"cfg": c, "at": curve[-1], "secs": round(time.time() - start, 1)}), flush=True)
        print(json.dumps({"cfg": c, "final": curve[-1], "secs": round(time.time() - start, 1), "curve": curve}),
              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--run", required=True)
    a.add_argument("--output", required=True)
    b = sub.add_parser("run")
    b.add_argument("--data", required=True)
    b.add_argument("--plan", required=True, help="a JSON file: a list of runs")
    b.add_argument("--device", default="cuda")
    b.add_argument("--threads", type=int, default=0, help="torch's CPU threads (0: its default)")
    args = p.parse_args()
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "pack":
        print(f"{pack(args.run, args.output)} samples in {args.output}")
    else:
        with open(args.plan) as fh:
            sweep(args.data, json.load(fh), args.device)


if __name__ == "__main__":
    main()
