"""The baselines built from Avalanche's own strategies: naive fine-tuning, joint training, experience replay."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from avalanche.training import Cumulative, Naive, Replay
from avalanche.training.plugins import ReplayPlugin

from ali_replay.config import at_least
from ali_replay.errors import ConfigError
from strategies._common import PREVIEW_SIZE
from strategies.kind import StrategyKind, template_args
from strategies.memory import KeptBytes, dataset_bytes, stored_example_bytes


@dataclass
class NoParams:
    """naive and joint take no settings."""


@dataclass
class ERParams:
    """er: Avalanche's Replay, a buffer of real examples balanced over experiences."""

    mem_size: int = field(default=200, metadata=at_least(1))  # examples kept (uint8 images + an int64 label each)
    # when set: as many examples as fit in this many bytes (overrides mem_size)
    memory_bytes: Optional[int] = field(default=None, metadata=at_least(0))


def er_buffer_size(params: ERParams, input_shape) -> int:
    """er's buffer: `mem_size` examples, or as many as `memory_bytes` holds (uint8 pixels + int64 label)."""
    if params.memory_bytes is None:
        return int(params.mem_size)
    per_example = stored_example_bytes(math.prod(int(s) for s in input_shape))
    size = int(params.memory_bytes) // per_example
    if size < 1:
        raise ConfigError(f"er memory_bytes={params.memory_bytes} holds no example of shape {tuple(input_shape)} "
                          f"({per_example} bytes each); raise it or set mem_size")
    return size


def _buffer(strategy):
    """The examples Avalanche's ReplayPlugin holds."""
    plugin = next(p for p in strategy.plugins if isinstance(p, ReplayPlugin))
    return plugin.storage_policy.buffer


def _er_preview(strategy) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The first stored examples and their labels, or None while the buffer is empty."""
    buffer = _buffer(strategy)
    if not len(buffer):
        return None
    items = [buffer[i] for i in range(min(PREVIEW_SIZE, len(buffer)))]
    return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])


NAIVE = StrategyKind(
    name="naive", settings=NoParams, distributed=True,
    build=lambda settings, solver, ctx: Naive(plugins=list(ctx.plugins), **template_args(solver, ctx)))

JOINT = StrategyKind(
    name="joint", settings=NoParams, distributed=True,
    build=lambda settings, solver, ctx: Cumulative(plugins=list(ctx.plugins), **template_args(solver, ctx)),
    memory=lambda strategy: KeptBytes(stored_examples=dataset_bytes(strategy.dataset)))

ER = StrategyKind(
    name="er", settings=ERParams, distributed=True,
    build=lambda settings, solver, ctx: Replay(mem_size=er_buffer_size(settings, ctx.input_shape),
                                               plugins=list(ctx.plugins), **template_args(solver, ctx)),
    memory=lambda strategy: KeptBytes(stored_examples=dataset_bytes(_buffer(strategy))),
    preview=_er_preview)
