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


def test_precision_auto_is_bf16_only_where_the_device_has_bf16_units(monkeypatch, caplog):
    from ali_replay import runtime

    runtime.compute_precision.cache_clear()
    monkeypatch.setattr(runtime, "has_bf16_units", lambda device_type: device_type == "cpu")
    with caplog.at_level("INFO", logger="ali_replay.runtime"):
        assert runtime.compute_precision("auto", "cpu") == "bfloat16"
        assert runtime.compute_precision("auto", "cuda") == "float32"
    assert "precision auto on cpu: bfloat16" in caplog.text and "precision auto on cuda: float32" in caplog.text
    assert runtime.compute_precision("float32", "cpu") == "float32"  # a precision named is kept
    assert runtime.compute_precision("bfloat16", "cuda") == "bfloat16"
    runtime.compute_precision.cache_clear()


def test_the_cpus_bf16_units_are_read_from_its_flags():
    from ali_replay import runtime

    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        flags = next(line for line in handle if line.startswith("flags")).split()
    assert runtime.has_bf16_units("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert runtime.has_bf16_units("mps") is False
