"""Where a strategy's training seconds go: replay making, generator steps, solver steps (the rest is `other`).

`PhaseSeconds` adds up seconds by phase. `SolverTimer`, the first plugin of a strategy, times each
training iteration in two parts: from its start to the forward pass (where a replay batch is
drawn or, in Avalanche's GenerativeReplay, generated: `replay_making`) and from the forward pass
to the end of the optimiser's update (`solver_steps`, the replay loss included). A generator's own
seconds are kept where it trains: ALIReplayPlugin's wake steps and replay sets, or the Avalanche
generator strategy's whole training (`GeneratorTimer`). On a CUDA device each boundary waits for
the device, so the seconds are the work's, not the launches'.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch
from avalanche.core import SupervisedPlugin

PHASES = ("replay_making", "generator_steps", "solver_steps")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PhaseSeconds:
    """Seconds added up by phase."""

    def __init__(self):
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def timed(self, phase: str, device=None) -> Iterator[None]:
        """Add the seconds of the block to `phase` (waiting for a CUDA `device` at both ends)."""
        if device is not None:
            _sync(device)
        tic = time.perf_counter()
        try:
            yield
        finally:
            if device is not None:
                _sync(device)
            self.add(phase, time.perf_counter() - tic)

    def add(self, phase: str, seconds: float) -> None:
        """Add `seconds` to `phase`."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + float(seconds)

    def merged(self, *others: "PhaseSeconds") -> dict[str, float]:
        """This and `others` added up, phase by phase."""
        total = dict(self.seconds)
        for other in others:
            for phase, seconds in other.seconds.items():
                total[phase] = total.get(phase, 0.0) + seconds
        return total


class SolverTimer(SupervisedPlugin):
    """Times each training iteration: start to forward (`replay_making`), forward to update (`solver_steps`).

    It must be the strategy's first plugin, so that its callbacks open each span before the others run.
    """

    def __init__(self):
        super().__init__()
        self.phases = PhaseSeconds()
        self._tic = None

    def _mark(self, strategy, phase) -> None:
        _sync(strategy.device)
        now = time.perf_counter()
        if phase is not None and self._tic is not None:
            self.phases.add(phase, now - self._tic)
        self._tic = now

    def before_training_iteration(self, strategy, *args, **kwargs):
        self._mark(strategy, None)

    def before_forward(self, strategy, *args, **kwargs):
        self._mark(strategy, "replay_making")

    def after_update(self, strategy, *args, **kwargs):
        self._mark(strategy, "solver_steps")
        self._tic = None


class GeneratorTimer(SupervisedPlugin):
    """The whole training of a generator strategy (Avalanche's VAETraining), as `generator_steps`."""

    def __init__(self):
        super().__init__()
        self.phases = PhaseSeconds()
        self._tic = None

    def before_training(self, strategy, *args, **kwargs):
        _sync(strategy.device)
        self._tic = time.perf_counter()

    def after_training(self, strategy, *args, **kwargs):
        _sync(strategy.device)
        self.phases.add("generator_steps", time.perf_counter() - self._tic)
