"""The catalogue: each strategy's kind found through its YAML, specs resolved once into typed settings."""
import warnings

import pytest

import strategies.recipes as recipes_module
from ali_replay.config import resolve_config_path
from ali_replay.errors import ConfigError
from strategies import STRATEGY_NAMES, StrategyKind, default_recipe, kind, load_strategy_params, resolve, strategy_recipes
from strategies.replay import ReplayRecipe


def test_every_strategy_file_names_its_kind():
    assert STRATEGY_NAMES == ("ali_replay", "avalanche_gr", "dgr", "er", "gan_replay", "joint", "naive", "vae_replay")
    for name in STRATEGY_NAMES:
        declared = kind(name)
        assert isinstance(declared, StrategyKind) and declared.name == name
    assert {n for n in STRATEGY_NAMES if kind(n).distributed} == {"naive", "joint", "er", "ali_replay", "gan_replay"}


def test_unknown_names_recipes_and_keys():
    with pytest.raises(ConfigError, match="valid strategies: ali_replay, avalanche_gr, dgr, er, gan_replay, joint"):
        resolve("ewc@x")
    with pytest.raises(ConfigError, match="valid recipes: filtered, unfiltered, digits, prior, class_latent, "
                                          "latent_memory, reconstruction, features"):
        resolve("ali_replay@filtered_long_small_steps")
    with pytest.raises(ConfigError, match="unknown config key 'memory' in er params; accepted keys: mem_size"):
        resolve("er", params={"memory": 3})
    with pytest.raises(ConfigError, match="unknown config key 'model.depth' in ali_replay params; accepted keys: "):
        resolve("ali_replay", params={"model": {"depth": 3}})
    with pytest.raises(ConfigError, match="unknown source 'memory'; valid values"):
        resolve("ali_replay", params={"source": "memory"})
    with pytest.raises(ConfigError, match="unknown solver_input 'codes'; valid values: image, reconstruction, latent"):
        resolve("ali_replay+solver_input=codes")
    with pytest.raises(ConfigError, match="unknown config key 'weighting' in override 'weighting=concat'"):
        resolve("ali_replay@filtered+weighting=concat")
    with pytest.raises(ConfigError, match="is not key=value"):
        resolve("ali_replay@filtered+bf16")
    with pytest.raises(ConfigError, match="bad value for config key 'ali_epochs'"):
        resolve("ali_replay+ali_epochs=many")
    with pytest.raises(ConfigError, match="bad value for config key 'ali_epochs': must be >= 0, got -1"):
        resolve("ali_replay+ali_epochs=-1")


def test_recipes_and_overrides_merge_onto_the_typed_defaults():
    defaults = resolve("ali_replay").settings
    recipe = resolve("ali_replay@latent_memory").settings
    assert isinstance(recipe, ReplayRecipe) and recipe.source == "latent_memory" and recipe.model.conditional is False
    assert recipe.model.latent_dim == defaults.model.latent_dim == 16 and recipe.optim == defaults.optim
    composed = resolve("ali_replay@filtered+optim.precision=bfloat16+ali_epochs=5", params={"model": {"width": 1.0}})
    assert composed.recipe == "filtered"
    settings = composed.settings
    assert settings.filter_replay and settings.ali_batch_size == 64  # from the recipe
    assert settings.ali_epochs == 5 and settings.optim.precision == "bfloat16" and settings.model.width == 1.0
    assert settings.optim.lr_d == defaults.optim.lr_d  # a partial mapping keeps the other keys
    assert composed.as_dict()["model"]["width"] == 1.0
    assert resolve_config_path("ali_replay", "strategy").name == "ali_replay.yaml"
    assert len(strategy_recipes("ali_replay")) <= 8


def test_a_bare_name_takes_the_recipe_of_its_streams_shape():
    assert default_recipe("ali_replay", (3, 32, 32)) == "features"
    assert default_recipe("ali_replay", (1, 28, 28)) is None and default_recipe("ali_replay") is None
    assert [default_recipe(n, (1, 8, 8)) for n in ("ali_replay", "dgr", "gan_replay")] == ["digits"] * 3
    assert default_recipe("dgr", (3, 32, 32)) is None  # dgr.yaml names no recipe for 3x32x32
    cifar = resolve("ali_replay", (3, 32, 32))
    assert cifar.recipe == "features" and cifar.settings == resolve("ali_replay@features").settings
    mnist = resolve("ali_replay", (1, 28, 28))
    assert mnist.recipe is None and mnist.settings == resolve("ali_replay").settings
    # A recipe or an override named in the spec wins over the shape's recipe.
    assert resolve("ali_replay@unfiltered", (3, 32, 32)).settings.solver_input == "image"
    assert resolve("ali_replay+ali_epochs=3", (3, 32, 32)).settings.ali_epochs == 3


def test_the_log_names_the_recipe_that_runs(caplog):
    with caplog.at_level("INFO", logger="strategies.catalogue"):
        resolve("ali_replay@prior", (3, 32, 32))
        resolve("ali_replay", (3, 32, 32))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["ali_replay@prior on 3x32x32 images: recipe prior",
                        "ali_replay on 3x32x32 images: recipe features"]


def test_a_shape_default_naming_no_recipe_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "ali_replay.yaml"
    bad.write_text("kind: strategies.generative_replay:ALI_REPLAY\nshape_defaults:\n  3x32x32: featurez\n"
                   "recipes:\n  features: {ali_epochs: 2}\n")
    monkeypatch.setattr(recipes_module, "resolve_config_path", lambda name, kind: bad)
    with pytest.raises(ConfigError, match="shape_defaults names recipe 'featurez' for 3x32x32.*features"):
        default_recipe("ali_replay", (3, 32, 32))


@pytest.mark.parametrize("text, message", [
    ("recipes: {}\n", "no `kind: module:NAME`"),
    ("kind: strategies.baselines:NOPE\nrecipes: {}\n", "names no importable StrategyKind"),
    ("kind: strategies.baselines:ER\nrecipes: {}\n", "is not the StrategyKind of naive"),
    ("kind: strategies.baselines:NAIVE\nsettings: {}\n", "unknown top-level keys \\['settings'\\]"),
])
def test_a_strategy_file_with_a_wrong_kind_is_refused(tmp_path, monkeypatch, text, message):
    bad = tmp_path / "naive.yaml"
    bad.write_text(text)
    monkeypatch.setattr(recipes_module, "resolve_config_path", lambda name, kind: bad)
    with pytest.raises(ConfigError, match=message):
        resolve("naive")


def test_the_old_calls_keep_working_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="use strategies.catalogue.resolve"):
        name, params = load_strategy_params("ali_replay@latent_memory")
    assert name == "ali_replay" and params.source == "latent_memory"
    import importlib
    import sys

    sys.modules.pop("strategies.registry", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = importlib.import_module("strategies.registry")
    assert any(issubclass(w.category, DeprecationWarning) and "strategies.registry is deprecated" in str(w.message)
               for w in caught)
    assert registry.build_strategy is not None and registry.strategy_memory_bytes is not None
