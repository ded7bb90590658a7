"""`openwit score` throughput: images scored per second per core, for the debug towers and
ViT-B/32, against open_clip called one pair at a time (the baseline, measured in the same
run on the same images).

    taskset -c 1 python -m benchmarks.score_throughput [--images 512] [--device cpu|cuda]

Each model is created with random weights (nothing is downloaded); the speed of a forward
pass does not depend on the weights. Images are the synthetic world's, JPEG-encoded at
64 px as the demo downloads them (and at 256 px, the DAG's default). The scoring path is
openwit's own (pipeline.score.ScoringModel: decode, the model's preprocessing, batched
encode_image and encode_text in inference mode); "decode only" is the JPEG decode and
preprocessing without the model.
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time

from pipeline.score import ScoringModel
from pipeline.synth import captions, world


def _images(n: int, size: int) -> tuple[list[bytes], list[str]]:
    rng = random.Random(0)
    data, texts = [], []
    for _ in range(n):
        spec = world.ImageSpec(rng.randrange(8), rng.randrange(8), rng.randrange(3), rng.randrange(9),
                               rng.randrange(6), rng.getrandbits(32))
        img = world.render_image(spec).resize((size, size))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90)
        data.append(buf.getvalue())
        texts.append(captions.english(spec, rng))
    return data, texts


def _model_folder(name: str, out: str) -> str:
    from trainer import export, models

    net = models.create(name)
    export.write(net.state_dict(), models.model_config(name), out, {"model": name})
    return out


def measure(model: ScoringModel, images: list[bytes], texts: list[str], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        tensors = [model.image_tensor(b) for b in images[i:i + batch]]
        model.scores(tensors, texts[i:i + batch])
    return len(images) / (time.perf_counter() - start)


def decode_only(model: ScoringModel, images: list[bytes]) -> float:
    start = time.perf_counter()
    for b in images:
        model.image_tensor(b)
    return len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--models", default="openwit-debug,openwit-debug-rn,ViT-B-32")
    args = p.parse_args(argv)
    print(f"{'model':<18} {'px':>4} {'decode only':>12} {'batch 1 (base)':>15} {f'batch {args.batch_size}':>10} "
          f"{'ratio':>6}  (images/s, {args.threads} thread(s), {args.device})")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            model = ScoringModel(_model_folder(name, tmp), None, args.device, args.threads)
            for size in (64, 256):
                images, texts = _images(args.images, size)
                measure(model, images[:args.batch_size], texts[:args.batch_size], args.batch_size)  # warm up
                dec = decode_only(model, images)
                base = measure(model, images[:max(32, args.images // 8)], texts[:max(32, args.images // 8)], 1)
                ours = measure(model, images, texts, args.batch_size)
                print(f"{name:<18} {size:>4} {dec:>12,.0f} {base:>15,.1f} {ours:>10,.1f} {ours / base:>5.2f}x",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
