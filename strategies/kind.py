"""What a strategy is: its typed settings, how it is built, what it keeps and shows, and what it supports.

Each strategy declares one `StrategyKind` in the module that implements it; its YAML file,
configs/strategy/<name>.yaml, names that declaration (`kind: module:NAME`) beside its recipes,
so adding a strategy touches one module and its YAML (`strategies.catalogue` finds it there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from strategies.memory import KeptBytes

SCENARIOS = ("class_incremental", "task_incremental")


@dataclass
class StrategyContext:
    """What every strategy needs to know about the benchmark it runs in."""

    input_shape: tuple[int, int, int]
    num_classes: int
    scenario: str  # "class_incremental" | "task_incremental"
    train_epochs: int  # solver epochs per experience
    train_mb_size: int
    eval_mb_size: int
    lr: float  # solver Adam learning rate
    device: torch.device
    evaluator: Any = None  # an avalanche EvaluationPlugin (or None for the default)
    plugins: list = field(default_factory=list)  # extra plugins (loggers etc.)
    seed: int = 0
    generator_epochs: Optional[int] = None  # VAE/ALI passes per experience where separate (None: train_epochs)


def template_args(solver: nn.Module, ctx: StrategyContext) -> dict[str, Any]:
    """The arguments every strategy's template takes: the solver, Adam at ctx.lr, cross-entropy, budgets, device."""
    return dict(model=solver, optimizer=torch.optim.Adam(solver.parameters(), lr=ctx.lr),
                criterion=nn.CrossEntropyLoss(), train_mb_size=ctx.train_mb_size, train_epochs=ctx.train_epochs,
                eval_mb_size=ctx.eval_mb_size, device=torch.device(ctx.device),
                evaluator=ctx.evaluator if ctx.evaluator is not None else default_evaluator)


def keeps_nothing(strategy: SupervisedTemplate) -> KeptBytes:
    """A strategy that keeps nothing between experiences besides its solver."""
    return KeptBytes()


def shows_nothing(strategy: SupervisedTemplate) -> None:
    """A strategy that replays nothing to show."""
    return None


def times_nothing(strategy: SupervisedTemplate) -> dict[str, float]:
    """A strategy whose seconds all go to its solver's iterations (timed by `strategies.timing.SolverTimer`)."""
    return {}


@dataclass(frozen=True)
class StrategyKind:
    """One strategy: its settings, its builder, its kept bytes and preview, and where it runs.

    `build(settings, solver, ctx)` returns the ready strategy for a `settings` instance (the
    resolved recipe); `memory(strategy)` the bytes it keeps by kind; `preview(strategy)` up to
    `strategies._common.PREVIEW_SIZE` of the examples it replayed last, with their labels (CPU),
    or None; `phases(strategy)` the seconds it spent so far outside its solver's iterations, by
    phase (`strategies.timing.PHASES`). `distributed`: it trains data-parallel under torchrun;
    `scenarios`: the streams it takes.
    """

    name: str
    settings: type  # a dataclass: every setting, its type, its default and its range
    build: Callable[[Any, nn.Module, StrategyContext], SupervisedTemplate]
    memory: Callable[[SupervisedTemplate], KeptBytes] = keeps_nothing
    preview: Callable[[SupervisedTemplate], Optional[tuple[Tensor, Tensor]]] = shows_nothing
    phases: Callable[[SupervisedTemplate], dict[str, float]] = times_nothing
    distributed: bool = False
    scenarios: tuple[str, ...] = SCENARIOS
