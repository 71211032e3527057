"""ALIReplayPlugin's defaults are the best measured settings, and partial optimiser mappings keep them."""
import pytest

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig
from strategies import ALIReplayPlugin
from strategies.ali_replay_plugin import REPLAY_OPTIM


def _ali(conditional):
    return build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=4, conditional=conditional))


@pytest.mark.parametrize("conditional,source", [(True, "conditional"), (False, "class_latent")])
def test_default_source_follows_the_model(conditional, source):
    plugin = ALIReplayPlugin(_ali(conditional))
    assert plugin.source == source and plugin.labels == "solver_soft"
    assert plugin.optim_cfg.lr_d == REPLAY_OPTIM["lr_d"] and plugin.optim_cfg.cycle_x == REPLAY_OPTIM["cycle_x"]
    assert plugin.optimizers.g.param_groups[0]["lr"] == REPLAY_OPTIM["lr_g"]


def test_partial_optim_mapping_overrides_only_its_keys():
    plugin = ALIReplayPlugin(_ali(False), optim_cfg={"lr_d": 5e-4})
    assert plugin.optim_cfg.lr_d == 5e-4
    assert plugin.optim_cfg.lr_g == REPLAY_OPTIM["lr_g"] and plugin.optim_cfg.cycle_x == REPLAY_OPTIM["cycle_x"]
