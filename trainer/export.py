"""`openwit export`: a training checkpoint -> open_clip's format.

    openwit export --run RUN [--tag latest|stepNNNNNNNN] --output DIR

Writes DIR/open_clip_config.json (model_cfg + preprocess_cfg: the evaluation transform the run
used, letterboxing for shards of border-resized images), DIR/open_clip_model.safetensors
and DIR/model.pt (the same fp32 state dict for torch.load), so that
``open_clip.create_model_and_transforms("local-dir:DIR")`` (and CLIP_benchmark through it)
loads the model as is. ZeRO checkpoints are consolidated from the fp32 master weights.
"""

from __future__ import annotations

import sys

import torch

from schemas import fileio
from schemas.cli import Parser
from trainer import checkpoints, models
from trainer.data import MEAN, STD

SUMMARY = "convert a training checkpoint to open_clip's format (config + safetensors + .pt)"


class ExportError(ValueError):
    pass


def export(run: str, output: str, tag: str = "latest") -> dict:
    if not fileio.isdir(run):
        raise ExportError(f"--run {run}: no such folder")
    folder = checkpoints.folder(run)
    tag, sidecar = checkpoints.find(folder, tag)
    if tag is None:
        raise ExportError(f"--run {run}: no complete checkpoint under {folder}")
    if not fileio.isfile(sidecar):
        raise ExportError(f"--tag {tag}: {sidecar} does not exist")
    meta = fileio.read_json(sidecar)
    from trainer import engine  # imports DeepSpeed: only once there is something to convert

    with checkpoints.local_copy(folder, tag) as local:
        state = engine.consolidated_state_dict(local, tag)
    out = str(output)
    # the evaluation transform the run used (resolved from its shards; runs before it was recorded: shortest)
    resize_mode = meta.get("config", {}).get("eval_resize_mode", "shortest")
    write(state, meta["model_config"], out, {"step": meta["step"], "samples_seen": meta["samples_seen"],
                                             "model": meta["model"], "schema_version": meta["schema_version"]},
          resize_mode if resize_mode in RESIZE_MODES else "shortest")
    return {"tag": tag, "step": meta["step"], "output": out, "tensors": len(state)}


RESIZE_MODES = ("shortest", "longest", "squash")  # open_clip's


def fill_color(resize_mode: str) -> int:
    """The padding of a resize mode: a letterbox ('longest') is white, as img2dataset's border
    resize makes it."""
    return 255 if resize_mode == "longest" else 0


def preprocess_cfg(size: int, resize_mode: str) -> dict:
    """open_clip's preprocess_cfg: 'longest' letterboxes on white, as img2dataset's border
    resize made the training images; 'shortest' resizes and centre-crops."""
    return {"size": size, "mean": list(MEAN), "std": list(STD), "interpolation": "bicubic",  # not-a-column
            "resize_mode": resize_mode, "fill_color": fill_color(resize_mode)}


def write(state: dict, model_config: dict, out: str, about: dict, resize_mode: str = "shortest") -> None:
    """A model's state dict and config as open_clip's local-dir folder (``about`` goes into
    the config under "openwit"); ``resize_mode`` is the preprocessing its images need."""
    state = dict(state)
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(())  # open_clip's usual 0-dim shape
    if "logit_bias" in state:
        state["logit_bias"] = state["logit_bias"].reshape(())
    fileio.makedirs(out)
    size = model_config["vision_cfg"]["image_size"]
    config = {"model_cfg": model_config, "preprocess_cfg": preprocess_cfg(size, resize_mode), "openwit": about}
    from safetensors.torch import save_file

    with fileio.atomic_local(fileio.join(out, "open_clip_model.safetensors")) as tmp:
        save_file(state, tmp)
    with fileio.atomic_local(fileio.join(out, "model.pt")) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)  # a file object: the archive's inner name does not follow the temp name
    fileio.write_json(fileio.join(out, "open_clip_config.json"), config)


def load_exported(folder: str):
    """(model, preprocess, tokenizer) through open_clip's own loader."""
    import open_clip

    models.register()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model, preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def main(argv: list[str]) -> int:
    p = Parser(prog="openwit export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="an `openwit train` output folder")
    p.add_argument("--tag", default="latest", help="checkpoint tag (default: the latest complete one)")
    p.add_argument("--output", required=True, help="folder for the open_clip model")
    args = p.parse_args(argv)
    try:
        info = export(args.run, args.output, args.tag)
    except ExportError as e:
        print(f"openwit export: {e}", file=sys.stderr)
        return 2
    print(f"export: {info['tag']} (step {info['step']}) -> {info['output']}: open_clip_config.json, "
          f"open_clip_model.safetensors, model.pt")
    return 0
