"""configs/strategy/<name>.yaml: each strategy's kind, its named recipes, and the recipe each input shape takes.

A strategy spec names a strategy, optionally a recipe and overrides: 'name[@recipe][+key=value...]'.
A recipe is a mapping of settings over the strategy's typed defaults; `shape_defaults` maps an
input shape ('3x32x32') to a recipe, chosen on validation data, so that a stream nobody tuned on
gets the recipe of its shape.
"""
from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig, OmegaConf

from ali_replay.config import configs_dir, resolve_config_path
from ali_replay.errors import ConfigError

TOP_LEVEL_KEYS = ("kind", "recipes", "shape_defaults")


def strategy_names() -> tuple[str, ...]:
    """Every strategy a spec may name: the files in configs/strategy/, in alphabetical order."""
    return tuple(sorted(path.stem for path in (configs_dir() / "strategy").glob("*.yaml")))


STRATEGY_NAMES = strategy_names()


def parse_spec(spec: str) -> tuple[str, Optional[str], list[str]]:
    """'name[@recipe][+key=value...]' -> (name, recipe or None, the key=value overrides), the name checked."""
    head, *overrides = str(spec).split("+")
    name, _, recipe = head.partition("@")
    name = name.strip()
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGY_NAMES)}")
    overrides = [item.strip() for item in overrides]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} in strategy spec {spec!r} is not key=value; "
                              "write e.g. ali_replay@filtered+ali_epochs=5")
    return name, recipe.strip() or None, overrides


def strategy_file(name: str) -> DictConfig:
    """configs/strategy/<name>.yaml, its layout checked: kind, recipes, shape_defaults."""
    path = resolve_config_path(name, "strategy")
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # YAML errors come in many types
        raise ConfigError(f"cannot read strategy config {path}: {error}") from error
    extra = set(cfg.keys()) - set(TOP_LEVEL_KEYS)
    if extra:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(extra)}; accepted: {', '.join(TOP_LEVEL_KEYS)} "
                          f"(the settings themselves go under recipes)")
    if not cfg.get("kind"):
        raise ConfigError(f"{path}: no `kind: module:NAME` naming the strategy's declaration (a StrategyKind)")
    recipes = cfg.get("recipes") or OmegaConf.create({})
    for shape, recipe in (cfg.get("shape_defaults") or {}).items():
        if recipe not in recipes:
            raise ConfigError(f"{path}: shape_defaults names recipe {recipe!r} for {shape}, which is not among its "
                              f"recipes ({', '.join(recipes.keys()) or 'none'}); add it or name another")
    return cfg


def shape_key(input_shape) -> str:
    """(3, 32, 32) -> '3x32x32', the way shape_defaults names a shape."""
    return "x".join(str(int(s)) for s in input_shape)


def shape_recipe(file: DictConfig, input_shape) -> Optional[str]:
    """The recipe a strategy file's `shape_defaults` names for `input_shape` (None: none, or no shape)."""
    if input_shape is None:
        return None
    return (file.get("shape_defaults") or {}).get(shape_key(input_shape))


def default_recipe(name: str, input_shape=None) -> Optional[str]:
    """The recipe a bare `name` stands for on images of `input_shape` (None: the strategy's typed defaults)."""
    name, _, _ = parse_spec(name)
    return None if input_shape is None else shape_recipe(strategy_file(name), input_shape)


def strategy_recipes(name: str) -> list[str]:
    """The recipe names configs/strategy/<name>.yaml offers."""
    name, _, _ = parse_spec(name)
    return list((strategy_file(name).get("recipes") or {}).keys())


def recipe_settings(file: DictConfig, name: str, recipe: str) -> DictConfig:
    """The settings of one named recipe, or a ConfigError listing the valid ones."""
    recipes = file.get("recipes") or OmegaConf.create({})
    if recipe not in recipes:
        raise ConfigError(f"unknown recipe {recipe!r} of strategy {name}; valid recipes: "
                          f"{', '.join(recipes.keys()) or '(none)'}")
    return recipes[recipe]
