"""Contrastive losses over features gathered across ranks with gradient.

Each rank scores its own rows against the columns of every rank (open_clip's
``ClipLoss(local_loss=True, gather_with_grad=True)``): with the ranks' gradients averaged,
this is exactly the loss and gradient of one process holding the whole global batch.
Logits are computed in fp32. Invalid samples (unreadable in the data) are left out: their
rows are not scored and their columns are masked out of every row.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F


def gather(x: torch.Tensor, with_grad: bool) -> torch.Tensor:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    if with_grad:
        return torch.cat(dist_nn.all_gather(x), dim=0)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """InfoNCE both ways; ``image``/``text`` are this rank's normalised features."""
    image, text = image.float(), text.float()
    rank = dist.get_rank() if dist.is_initialized() else 0
    all_image, all_text = gather(image, True), gather(text, True)
    all_valid = gather(valid, False)
    scale = logit_scale.float().reshape(())
    labels = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
    masked = ~all_valid[None, :]
    logits_i = (scale * image @ all_text.T).masked_fill(masked, float("-inf"))
    logits_t = (scale * text @ all_image.T).masked_fill(masked, float("-inf"))
    if not bool(valid.any()):
        return (image.sum() + text.sum()) * 0.0  # no valid row here: keeps the graph, adds nothing
    return (F.cross_entropy(logits_i[valid], labels[valid]) + F.cross_entropy(logits_t[valid], labels[valid])) / 2


def siglip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
    """Sigmoid loss: every (image, caption) pair is a binary decision; local rows against
    all gathered columns, mean per positive row as in the SigLIP paper."""
    image, text = image.float(), text.float()
    rank = dist.get_rank() if dist.is_initialized() else 0
    all_text = gather(text, True)
    all_valid = gather(valid, False)
    logits = logit_scale.float().reshape(()) * image @ all_text.T + logit_bias.float().reshape(())
    target = -torch.ones_like(logits)
    rows = torch.arange(image.shape[0], device=image.device)
    target[rows, rows + rank * image.shape[0]] = 1.0
    pair_ok = valid[:, None] & all_valid[None, :]
    loss = -(F.logsigmoid(target * logits) * pair_ok).sum()
    return loss / max(int(valid.sum()), 1)
