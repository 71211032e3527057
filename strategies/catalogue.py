"""The strategies by name: each one's kind (found through its YAML) and a spec resolved, once, into typed settings."""
from __future__ import annotations

import importlib
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from ali_replay.config import merge_config
from ali_replay.errors import ConfigError
from strategies.kind import StrategyKind
from strategies.recipes import parse_spec, recipe_settings, shape_key, shape_recipe, strategy_file

logger = logging.getLogger(__name__)


def kind(name: str) -> StrategyKind:
    """The StrategyKind that configs/strategy/<name>.yaml names (`kind: module:NAME`)."""
    name, _, _ = parse_spec(name)
    where = str(strategy_file(name).kind)
    module_name, _, attribute = where.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"configs/strategy/{name}.yaml: kind {where!r} names no importable StrategyKind "
                          f"({error}); write module:NAME, e.g. strategies.baselines:NAIVE") from error
    if not isinstance(found, StrategyKind) or found.name != name:
        raise ConfigError(f"configs/strategy/{name}.yaml: kind {where!r} is not the StrategyKind of {name}")
    return found


@dataclass(frozen=True)
class ResolvedSpec:
    """A strategy spec resolved: the strategy, the recipe that runs (None: the typed defaults), every setting."""

    spec: str
    name: str
    recipe: Optional[str]
    settings: Any  # an instance of the strategy's settings dataclass, checked

    @property
    def kind(self) -> StrategyKind:
        """The strategy's declaration."""
        return kind(self.name)

    def as_dict(self) -> dict:
        """Every setting as a plain nested dict (results.json's `strategy_params`)."""
        return OmegaConf.to_container(OmegaConf.structured(self.settings), resolve=True)


def resolve(spec: str, input_shape=None, params: Optional[Mapping] = None) -> ResolvedSpec:
    """'ali_replay@latent_memory+optim.precision=bfloat16' -> its strategy, recipe and typed settings.

    The strategy's typed defaults, then the recipe's settings, then the spec's overrides, then
    `params` (a mapping), in that order. A spec without a recipe takes the one its strategy's
    `shape_defaults` names for `input_shape` (`ali_replay` on 3 x 32 x 32 images is
    `ali_replay@features`), else the typed defaults.
    """
    name, recipe, overrides = parse_spec(spec)
    file = strategy_file(name)
    schema = kind(name).settings
    if recipe is None and input_shape is not None:
        recipe = shape_recipe(file, input_shape)
    cfg = merge_config(schema, check=False)
    if recipe is not None:
        cfg = merge_config(cfg, overrides=[recipe_settings(file, name, recipe)], where=f"recipe {name}@{recipe}",
                           check=False)
    cfg = merge_config(cfg, overrides=[*overrides, params], where=f"{name} params")
    settings = OmegaConf.to_object(cfg)
    if hasattr(settings, "check"):
        settings.check()
    shape = f" on {shape_key(input_shape)} images" if input_shape is not None else ""
    logger.info("%s%s: recipe %s", spec, shape, recipe or "(the typed defaults)")
    return ResolvedSpec(str(spec), name, recipe, settings)


def load_strategy_params(spec: str, input_shape=None) -> tuple[str, DictConfig]:
    """Deprecated: use `resolve(spec, input_shape)`, which gives the typed settings (`.settings`)."""
    warnings.warn("load_strategy_params is deprecated; use strategies.catalogue.resolve(spec, input_shape), whose "
                  ".settings are the typed settings", DeprecationWarning, stacklevel=2)
    resolved = resolve(spec, input_shape)
    return resolved.name, OmegaConf.structured(resolved.settings)
