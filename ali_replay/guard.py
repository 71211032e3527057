"""Signs that adversarial training has diverged: non-finite losses, a winning discriminator, a collapsed decoder."""
from __future__ import annotations

import math
from typing import Optional

import torch

from ali_replay.ali import ALI
from ali_replay.runtime import evaluating


class Divergence(Exception):
    """Raised inside the training loop when an epoch must be rolled back."""


@torch.no_grad()
def sample_diversity(ali: ALI, x_real: torch.Tensor, n: int = 256, seed: int = 0) -> float:
    """Mean pairwise distance between decoded prior samples, relative to that between real images."""
    with evaluating(ali), torch.random.fork_rng(devices=[ali.device] if ali.device.type == "cuda" else []):
        torch.manual_seed(seed)
        samples = ali.sample(n).flatten(1)
    real = x_real[:n].flatten(1)
    return (torch.pdist(samples).mean() / torch.pdist(real).mean().clamp_min(1e-12)).item()


def check_epoch(row: dict[str, float], ali: ALI, x_real: torch.Tensor, guard_cfg) -> Optional[str]:
    """The reason an epoch's result is unusable, or None when it looks healthy."""
    bad = [key for key, value in row.items() if not math.isfinite(value)]
    if bad:
        return f"non-finite {', '.join(bad)}"
    if "loss_d" in row and row["loss_d"] < guard_cfg.d_loss_min:
        return f"discriminator collapse (mean loss_d {row['loss_d']:.2e} < guard.d_loss_min {guard_cfg.d_loss_min})"
    diversity = sample_diversity(ali, x_real)
    row["sample_diversity"] = diversity
    if diversity < guard_cfg.diversity_min:
        return f"mode collapse (sample diversity {diversity:.3f} < guard.diversity_min {guard_cfg.diversity_min})"
    return None
