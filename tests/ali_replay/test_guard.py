"""Divergence handling in the trainer: roll back, lower the learning rate, give up with a clear error."""
import csv

import pytest
import torch

import ali_replay.trainer as trainer_module
from ali_replay.ali import build_ali
from ali_replay.config import ModelConfig, load_run_config
from ali_replay.data import load_dataset
from ali_replay.errors import UserError
from ali_replay.guard import sample_diversity
from ali_replay.trainer import ALITrainer

SMALL = ["model.hidden=64", "model.latent_dim=8", "train.batch_size=128", "threads=1", "device=cpu",
         "train.log_every=5", "train.image_every=100"]


def _cfg(out, *extra):
    return load_run_config(None, SMALL + [f"output_dir={out}", *extra])


def test_nan_loss_rolls_back_and_lowers_learning_rate(tmp_path, monkeypatch):
    real_step = trainer_module.train_step
    calls = {"n": 0}

    def step_with_one_nan(*args, **kwargs):
        calls["n"] += 1
        stats = real_step(*args, **kwargs)
        if calls["n"] == 14:  # a loss blows up in the second epoch
            stats["loss_d"] = torch.tensor(float("nan"))
        return stats

    monkeypatch.setattr(trainer_module, "train_step", step_with_one_nan)
    trainer = ALITrainer(_cfg(tmp_path, "train.epochs=3"))
    trainer.fit()
    assert trainer.epoch == 3 and trainer.rollbacks == 1
    assert trainer.optimizers.d.param_groups[0]["lr"] == pytest.approx(trainer.cfg.optim.lr_d * 0.5)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["rollbacks"]) for r in rows] == [0, 1, 1]
    assert int(rows[-1]["step"]) == 3 * (1400 // 128)  # the failed epoch's steps were undone


def test_persistent_collapse_stops_with_error_and_keeps_last_good_checkpoint(tmp_path):
    first = ALITrainer(_cfg(tmp_path, "train.epochs=1"))
    first.fit()
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    # An impossible diversity threshold makes every further epoch look collapsed.
    trainer = ALITrainer(_cfg(tmp_path, "train.epochs=3", "guard.diversity_min=100", "guard.max_rollbacks=2"),
                         resume=True)
    with pytest.raises(UserError, match=r"diverged again.*mode collapse.*checkpoint.pt"):
        trainer.fit()
    assert trainer.rollbacks == 2
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved


def test_diversity_separates_collapsed_from_varied_decoders():
    x = load_dataset("digits").train.float_images()
    torch.manual_seed(0)
    ali = build_ali((1, 8, 8), ModelConfig(preset="mlp", hidden=32, latent_dim=4))
    varied = sample_diversity(ali, x)
    with torch.no_grad():  # a decoder that ignores z: every sample identical
        ali.decoder.net.net[-1].weight.zero_()
        for module in ali.decoder.modules():
            if isinstance(module, torch.nn.Linear) and module is not ali.decoder.net.net[-1]:
                module.weight.zero_()
    collapsed = sample_diversity(ali, x)
    assert collapsed < 1e-3 < varied
