"""The comparison config's declared ranges and path kinds, checked once at load and again by compare()."""
import pytest
from omegaconf import OmegaConf

from ali_replay.config import numeric_fields_without_bounds
from ali_replay.errors import ConfigError
from benchmarks import load_compare_config
from benchmarks.config import CompareConfig, validate_compare_config


def test_every_numeric_key_declares_a_range():
    assert numeric_fields_without_bounds(CompareConfig) == []


@pytest.mark.parametrize("override, message", [
    ("solver.epochs=0", "'solver.epochs': must be >= 1, got 0"),
    ("solver.batch_size=-1", "'solver.batch_size'"),
    ("solver.lr=0", "'solver.lr': must be > 0"),
    ("generator.epochs=0", "'generator.epochs'"),
    ("benchmark.n_experiences=0", "'benchmark.n_experiences'"),
    ("jobs=0", "'jobs'"),
    ("threads=0", "'threads'"),
    ("eval_mb_size=0", "'eval_mb_size'"),
    ("seeds=[0,-2]", "'seeds': must be in [0, 4294967295], got -2"),
])
def test_out_of_range_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_compare_config(None, [override])
    assert message in str(err.value)


def test_paths(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("x")
    with pytest.raises(ConfigError, match="'output_dir'.*is a file, not a folder"):
        load_compare_config(None, [f"output_dir={file}"])
    with pytest.raises(ConfigError, match="'data.root'.*is a file, not a folder") as err:
        load_compare_config(None, ["benchmark=split_mnist", f"data.root={file}"])
    assert "does not exist" not in str(err.value)
    with pytest.raises(ConfigError, match="'data.path'.*is a folder, not a file"):
        load_compare_config(None, [f"data.path={tmp_path}"])


def test_an_override_repairs_a_preset_value_before_the_check(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("solver:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match="solver.epochs"):
        load_compare_config(None, [f"benchmark={preset}"])
    assert load_compare_config(None, [f"benchmark={preset}", "solver.epochs=2"]).solver.epochs == 2


def test_compare_checks_a_config_built_in_code():
    plain = OmegaConf.to_container(load_compare_config(), resolve=True)
    plain["solver"]["lr"] = -1.0
    with pytest.raises(ConfigError, match="solver.lr"):
        validate_compare_config(OmegaConf.create(plain))


def test_a_list_item_set_like_a_key_is_one_config_error():
    with pytest.raises(ConfigError) as err:
        load_compare_config(None, ["seeds.0=1"])
    assert "cannot apply override 'seeds.0=1'" in str(err.value) and "seeds=[0,1]" in str(err.value)
