"""What a built strategy keeps (bytes by kind) and what it replayed last: each strategy's kind is asked."""
from __future__ import annotations

from typing import Optional

from avalanche.training.templates import SupervisedTemplate
from torch import Tensor

from ali_replay.errors import ConfigError
from strategies.catalogue import kind
from strategies.kind import StrategyKind
from strategies.memory import KeptBytes


def _kind_of(strategy: SupervisedTemplate) -> StrategyKind:
    name = getattr(strategy, "strategy_name", None)
    if name is None:
        raise ConfigError(f"this {type(strategy).__name__} was not built by strategies.build_strategy, so its kind "
                          "is unknown; build it there, or ask its plugin (ALIReplayPlugin.memory())")
    return kind(name)


def strategy_memory(strategy: SupervisedTemplate) -> KeptBytes:
    """The bytes a strategy keeps between experiences besides its solver, by kind (`KeptBytes`).

    naive: nothing. joint: every past example; er: its buffer; both as uint8 images plus int64
    labels. ali_replay / gan_replay / dgr: the generator's weights (the discriminator's
    included), stored codes or class statistics, and the frozen previous solver when labels or
    the filter come from it. vae_replay and avalanche_gr: the VAE's weights and the previous
    solver Avalanche labels replay with. Frozen copies of a generator used within an experience
    are counted for no method.
    """
    return _kind_of(strategy).memory(strategy)


def strategy_memory_bytes(strategy: SupervisedTemplate) -> int:
    """Every byte `strategy_memory` counts."""
    return strategy_memory(strategy).total


def replay_preview(strategy: SupervisedTemplate) -> Optional[tuple[Tensor, Tensor]]:
    """Up to 64 of the examples a strategy replayed last and their labels (CPU), or None if it replayed none."""
    return _kind_of(strategy).preview(strategy)


def strategy_phases(strategy: SupervisedTemplate) -> dict[str, float]:
    """The seconds the strategy spent so far outside its solver's iterations, by phase (`strategies.timing`)."""
    return _kind_of(strategy).phases(strategy)
