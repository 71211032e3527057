"""ALI losses on discriminator logits (softplus form) and ALICE-style cycle terms."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _mean(values: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """A plain or per-example weighted mean."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       real_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """-log D(x, G_z(x)) - log(1 - D(G_x(z), z)), written as softplus of logits."""
    return _mean(F.softplus(-real_logits), real_weight) + F.softplus(fake_logits).mean()


def generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                   real_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The non-saturating encoder/decoder loss: swap the labels of the two joint pairs."""
    return _mean(F.softplus(real_logits), real_weight) + F.softplus(-fake_logits).mean()


def cycle_loss(target: torch.Tensor, reconstruction: torch.Tensor,
               weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error per example, averaged over the batch (optionally weighted)."""
    per_example = (target - reconstruction).abs().flatten(1).mean(1)
    return _mean(per_example, weight)
