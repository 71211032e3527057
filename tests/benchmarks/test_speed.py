"""The throughput benchmark runs each preset through the trainer and the minimal loop, for both update orders."""
import pytest
import torch

from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, OptimConfig
from benchmarks import speed


@pytest.mark.parametrize("order", ["alternating", "simultaneous"])
def test_minimal_loop_trains_all_three_networks(order, monkeypatch):
    built = []
    monkeypatch.setattr(speed, "build_ali", lambda *a, **k: built.append(build_ali(*a, **k)) or built[-1])
    cfg = ModelConfig(preset="conv28", latent_dim=8, width=0.25)
    images_per_second = speed.minimal_loop(cfg, OptimConfig(update_order=order), (1, 28, 28),
                                           torch.rand(96, 1, 28, 28), 32, torch.device("cpu"),
                                           channels_last=False, autocast=False)
    assert images_per_second > 0
    torch.manual_seed(0)  # the loop seeds its model: these are its initial weights
    initial = build_ali((1, 28, 28), cfg, 10).state_dict()
    trained = built[0].state_dict()
    for part in ("encoder", "decoder", "discriminator"):
        assert any(not torch.equal(v, initial[k]) for k, v in trained.items() if k.startswith(part)), part


def test_every_preset_gets_a_row(tmp_path):
    rows = speed.run(n=128, device="cpu", threads=1, update_order="simultaneous", autocast=True)
    assert [r["preset"] for r in rows] == [case[0] for case in speed.CASES]
    for r in rows:
        assert r["trainer_ips"] > 0 and r["minimal_ips"] > 0
        assert r["ratio"] == pytest.approx(r["trainer_ips"] / r["minimal_ips"])
    table = speed.format_rows(rows, "cpu", 1)
    assert table.count("\n| ") == len(rows) + 2 and "trainer / minimal" in table  # header, rule, rows
    assert all(f"| {case[0]} |" in table for case in speed.CASES)


def test_tf32_is_refused_off_cuda(capsys):
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["--device", "cpu", "--tf32"])
    assert exit_info.value.code == 2
    assert "--tf32 is a CUDA setting" in capsys.readouterr().err
    assert not torch.backends.cuda.matmul.allow_tf32  # nothing was switched on the way out
