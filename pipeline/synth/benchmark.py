"""The synthetic world's evaluation benchmark, in CLIP_benchmark's webdataset layout.

Every image of the ``test`` splits shows one of the held-out (shape, colour) combinations,
which no training caption of the crawl names: zero-shot accuracy on them measures
composition (a shape and a colour learned apart, recognised together), not memory. The
test images are the crawl's evaluation images (``eval_spec(seed, k)``, k < eval_size),
the same ones ``openwit dedupe --eval-images`` decontaminates the training set against.

    eval/zeroshot_shape/        8 classes: the shape        (test: held-out; train: seen combos)
    eval/zeroshot_colour/       8 classes: the colour       (test: held-out; train: seen combos)
    eval/zeroshot_combination/  64 classes: "colour shape"  (test: held-out)
    eval/retrieval/             image + ``txt`` with CAPTIONS English captions, one per line

A set folder holds ``classnames.txt``, ``zeroshot_classification_templates.txt`` (``{c}``
marks the class name) and ``{split}/NNNNN.tar`` with ``nshards.txt``; a sample is
``sNNNNNNN.png`` with ``.cls`` (the class index) or ``.txt``. The ``train`` splits (images
of the combinations the crawl does show) serve the linear probe.
"""

from __future__ import annotations

import io
import os
import random
import shutil
from pathlib import Path

from pipeline import tario
from pipeline.synth import captions, world
from pipeline.synth.world import COLOURS, SHAPES, ImageSpec, eval_spec, heldout_combos, seed_int

BENCHMARK_DIR = "eval"
SETS = ("zeroshot_shape", "zeroshot_colour", "zeroshot_combination", "retrieval")
CAPTIONS = 5
PER_SHARD = 1000

TEMPLATES = {
    "zeroshot_shape": ("a {c}.", "a picture of a {c}.", "a {c} shape.", "a drawing of a {c} on a background.",
                       "an image with a {c} in it.", "a coloured {c}."),
    "zeroshot_colour": ("a {c} shape.", "something {c}.", "a {c} object on a background.",
                        "a picture of a {c} thing.", "the colour {c}.", "a drawing in {c}."),
    "zeroshot_combination": ("a {c}.", "a picture of a {c}.", "a {c} on a background.", "a drawing of a {c}.",
                             "an image with a {c} in it."),
}


def combination_names() -> list[str]:
    """The 64 combination classes, index = shape * 8 + colour."""
    return [f"{c} {s}" for s in SHAPES for c in COLOURS]


def seen_spec(seed: int, index: int) -> ImageSpec:
    """The index-th image of a combination the crawl shows (the linear probe's train split)."""
    held = heldout_combos(seed)
    seen = sorted((s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS)) if (s, c) not in held)
    rng = random.Random(seed_int(seed, "probe", index))
    shape, colour = seen[index % len(seen)]
    return ImageSpec(shape=shape, colour=colour, size=rng.randrange(len(world.SIZES)),
                     placement=rng.randrange(len(world.PLACEMENTS)),
                     background=rng.randrange(len(world.BACKGROUNDS)), jitter=rng.getrandbits(32))


def _png(spec: ImageSpec) -> bytes:
    buf = io.BytesIO()
    world.render_image(spec).save(buf, "PNG")
    return buf.getvalue()


def _image_ext(data: bytes) -> str:
    return "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg" if data[:2] == b"\xff\xd8" else "webp"


def _write_split(folder: Path, samples: list[tuple[bytes, str, bytes]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shards = max(1, -(-len(samples) // PER_SHARD))
    for n in range(shards):
        tmp = folder / f".{n:05d}.tar.tmp"
        with open(tmp, "wb") as fh:
            writer = tario.Writer(fh)
            for i in range(n * PER_SHARD, min(len(samples), (n + 1) * PER_SHARD)):
                image, ext, label = samples[i]
                writer.add(f"s{i:07d}.{_image_ext(image)}", image)
                writer.add(f"s{i:07d}.{ext}", label)
            writer.close()
        os.replace(tmp, folder / f"{n:05d}.tar")
    (folder / "nshards.txt").write_text(f"{shards}\n")


def write_set(root: str | os.PathLike, name: str, classnames: list[str] | None, templates: tuple | list,
              splits: dict[str, list]) -> None:
    """One set ``root/name``: class files (for classification) and a shard folder per split;
    ``splits[split]`` is a list of (image bytes, 'cls' or 'txt', label bytes). Built in a
    temporary folder and moved into place, so a rerun replaces it whole."""
    root = Path(root)
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if classnames is not None:
        (tmp / "classnames.txt").write_text("".join(f"{c}\n" for c in classnames))
        (tmp / "zeroshot_classification_templates.txt").write_text("".join(f"{t}\n" for t in templates))
    for split, samples in splits.items():
        _write_split(tmp / split, samples)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def retrieval_captions(seed: int, index: int, spec: ImageSpec) -> list[str]:
    """CAPTIONS distinct English captions of the index-th evaluation image."""
    rng = random.Random(seed_int(seed, "eval captions", index))
    out: list[str] = []
    for _ in range(50 * CAPTIONS):
        text = captions.english(spec, rng)
        if text not in out:
            out.append(text)
        if len(out) == CAPTIONS:
            break
    return out


def write(seed: int, eval_size: int, root: str | os.PathLike, probe_size: int | None = None) -> dict:
    """Write the four sets under ``root``; returns their sample counts per split."""
    root = Path(root)
    probe_size = eval_size if probe_size is None else probe_size
    tests = [eval_spec(seed, k) for k in range(eval_size)]
    pngs = [_png(s) for s in tests]
    trains = [seen_spec(seed, k) for k in range(probe_size)]
    train_pngs = [_png(s) for s in trains]

    def cls(values):
        return [(png, "cls", str(v).encode()) for png, v in values]

    write_set(root, "zeroshot_shape", list(SHAPES), TEMPLATES["zeroshot_shape"], {
        "test": cls(zip(pngs, (s.shape for s in tests))),
        "train": cls(zip(train_pngs, (s.shape for s in trains)))})
    write_set(root, "zeroshot_colour", list(COLOURS), TEMPLATES["zeroshot_colour"], {
        "test": cls(zip(pngs, (s.colour for s in tests))),
        "train": cls(zip(train_pngs, (s.colour for s in trains)))})
    write_set(root, "zeroshot_combination", combination_names(), TEMPLATES["zeroshot_combination"], {
        "test": cls(zip(pngs, (s.shape * len(COLOURS) + s.colour for s in tests)))})
    write_set(root, "retrieval", None, (), {
        "test": [(png, "txt", "\n".join(retrieval_captions(seed, k, s)).encode()) for k, (png, s)
                 in enumerate(zip(pngs, tests))]})
    return {"zeroshot_shape": {"test": eval_size, "train": probe_size},
            "zeroshot_colour": {"test": eval_size, "train": probe_size},
            "zeroshot_combination": {"test": eval_size}, "retrieval": {"test": eval_size}}
