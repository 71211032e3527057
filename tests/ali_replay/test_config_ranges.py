"""Ranges declared on the config schemas: every numeric key has one, and each is enforced at load."""
import math

import pytest

from ali_replay.config import (ALIRunConfig, Bounds, check_ranges, load_run_config, merge_config,
                               numeric_fields_without_bounds)
from ali_replay.errors import ConfigError


def test_every_numeric_key_declares_a_range():
    assert numeric_fields_without_bounds(ALIRunConfig) == []


def test_bounds_describe_and_hold():
    assert Bounds(1).describe() == "must be >= 1" and Bounds(1).holds(1) and not Bounds(1).holds(0)
    half_open = Bounds(0, 1, high_open=True)
    assert half_open.describe() == "must be in [0, 1)"
    assert half_open.holds(0) and not half_open.holds(1)
    positive = Bounds(0, low_open=True)
    assert positive.describe() == "must be > 0" and positive.holds(1e-12) and not positive.holds(0)
    assert not any(Bounds(0).holds(v) for v in (math.nan, math.inf))


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "'train.batch_size': must be >= 1, got 0"),
    ("train.epochs=-3", "'train.epochs': must be >= 1, got -3"),
    ("train.max_steps=0", "'train.max_steps': must be >= 1"),
    ("train.log_every=0", "'train.log_every'"),
    ("train.image_every=0", "'train.image_every'"),
    ("train.lr=0", "'train.lr': must be > 0"),
    ("optim.lr_d=-1e-4", "'optim.lr_d': must be > 0"),
    ("optim.lr_g=nan", "'optim.lr_g': must be > 0, got nan"),
    ("optim.beta1=1", "'optim.beta1': must be in [0, 1)"),
    ("optim.beta2=-0.1", "'optim.beta2'"),
    ("optim.cycle_x=-1", "'optim.cycle_x': must be >= 0"),
    ("optim.cycle_z=inf", "'optim.cycle_z'"),
    ("model.latent_dim=0", "'model.latent_dim'"),
    ("model.width=0", "'model.width': must be > 0"),
    ("model.hidden=-5", "'model.hidden'"),
    ("model.dropout=1.0", "'model.dropout': must be in [0, 1)"),
    ("eval.labels_per_class=0", "'eval.labels_per_class'"),
    ("eval.probe_train_size=0", "'eval.probe_train_size'"),
    ("eval.n_samples=0", "'eval.n_samples'"),
    ("guard.d_loss_min=-1", "'guard.d_loss_min'"),
    ("guard.diversity_min=-0.1", "'guard.diversity_min'"),
    ("guard.lr_factor=1", "'guard.lr_factor': must be in (0, 1)"),
    ("guard.max_rollbacks=-1", "'guard.max_rollbacks': must be >= 0"),
    ("seed=-1", "'seed': must be in [0, 4294967295]"),
    ("threads=0", "'threads': must be in [1, 1024]"),
    ("threads=2147483647", "'threads'"),
])
def test_out_of_range_values_name_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_edges_and_nulls_are_accepted():
    cfg = load_run_config(None, ["train.epochs=1", "train.batch_size=1", "model.dropout=0", "optim.cycle_x=0",
                                 "guard.max_rollbacks=0", "seed=4294967295", "train.lr=null", "threads=null"])
    assert cfg.train.epochs == 1 and cfg.seed == 2 ** 32 - 1 and cfg.train.lr is None


def test_folder_keys_refuse_a_file_and_file_keys_a_folder(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("x")
    with pytest.raises(ConfigError, match=r"'data.root': '.*a_file' is a file, not a folder") as err:
        load_run_config(None, [f"data.root={file}", "data.name=mnist"])
    assert "does not exist" not in str(err.value)
    with pytest.raises(ConfigError, match=r"'output_dir': .* is a file, not a folder"):
        load_run_config(None, [f"output_dir={file}"])
    with pytest.raises(ConfigError, match=r"'output_dir': .* lies inside .*a_file, which is a file"):
        load_run_config(None, [f"output_dir={file}/run"])
    with pytest.raises(ConfigError, match=r"'data.path': .* is a folder, not a file"):
        load_run_config(None, [f"data.path={tmp_path}", "data.name=npz"])
    cfg = load_run_config(None, [f"data.root={tmp_path}", f"output_dir={tmp_path / 'new' / 'run'}",
                                 f"data.path={file}"])
    assert cfg.data.root == str(tmp_path)


def test_ranges_are_checked_on_the_final_merge_only_when_asked():
    cfg = merge_config(ALIRunConfig, None, ["train.epochs=0"], check=False)
    assert cfg.train.epochs == 0
    with pytest.raises(ConfigError, match="train.epochs"):
        check_ranges(cfg)
    with pytest.raises(ConfigError, match="train.epochs"):
        check_ranges({"train": {"epochs": 0}}, ALIRunConfig)  # plain mappings, checked against a schema
