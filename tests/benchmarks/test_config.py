"""The comparison config: defaults, presets, overrides, validation and shipped files."""
import pytest

from ali_replay.config import configs_dir
from ali_replay.errors import ConfigError
from benchmarks import load_compare_config
from benchmarks.streams import BENCHMARK_NAMES


def test_defaults():
    cfg = load_compare_config()
    assert cfg.benchmark.name == "split_digits"
    assert cfg.benchmark.scenario == "class_incremental"
    assert cfg.benchmark.shuffle_classes is False
    assert list(cfg.strategies) == ["naive", "vae_replay", "dgr", "ali_replay", "joint"]
    assert list(cfg.seeds) == [0]
    assert cfg.device == "auto" and cfg.jobs == 1
    for key in ("data.root", "data.download", "data.path", "output_dir", "threads", "solver.name",
                "solver.epochs", "solver.batch_size", "solver.lr", "generator.epochs",
                "logging.tensorboard", "eval_mb_size"):
        assert key.split(".")[0] in cfg


def test_benchmark_preset_then_overrides():
    cfg = load_compare_config(None, ["benchmark=split_mnist", "solver.epochs=2", "data.root=/x"])
    assert cfg.benchmark.name == "split_mnist"
    assert cfg.solver.name == "mlp" and cfg.solver.batch_size == 128
    assert cfg.solver.epochs == 2 and cfg.data.root == "/x"
    cfg = load_compare_config(None, ["benchmark=split_cifar10"])
    assert cfg.solver.name == "conv"


def test_named_compare_file():
    cfg = load_compare_config("split_mnist")
    assert cfg.benchmark.name == "split_mnist"
    assert list(cfg.seeds) == [0, 1, 2]
    families = {spec.split("@")[0].split("+")[0] for spec in cfg.strategies}  # the headline: one recipe per family
    assert families == {"ali_replay", "dgr", "gan_replay", "avalanche_gr", "vae_replay", "er", "naive", "joint"}
    assert len(cfg.strategies) == len(families)


@pytest.mark.parametrize("kind", ["compare", "benchmark"])
def test_every_shipped_file_loads(kind):
    files = sorted((configs_dir() / kind).rglob("*.yaml"))  # sweeps/ and ablations/ included
    assert files
    for file in files:
        if kind == "compare":
            load_compare_config(file)
        else:
            assert load_compare_config(None, [f"benchmark={file.stem}"]).benchmark.name == file.stem
    if kind == "benchmark":
        assert {f.stem for f in files} == set(BENCHMARK_NAMES)


def test_every_shipped_strategy_spec_resolves():
    from strategies import load_strategy_params

    for file in sorted((configs_dir() / "compare").rglob("*.yaml")):
        for spec in load_compare_config(file).strategies:
            load_strategy_params(spec)


def test_unknown_benchmark_name_lists_names():
    with pytest.raises(ConfigError) as err:
        load_compare_config(None, ["benchmark.name=split_nope"])
    assert all(name in str(err.value) for name in BENCHMARK_NAMES)
    with pytest.raises(ConfigError, match="split_mnist"):
        load_compare_config(None, ["benchmark=split_nope"])


@pytest.mark.parametrize("override, message", [
    ("solver.epochz=3", "unknown config key"),
    ("solver.epochs=zero", "solver.epochs"),
    ("solver.epochs=0", "solver.epochs"),
    ("device=tpu", "auto, cpu, cuda"),
    ("solver.name=resnet", "mlp, conv"),
    ("seeds=[]", "seeds"),
    ("strategies=[naive,naive]", "naive"),
    ("benchmark.scenario=domain", "task_incremental"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_compare_config(None, [override])
