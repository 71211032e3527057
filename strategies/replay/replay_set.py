"""The replay set: generated examples made once per experience, stored as uint8 (and codes), drawn in mini-batches."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) as floats in [0, 1]; float images unchanged."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def as_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as uint8, the way the data sets store theirs.

    A replay set of 60,000 CIFAR-10 images takes a quarter of the memory it would as float32.
    """
    return images.mul(255).round_().to(torch.uint8)


@dataclass
class ReplaySet:
    """Generated examples of one experience, made once before it starts (no autograd history)."""

    images: torch.Tensor  # N x C x H x W, uint8 (0..255, as the data sets store images; `batch` gives floats)
    targets: torch.Tensor  # N int64 hard labels, or N x K teacher logits (solver_soft)
    classes: torch.Tensor  # N int64 class each example stands for (the generator's condition)
    tasks: torch.Tensor  # N int64 task label of each example
    kd_mask: Optional[torch.Tensor] = None  # N x K bool: classes the distillation runs over
    # N x latent_dim float codes the images were decoded from, for a solver that reads codes (LatentSolver)
    # and for the generator's replay code and image terms; None: neither asks for them
    codes: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: torch.Tensor | slice) -> "ReplaySet":
        """The examples at `idx`, stored as they are."""
        return ReplaySet(*(None if t is None else t[idx] for t in self.tensors()))

    def batch(self, idx: torch.Tensor) -> "ReplaySet":
        """The examples at `idx` with float images in [0, 1]: a mini-batch to train on."""
        out = self.take(idx)
        out.images = as_float_images(out.images)
        return out

    @staticmethod
    def cat(sets: list["ReplaySet"]) -> "ReplaySet":
        """The examples of several sets, one after the other."""
        columns = zip(*(s.tensors() for s in sets))
        return ReplaySet(*(None if parts[0] is None else torch.cat(parts) for parts in columns))

    def tensors(self) -> list[Optional[torch.Tensor]]:
        """Every field, in the order the constructor takes them (None where a set has no such field)."""
        return [getattr(self, f.name) for f in fields(self)]

    @property
    def soft(self) -> bool:
        """Whether the targets are teacher logits."""
        return self.targets.ndim == 2


class ReplayBatches:
    """Mini-batches drawn from a replay set, walking through reshuffled passes over it."""

    def __init__(self, replay: ReplaySet, rng: torch.Generator):
        self.replay = replay
        self.rng = rng
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def next(self, size: int) -> ReplaySet:
        """The next `size` examples (float images), reshuffling whenever a pass ends."""
        picks = []
        while size > 0:
            if self._cursor >= len(self._order):
                self._order = torch.randperm(len(self.replay), generator=self.rng)
                self._cursor = 0
            take = self._order[self._cursor:self._cursor + size]
            self._cursor += len(take)
            size -= len(take)
            picks.append(take)
        return self.replay.batch(torch.cat(picks).to(self.replay.images.device))
