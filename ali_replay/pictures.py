"""Image grids of what an ALI has learned: samples, reconstructions, interpolations."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torchvision.utils import save_image

from ali_replay.ali import ALI


def _save(images: torch.Tensor, path: str | Path, nrow: int) -> None:
    """Save a grid, enlarging tiny images (8x8 digits) so that they can be seen."""
    side = images.shape[-1]
    if side < 32:
        images = torch.nn.functional.interpolate(images, scale_factor=32 // side, mode="nearest")
    save_image(images.cpu(), path, nrow=nrow, padding=2, pad_value=0.5)


@torch.no_grad()
def save_samples(ali: ALI, path: str | Path, n: int = 100) -> None:
    """Decoded prior samples; a conditional model shows one row per class."""
    ali.eval()
    if ali.conditional:
        per_class = max(1, n // ali.num_classes)
        y = torch.arange(ali.num_classes, device=ali.device).repeat_interleave(per_class)
        images, nrow = ali.sample(len(y), y), per_class
    else:
        images, nrow = ali.sample(n), int(n ** 0.5)
    _save(images, path, nrow)


@torch.no_grad()
def save_reconstructions(ali: ALI, x: torch.Tensor, path: str | Path, y: Optional[torch.Tensor] = None,
                         nrow: int = 16) -> None:
    """Real images in the upper half of the grid, their reconstructions in the lower half."""
    ali.eval()
    y = y if ali.conditional else None
    recon = ali.reconstruct(x, y)
    _save(torch.cat([x, recon]), path, nrow)


@torch.no_grad()
def save_interpolations(ali: ALI, x: torch.Tensor, path: str | Path, y: Optional[torch.Tensor] = None,
                        steps: int = 10) -> None:
    """One row per pair of images: decodes of the straight line between their codes."""
    ali.eval()
    pairs = x.shape[0] // 2
    y = y if ali.conditional else None
    z = ali.encode(x, y)
    z_a, z_b = z[:pairs], z[pairs:2 * pairs]
    alphas = torch.linspace(0, 1, steps, device=z.device)
    path_z = (1 - alphas)[None, :, None] * z_a[:, None] + alphas[None, :, None] * z_b[:, None]
    labels = None
    if y is not None:  # a conditional path keeps the first image's label
        labels = y[:pairs].repeat_interleave(steps)
    images = ali.decode(path_z.reshape(pairs * steps, -1), labels)
    _save(images, path, steps)
