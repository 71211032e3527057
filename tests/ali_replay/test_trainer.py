"""The standalone trainer on the embedded digits: outputs, resume, and refusing to clobber runs."""
import csv

import pytest
import torch

from ali_replay.config import load_run_config
from ali_replay.errors import ConfigError
from ali_replay.trainer import ALITrainer, load_trained

SMALL = ["model.hidden=64", "model.latent_dim=8", "train.batch_size=128", "threads=1", "device=cpu"]


def _cfg(out, *extra):
    return load_run_config(None, SMALL + [f"output_dir={out}", *extra])


def test_training_writes_every_output(tmp_path):
    out = tmp_path / "run"
    trainer = ALITrainer(_cfg(out, "train.epochs=2"))
    trainer.fit()
    for name in ("checkpoint.pt", "samples.png", "reconstructions.png", "interpolations.png", "metrics.csv"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss_d", "loss_g", "cycle_x", "images_per_second"} <= set(rows[0])
    assert int(rows[-1]["step"]) == 2 * (1400 // 128)
    ali, cfg, state = load_trained(out)
    assert state["epoch"] == 2 and cfg.model.latent_dim == 8
    assert ali.sample(3).shape == (3, 1, 8, 8)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = ALITrainer(_cfg(tmp_path / "a", "train.epochs=2"))
    straight.fit()
    first = ALITrainer(_cfg(tmp_path / "b", "train.epochs=1"))
    first.fit()
    resumed = ALITrainer(_cfg(tmp_path / "b", "train.epochs=2"), resume=True)
    assert resumed.epoch == 1
    resumed.fit()
    for (name, a), (_, b) in zip(straight.ali.state_dict().items(), resumed.ali.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_existing_run_is_not_clobbered(tmp_path):
    out = tmp_path / "run"
    ALITrainer(_cfg(out, "train.epochs=1")).fit()
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="--resume.*--overwrite"):
        ALITrainer(_cfg(out, "train.epochs=1"))
    assert (out / "checkpoint.pt").read_bytes() == before
    with pytest.raises(ConfigError, match="different config"):
        ALITrainer(_cfg(out, "train.epochs=2", "model.latent_dim=4"), resume=True)
    ALITrainer(_cfg(out, "train.epochs=1"), overwrite=True).fit()
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 1


def test_max_steps_stops_early(tmp_path):
    trainer = ALITrainer(_cfg(tmp_path / "r", "train.epochs=5", "train.max_steps=3"))
    trainer.fit()
    assert trainer.step == 3


def _run_and_evaluate(out, seed):
    """A tiny digits run with `seed`, evaluated: its metrics rows and its eval figures (timings dropped)."""
    from ali_replay.evaluation import evaluate_ali

    cfg = _cfg(out, "train.epochs=2", f"seed={seed}", "eval.labels_per_class=20")
    trainer = ALITrainer(cfg)
    trainer.fit()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    result = evaluate_ali(trainer.ali, cfg, trainer.device)
    result.pop("eval_seconds")
    return rows, result


def test_seed_is_recorded_and_reproduces_the_figures(tmp_path):
    rows, first = _run_and_evaluate(tmp_path / "a", seed=7)
    assert [int(r["seed"]) for r in rows] == [7, 7] and first["seed"] == 7
    _, again = _run_and_evaluate(tmp_path / "b", seed=7)
    assert again == first  # every figure, the class histogram of 10,000 samples included
    assert first["sample_count"] == 10000
    _, other = _run_and_evaluate(tmp_path / "c", seed=8)
    assert other["seed"] == 8
    assert other["recon_mse"] != first["recon_mse"]
    assert other["sample_class_hist"] != first["sample_class_hist"]
