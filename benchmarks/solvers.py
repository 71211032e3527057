"""Classifiers ("solvers") that the continual-learning strategies train.

* `mlp`: van de Ven et al.'s split-MNIST solver: flatten, two fully connected hidden layers of
  400 ReLU units, a linear output layer (works for any input shape).
* `conv`: a small CPU-friendly conv net for 32 x 32 colour images (also accepts other sizes):
  three 3x3 conv + ReLU + 2x2 max-pool stages of 16, 32 and 64 channels, adaptive average
  pooling to 4 x 4, a 256-unit ReLU layer and a linear output layer.

Scenario handling: in `class_incremental` the solver has one head over all classes. In
`task_incremental` the same trunk feeds Avalanche's `MultiHeadClassifier` (a `MultiTaskModule`):
one head per task label, grown when a task first appears, with Avalanche's unit masking so that
each head only scores the classes of its own task (class ids keep their global values). A
strategy calls it as `model(x, task_labels)` (Avalanche's `avalanche_forward` does this).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ali_replay.errors import ConfigError

SOLVER_NAMES: tuple[str, ...] = ("mlp", "conv")


class MLPTrunk(nn.Sequential):
    """Flatten and two hidden ReLU layers (400 units each by default)."""

    def __init__(self, input_shape: tuple[int, int, int], hidden: int = 400):
        super().__init__(
            nn.Flatten(),
            nn.Linear(int(math.prod(input_shape)), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.out_features = hidden


class ConvTrunk(nn.Sequential):
    """Three conv stages (16, 32, 64 channels) then a 256-unit fully connected layer."""

    def __init__(self, input_shape: tuple[int, int, int], hidden: int = 256):
        channels = int(input_shape[0])
        layers: list[nn.Module] = []
        for width in (16, 32, 64):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            channels = width
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(channels * 16, hidden), nn.ReLU()]
        super().__init__(*layers)
        self.out_features = hidden


class SingleHeadClassifier(nn.Module):
    """A trunk and one linear layer over every class (class-incremental)."""

    def __init__(self, trunk: nn.Module, num_classes: int):
        super().__init__()
        self.features = trunk
        self.classifier = nn.Linear(trunk.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _multi_head(trunk: nn.Module):
    """A trunk shared by per-task heads (Avalanche's MultiHeadClassifier, unit masking on)."""
    from avalanche.models import MultiHeadClassifier, MultiTaskModule

    class MultiHeadSolver(MultiTaskModule):
        """Shared trunk, one masked linear head per task label."""

        def __init__(self):
            super().__init__()
            self.features = trunk
            self.classifier = MultiHeadClassifier(trunk.out_features, initial_out_features=2)

        def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
            return self.classifier(self.features(x), task_label)

    return MultiHeadSolver()


def build_solver(name: str, input_shape, num_classes: int, scenario: str = "class_incremental") -> nn.Module:
    """The solver network for a benchmark (see the module docstring for the architectures)."""
    key = str(name).strip().lower()
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ConfigError(f"solver input shape must be (C, H, W), got {shape}")
    if key == "mlp":
        trunk: nn.Module = MLPTrunk(shape)
    elif key == "conv":
        trunk = ConvTrunk(shape)
    else:
        raise ConfigError(f"unknown solver '{name}' (solver.name); valid names: {', '.join(SOLVER_NAMES)}")
    if scenario == "task_incremental":
        return _multi_head(trunk)
    if scenario != "class_incremental":
        raise ConfigError(f"unknown scenario '{scenario}'; valid: class_incremental, task_incremental")
    return SingleHeadClassifier(trunk, int(num_classes))
