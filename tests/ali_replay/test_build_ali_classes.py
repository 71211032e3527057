"""build_ali takes the class count from its caller and refuses labels beyond it with the fix."""
import copy

import pytest
import torch

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, OptimConfig
from ali_replay.errors import ConfigError
from ali_replay.update import make_optimizers, train_step

CFG = ModelConfig(preset="mlp", hidden=32, latent_dim=4, conditional=True)


def test_conditional_ali_needs_the_class_count():
    with pytest.raises(ConfigError, match="num_classes=N"):
        build_ali((1, 8, 8), CFG)
    with pytest.raises(ConfigError, match=">= 1"):
        build_ali((1, 8, 8), CFG, num_classes=0)
    assert build_ali((1, 8, 8), CFG, num_classes=100).num_classes == 100
    # An unconditional ALI has no use for it.
    assert build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=4)).num_classes == 0


def test_label_beyond_the_class_count_is_named_before_one_hot():
    ali = build_ali((1, 8, 8), CFG, num_classes=10)
    x = torch.rand(6, 1, 8, 8)
    ok = torch.tensor([0, 1, 2, 3, 4, 9])
    assert ali.reconstruct(x, ok).shape == x.shape
    opt = make_optimizers(ali, OptimConfig())
    with pytest.raises(ConfigError, match=r"label 12 .* 10 classes .*num_classes=N"):
        train_step(ali, opt, OptimConfig(), x, torch.tensor([0, 1, 2, 3, 4, 12]))
    with pytest.raises(ConfigError, match="label -1"):
        ali.decode(torch.randn(2, 4), torch.tensor([-1, 0]))
    with pytest.raises(ConfigError, match="label 10"):
        copy.deepcopy(ali).generate(3, condition=10)  # the check survives Avalanche's deep copies


def test_build_ali_of_a_shape_alone_is_the_default_replay_model_with_a_deprecation_warning():
    from ali_replay.config import replay_model

    with pytest.warns(DeprecationWarning, match="pass num_classes=N"):
        ali = build_ali((1, 28, 28))
    model = replay_model()
    assert ali.conditional and ali.num_classes == 10 and ali.latent_dim == model.latent_dim == 16
    assert ali.preset == "conv28"
    assert ali.reconstruct(torch.rand(2, 1, 28, 28), torch.tensor([0, 9])).shape == (2, 1, 28, 28)
    assert build_ali((1, 28, 28), num_classes=3).num_classes == 3  # no warning: the class count is given
