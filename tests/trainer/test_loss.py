"""Our loss equals open_clip's ClipLoss in one process; invalid samples are left out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from trainer.loss import clip_loss


def test_equals_open_clip_clip_loss():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor([14.3])
    ours = clip_loss(img, txt, scale, torch.ones(8, dtype=torch.bool))
    theirs = ClipLoss()(img, txt, scale[0])
    assert torch.allclose(ours, theirs, rtol=1e-6)


def test_invalid_samples_are_left_out():
    torch.manual_seed(1)
    img, txt = F.normalize(torch.randn(6, 16), dim=-1), F.normalize(torch.randn(6, 16), dim=-1)
    valid = torch.tensor([True, True, False, True, False, True])
    scale = torch.tensor([10.0])
    keep = valid.nonzero().flatten()
    assert torch.allclose(clip_loss(img, txt, scale, valid), clip_loss(img[keep], txt[keep], scale, valid[keep]),
                          rtol=1e-6)
    none = clip_loss(img, txt, scale, torch.zeros(6, dtype=torch.bool))
    assert float(none) == 0.0


def test_siglip_equals_open_clip_siglip_loss():
    from open_clip.loss import SigLipLoss

    from trainer.loss import siglip_loss

    torch.manual_seed(2)
    img, txt = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    scale, bias = torch.tensor([10.0]), torch.tensor([-10.0])
    ours = siglip_loss(img, txt, scale, bias, torch.ones(8, dtype=torch.bool))
    theirs = SigLipLoss()(img, txt, scale[0], bias[0])
    assert torch.allclose(ours, theirs, rtol=1e-5)
