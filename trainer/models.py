"""Models from open_clip, with openwit's own tower configs registered by name.

Nothing is downloaded: ``pretrained=None`` and open_clip's bundled BPE tokenizer. The
temperature is created with shape [1] (``nonscalar_logit_scale``): DeepSpeed cannot
broadcast 0-dimensional parameters when the world size is above 1.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import open_clip
import torch

CONFIGS = Path(__file__).parent / "model_configs"
_registered = False


def register() -> None:
    """Make our tower configs (trainer/model_configs/*.json) known to open_clip by name."""
    global _registered
    if not _registered:
        for path in sorted(CONFIGS.glob("*.json")):
            open_clip.add_model_config(path)
        _registered = True


def model_config(name: str) -> dict:
    register()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown model '{name}' (open_clip knows {len(open_clip.list_models())} names; "
                         f"ours: {', '.join(p.stem for p in sorted(CONFIGS.glob('*.json')))})")
    return cfg


class _QuietNoPretrained(logging.Filter):
    """open_clip warns that no pretrained weights were loaded: by design here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create(name: str, init_temperature: float = 0.07, loss: str = "clip", seed: int = 0,
           **overrides) -> torch.nn.Module:
    """A freshly initialised open_clip model (same weights for the same seed); ``overrides``
    replace top-level entries of its config (``vision_cfg=...``, as open_clip's own)."""
    model_config(name)
    torch.manual_seed(seed)
    kwargs = {"nonscalar_logit_scale": True, "init_logit_scale": math.log(1 / init_temperature), **overrides}
    if loss == "siglip":
        kwargs.update(init_logit_scale=math.log(10), init_logit_bias=-10.0)
    quiet = _QuietNoPretrained()
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(name, pretrained=None, **kwargs)
    finally:
        logging.getLogger().removeFilter(quiet)


def lock_token_embedding(model: torch.nn.Module) -> int:
    """Keep the text tower's token embedding as initialised (no gradient, no optimizer
    state); returns how many parameters that locks."""
    locked = [p for n, p in model.named_parameters() if n.endswith("token_embedding.weight")]
    if not locked:
        raise ValueError(f"{type(model).__name__} has no token embedding to lock")
    for p in locked:
        p.requires_grad_(False)
    return sum(p.numel() for p in locked)


def narrow_batch_norms_in_nchw(model: torch.nn.Module) -> int:
    """Under channels-last batches on the CPU: run each BatchNorm2d whose channel count is
    not a multiple of 16 on an NCHW copy of its input, and hand the next layer channels-last
    again. PyTorch's CPU channels-last batch norm vectorises over channels, and with fewer
    or a ragged count it is 3-7x slower than NCHW (benchmarks/debug_step_cost.py: 10.1 against
    1.5 ms for 128x8x32x32); the debug ResNet's stem has two 8-channel ones. The weights and
    the math are unchanged; the sums are taken in another order. Returns how many layers."""
    n = 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d) and mod.num_features % 16:
            mod.register_forward_pre_hook(_to_nchw)
            mod.register_forward_hook(_to_channels_last)
            n += 1
    return n


def _to_nchw(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def _to_channels_last(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    return out.contiguous(memory_format=torch.channels_last) if out.dim() == 4 else out


def tokenizer(name: str):
    register()
    return open_clip.get_tokenizer(name)


def image_size(name: str) -> int:
    size = model_config(name)["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


def describe(name: str) -> str:
    return json.dumps(model_config(name), sort_keys=True)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay on weight matrices only: not on gains, biases, embeddings, class/position
    tokens or the temperature. This is openwit's choice, not open_clip's: open_clip exempts
    only 1-d parameters, norms, biases and the logit scale, so it does decay the positional
    and token embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "logit_scale" in name or "logit_bias" in name or "embedding" in name or "token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
