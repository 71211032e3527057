"""The solver networks: shapes, sizes and the multi-head variant."""
import pytest
import torch

from ali_replay.errors import ConfigError
from benchmarks.solvers import build_solver


def test_mlp_is_two_hidden_layers_of_400():
    net = build_solver("mlp", (1, 28, 28), 10, "class_incremental")
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == (784 * 400 + 400) + (400 * 400 + 400) + (400 * 10 + 10)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8)])
def test_conv_accepts_image_sizes(shape):
    net = build_solver("conv", shape, 10, "class_incremental")
    assert net(torch.rand(2, *shape)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) < 1_000_000  # small enough for a CPU


def test_task_incremental_is_multi_head():
    from avalanche.models import MultiHeadClassifier, MultiTaskModule

    net = build_solver("mlp", (1, 8, 8), 10, "task_incremental")
    assert isinstance(net, MultiTaskModule)
    assert any(isinstance(m, MultiHeadClassifier) for m in net.modules())


def test_unknown_solver_lists_names():
    with pytest.raises(ConfigError, match="mlp, conv"):
        build_solver("resnet", (3, 32, 32), 10)
