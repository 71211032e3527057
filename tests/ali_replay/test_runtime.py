"""The inference-mode switch every sampler and encoder pass goes through."""
import pytest
import torch

from ali_replay.runtime import evaluating


def test_evaluating_switches_modes_and_gradients_and_restores_them_after_errors():
    train_net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    eval_net = torch.nn.Linear(3, 1).eval()
    x = torch.randn(4, 3, requires_grad=True)
    with evaluating(train_net, eval_net):
        assert not train_net.training and not train_net[1].training and not eval_net.training
        out = train_net(x)
        assert not out.requires_grad
    assert train_net.training and train_net[1].training and not eval_net.training
    with pytest.raises(RuntimeError, match="boom"):
        with evaluating(train_net):
            raise RuntimeError("boom")
    assert train_net.training and torch.is_grad_enabled()
    assert train_net(x).requires_grad
