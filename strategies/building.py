"""build_strategy: a ready-to-train strategy for a solver, from a spec resolved once into typed settings."""
from __future__ import annotations

import logging
from typing import Mapping, Optional

import torch
from avalanche.training.templates import SupervisedTemplate

from ali_replay.errors import ConfigError
from strategies.catalogue import ResolvedSpec, resolve
from strategies.kind import StrategyContext

logger = logging.getLogger(__name__)


def build_strategy(spec: str | ResolvedSpec, solver: torch.nn.Module, params: Optional[Mapping] = None,
                   ctx: Optional[StrategyContext] = None) -> SupervisedTemplate:
    """A ready-to-train strategy for `solver` (Adam at ctx.lr) from a spec, with `params` on top of its settings.

    `spec` is a spec string ('ali_replay@features+ali_epochs=4', resolved here for ctx.input_shape:
    a bare name takes its shape's recipe, so `ali_replay` on 3 x 32 x 32 images is
    `ali_replay@features`, whose MLP head on the ALI's codes replaces `solver`) or a spec
    `strategies.catalogue.resolve` already resolved. The networks' initial weights follow
    ctx.seed without touching the caller's random state.
    """
    if ctx is None:
        raise ConfigError("build_strategy needs the benchmark's StrategyContext (input shape, classes, budgets)")
    if isinstance(spec, ResolvedSpec):
        if params:
            raise ConfigError("a resolved spec carries its settings: pass params to strategies.catalogue.resolve")
        resolved = spec
    else:
        resolved = resolve(spec, ctx.input_shape, params)
    kind = resolved.kind
    if ctx.scenario not in kind.scenarios:
        raise ConfigError(f"strategy {kind.name} does not take scenario {ctx.scenario!r}; it takes "
                          f"{', '.join(kind.scenarios)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        strategy = kind.build(resolved.settings, solver, ctx)
    strategy.strategy_name = resolved.name
    strategy.strategy_spec = resolved
    strategy.strategy_params = resolved.as_dict()
    logger.info("built strategy %s (recipe %s)", resolved.spec, resolved.recipe or "the typed defaults")
    return strategy
