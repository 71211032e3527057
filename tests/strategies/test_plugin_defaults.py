"""ALIReplayPlugin given nothing but the ALI is the default recipe: one ReplayConfig holds every default."""
import dataclasses
import logging

import pytest
from omegaconf import OmegaConf

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig
from ali_replay.errors import ConfigError
from strategies import ALIReplayPlugin, replay_ali
from strategies import load_strategy_params
from strategies.replay import ReplayConfig, ReplayRecipe, replay_fields, replay_optim


def _ali(conditional, encoder=True):
    return build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=4, conditional=conditional),
                     num_classes=10, encoder=encoder)


def test_the_plugin_alone_is_the_default_recipe():
    plugin = ALIReplayPlugin(_ali(True))
    _, recipe = load_strategy_params("ali_replay")
    settings = {key: recipe[key] for key in replay_fields()}
    assert dataclasses.asdict(plugin.config) == {**OmegaConf.to_container(OmegaConf.create(settings)),
                                                 "source": "conditional"}
    assert plugin.config == dataclasses.replace(ReplayConfig(), source="conditional")
    assert plugin.config.covariance == "full" and plugin.config.replay_size == 60_000
    assert plugin.generator.optimizers.g.param_groups[0]["lr"] == replay_optim().lr_g == 1e-3
    assert plugin.config.optim.cycle_x == 10.0
    assert ReplayRecipe().model.conditional and ReplayRecipe().model.latent_dim == 16


@pytest.mark.parametrize("conditional,encoder,source", [(True, True, "conditional"), (False, True, "class_latent"),
                                                        (False, False, "prior")])
def test_default_source_follows_the_generator(conditional, encoder, source):
    plugin = ALIReplayPlugin(_ali(conditional, encoder))
    assert plugin.config.source == source == plugin.source.name and plugin.labeller.mode == "solver_soft"


def test_config_object_and_keywords_combine():
    plugin = ALIReplayPlugin(_ali(False), ReplayConfig(labels="stored", source="latent_memory"), memory_bytes=500,
                             optim={"lr_d": 5e-4})
    assert plugin.config.labels == "stored" and plugin.source.memory.budget_bytes == 500
    assert plugin.config.optim.lr_d == 5e-4
    assert plugin.config.optim.lr_g == replay_optim().lr_g and plugin.config.optim.cycle_x == replay_optim().cycle_x
    with pytest.raises(ConfigError, match="unknown config key 'pure_replay_epochs'"):
        ALIReplayPlugin(_ali(False), pure_replay_epochs=1)


def test_every_numeric_strategy_setting_declares_its_range():
    from ali_replay.config import numeric_fields_without_bounds
    from strategies import STRATEGY_NAMES, kind

    assert {name: numeric_fields_without_bounds(kind(name).settings) for name in STRATEGY_NAMES
            if numeric_fields_without_bounds(kind(name).settings)} == {}


@pytest.mark.parametrize("setting, message", [
    ({"temperature": 0}, "'temperature': must be > 0"),
    ({"replay_size": 0}, "'replay_size': must be >= 1"),
    ({"ali_epochs": -1}, "'ali_epochs': must be >= 0"),
    ({"memory_bytes": -5}, "'memory_bytes': must be >= 0"),
])
def test_out_of_range_settings_stop_the_plugin_and_the_catalogue(setting, message):
    from strategies import resolve

    with pytest.raises(ConfigError, match=message):
        ALIReplayPlugin(_ali(True), **setting)
    key, value = next(iter(setting.items()))
    with pytest.raises(ConfigError, match=message):
        resolve(f"ali_replay+{key}={value}")


def test_replay_ali_builds_the_recipes_networks_with_the_streams_class_count():
    recipe = ReplayRecipe()
    ali = replay_ali((1, 28, 28), num_classes=7)
    assert ali.latent_dim == recipe.model.latent_dim == 16 and ali.num_classes == 7
    assert ali.preset == "conv28"
    with pytest.raises(ConfigError, match="class count"):
        replay_ali((1, 28, 28))  # a conditional recipe never guesses the class count
    plain = replay_ali((1, 28, 28), conditional=False)
    assert plain.num_classes == 0 and plain.latent_dim == 16
    wide = replay_ali((1, 28, 28), recipe=ReplayRecipe(model=ModelConfig(conditional=False, latent_dim=8)))
    assert wide.latent_dim == 8


def test_replay_ali_points_3x32x32_users_to_the_recipe_of_their_shape(caplog):
    with caplog.at_level(logging.WARNING, logger="strategies.generative_replay"):
        replay_ali((1, 28, 28), num_classes=10)
        assert not caplog.records  # 28x28's recipe is the image recipe this ALI serves
        ali = replay_ali((3, 32, 32), num_classes=10)
    assert ali.preset == "conv32"
    assert "ali_replay@features" in caplog.text and "LatentSolver" in caplog.text
