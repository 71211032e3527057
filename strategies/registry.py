"""Deprecated: the former registry, split into `strategies.catalogue` (the strategies by name, specs resolved),
`strategies.building` (build_strategy) and `strategies.inspection` (kept bytes, previews)."""
from __future__ import annotations

import warnings

from strategies.building import build_strategy
from strategies.catalogue import load_strategy_params, resolve
from strategies.inspection import replay_preview, strategy_memory, strategy_memory_bytes
from strategies.kind import SCENARIOS, StrategyContext
from strategies.memory import MEMORY_KINDS
from strategies.recipes import STRATEGY_NAMES, default_recipe, parse_spec, shape_key, strategy_recipes

warnings.warn("strategies.registry is deprecated: import from strategies (or strategies.catalogue, "
              "strategies.building, strategies.inspection)", DeprecationWarning, stacklevel=2)

__all__ = ["MEMORY_KINDS", "SCENARIOS", "STRATEGY_NAMES", "StrategyContext", "build_strategy", "default_recipe",
           "load_strategy_params", "parse_spec", "replay_preview", "resolve", "shape_key", "strategy_memory",
           "strategy_memory_bytes", "strategy_recipes"]
