"""Config loading: shipped files, overrides, and errors that name the key."""
import pytest

from ali_replay.config import configs_dir, load_run_config, resolve_config_path
from ali_replay.errors import ConfigError


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10", "svhn"])
def test_shipped_ali_configs_load(name):
    cfg = load_run_config(name)
    assert cfg.data.name == name
    assert (configs_dir() / "ali" / f"{name}.yaml").is_file()


def test_overrides_and_lr_shortcut():
    cfg = load_run_config(None, ["train.epochs=3", "model.latent_dim=8", "train.lr=5e-4"])
    assert cfg.train.epochs == 3 and cfg.model.latent_dim == 8
    assert cfg.optim.lr_d == cfg.optim.lr_g == 5e-4


def test_any_path_is_accepted(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  name: digits\ntrain:\n  epochs: 2\n")
    assert load_run_config(str(path)).train.epochs == 2


def test_unknown_key_names_key_and_accepted_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*train.epochs"):
        load_run_config(None, ["train.epoch=3"])


def test_unknown_key_in_file_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  latent: 3\n")
    with pytest.raises(ConfigError, match=r"model.latent.*bad.yaml"):
        load_run_config(str(path))


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"'train.epochs'"):
        load_run_config(None, ["train.epochs=many"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        load_run_config(None, ["train.epochs"])


def test_missing_config_lists_shipped_names():
    with pytest.raises(ConfigError, match="digits"):
        resolve_config_path("nope", "ali")
