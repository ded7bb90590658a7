"""Models from open_clip, with openwit's own tower configs registered by name.

Nothing is downloaded: ``pretrained=None`` and open_clip's bundled BPE tokenizer. The
temperature is created with shape [1] (``nonscalar_logit_scale``): DeepSpeed cannot
broadcast 0-dimensional parameters when the world size is above 1.
"""

from __future__ import annotations

import json
import logging
import math
import types
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d
from open_clip.transformer import ResidualAttentionBlock

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


def pack_text_tokens(model: torch.nn.Module) -> bool:
    """Run the text tower's per-token layers (layer norms, projections, MLPs) on each
    caption's tokens up to its end-of-text token only, packed into one matrix, and attention
    on the padded batch with a causal mask. Under the causal mask no token after the
    end-of-text token reaches it, and the tower's output is that token's features, so the
    result is the same math as open_clip's encode_text; with the demo's captions (about 11 of 20
    tokens on average) the tower costs ~40% less on the CPU. Applies to open_clip's CLIP
    text tower (argmax pooling, ``ResidualAttentionBlock`` without layer scale); returns
    whether it did."""
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if (not isinstance(model, open_clip.CLIP) or getattr(model, "text_pool_type", None) != "argmax"
            or blocks is None or not isinstance(getattr(model, "text_projection", None), torch.nn.Parameter)):
        return False
    for blk in blocks:
        if (type(blk) is not ResidualAttentionBlock or hasattr(blk, "ln_1_kv") or not blk.attn.batch_first
                or not isinstance(blk.ls_1, torch.nn.Identity) or not isinstance(blk.ls_2, torch.nn.Identity)
                or blk.attn.in_proj_weight is None or blk.attn.dropout):
            return False
    mask = getattr(model, "attn_mask", None)
    if mask is None or not torch.equal(mask, torch.full_like(mask, float("-inf")).triu_(1)):
        return False
    model.encode_text = types.MethodType(_packed_encode_text, model)
    return True


def _packed_encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    batch = text.shape[0]
    eot = text.argmax(dim=-1)  # the end-of-text token has the highest id (open_clip's argmax pooling)
    length = int(eot.max()) + 1
    width = self.transformer.width
    cast = self.transformer.get_cast_dtype()
    rows = (torch.arange(length, device=text.device) <= eot[:, None]).flatten().nonzero().squeeze(1)
    x = self.token_embedding(text[:, :length]).to(cast) + self.positional_embedding[:length].to(cast)
    h = x.reshape(batch * length, width).index_select(0, rows)
    for blk in self.transformer.resblocks:
        attn = blk.attn
        heads = attn.num_heads
        qkv = F.linear(blk.ln_1(h), attn.in_proj_weight, attn.in_proj_bias)
        padded = qkv.new_zeros(batch * length, 3 * width).index_copy(0, rows, qkv)
        q, k, v = padded.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.transpose(1, 2).reshape(batch * length, width).index_select(0, rows)
        h = h + F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
        h = h + blk.mlp(blk.ln_2(h))
    last = torch.cumsum(eot + 1, 0) - 1  # each caption's end-of-text row in the packed matrix
    x = self.ln_final(h.index_select(0, last)) @ self.text_projection
    return F.normalize(x, dim=-1) if normalize else x


def first_query_attention_pool(model: torch.nn.Module) -> int:
    """open_clip's ResNet attention pool projects a query for every spatial position and the
    mean, then keeps the mean's output only: compute that one query. Same math, a smaller
    step; returns how many pools it changed."""
    n = 0
    for mod in model.modules():
        if type(mod) is AttentionPool2d:
            mod.forward = types.MethodType(_first_query_pool, mod)
            n += 1
    return n


def _first_query_pool(self, x: torch.Tensor) -> torch.Tensor:
    batch, channels = x.shape[:2]
    x = x.reshape(batch, channels, -1).permute(2, 0, 1)  # NCHW -> (HW)NC
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0) + self.positional_embedding[:, None, :].to(x.dtype)
    heads = self.num_heads
    q = F.linear(x[:1], self.q_proj.weight, self.q_proj.bias)
    k = F.linear(x, self.k_proj.weight, self.k_proj.bias)
    v = F.linear(x, self.v_proj.weight, self.v_proj.bias)
    q, k, v = (t.reshape(t.shape[0], batch, heads, channels // heads).permute(1, 2, 0, 3) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)  # batch, heads, 1, channels / heads
    return self.c_proj(out.reshape(batch, channels))


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
