"""The comparison config: which stream, solver, strategies and seeds, and how to run them.

Layout (all files are partial configs over the `CompareConfig` schema below):

* `configs/compare/<name>.yaml` - a whole comparison (`default`, `split_mnist`, `split_cifar10`).
  `load_compare_config()` reads `default`; `load_compare_config("split_mnist")` or a path reads
  that file instead (the CLI's `--config NAME_OR_PATH`).
* `configs/benchmark/<name>.yaml` - one stream's preset: its `benchmark`, `data` and `solver`
  sections (`split_digits`, `split_mnist`, `split_fashion_mnist`, `split_cifar10`, `split_svhn`,
  `split_cifar100`). Select it with the override `benchmark=<name>` (or `benchmark=<path.yaml>`):
  the preset is merged over the comparison file, then the other overrides are applied.
* `key=value` overrides last, e.g. `solver.epochs=3 seeds=[0,1] strategies=[naive,er]`.

So `ali-replay compare benchmark=split_mnist data.root=../shared/data` runs the default
strategies on split MNIST with the split-MNIST solver settings.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from ali_replay.config import (FILE, FOLDER, SEED_RANGE, THREADS, at_least, check_ranges, merge_config,
                               positive, resolve_config_path, within)
from ali_replay.errors import ConfigError

from benchmarks.solvers import SOLVER_NAMES
from benchmarks.streams import (avalanche_default_transforms, check_benchmark_name, check_scenario,
                                check_transforms)

log = logging.getLogger(__name__)

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

# Keys that change how runs are executed, not what they compute: a results folder written with
# other values of these is still the same comparison (resumable, comparable).
EXECUTION_KEYS: tuple[str, ...] = ("jobs", "threads", "output_dir", "logging", "diagnostics")


@dataclass
class BenchmarkConfig:
    """The continual-learning stream."""

    name: str = "split_digits"
    scenario: str = "class_incremental"  # class_incremental | task_incremental
    shuffle_classes: bool = False  # True: class order permuted by the run's seed
    # None: the benchmark's own (5; 10 for split_cifar100)
    n_experiences: Optional[int] = field(default=None, metadata=at_least(1))
    # Share of each class's training images held out as a validation stream, drawn by the run's
    # seed (benchmarks.streams.validation_split); 0 holds out nothing.
    validation: float = field(default=0.0, metadata=within(0.0, 1.0, high_open=True))
    # none: images in [0, 1], no per-item transforms; avalanche: the default transforms of Avalanche's
    # classic benchmark of the data set (SplitMNIST, SplitFMNIST, SplitCIFAR10, SplitCIFAR100)
    transforms: str = "none"


@dataclass
class BenchmarkDataConfig:
    """Where the stream's data set is read from (see `ali_replay.data.load_dataset`)."""

    root: str = field(default="data", metadata=FOLDER)
    download: bool = False
    path: Optional[str] = field(default=None, metadata=FILE)  # only for npz-backed data sets


@dataclass
class SolverConfig:
    """The classifier every strategy trains, and its budget per experience."""

    name: str = "mlp"  # mlp | conv
    epochs: int = field(default=5, metadata=at_least(1))
    batch_size: int = field(default=128, metadata=at_least(1))
    lr: float = field(default=1e-3, metadata=positive())  # Adam


@dataclass
class GeneratorConfig:
    """Budget of a strategy's separate generator (VAE/GAN/ALI), per experience."""

    epochs: Optional[int] = field(default=None, metadata=at_least(1))  # None: the strategy's own default


@dataclass
class LoggingConfig:
    """Avalanche loggers besides the always-on InteractiveLogger and CSVLogger."""

    tensorboard: bool = False


@dataclass
class CompareConfig:
    """Everything `ali-replay compare` and `ali-replay run` read."""

    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    data: BenchmarkDataConfig = field(default_factory=BenchmarkDataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    strategies: List[str] = field(default_factory=lambda: ["naive", "vae_replay", "dgr", "ali_replay", "joint"])
    # several streams: the whole comparison on each of these benchmarks in turn (benchmark.name replaced, every
    # other setting the same), each into output_dir/<name>, with a report over them in output_dir
    benchmarks: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0], metadata=SEED_RANGE)  # the range of every seed
    output_dir: str = field(default="runs/compare", metadata=FOLDER)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    jobs: int = field(default=1, metadata=at_least(1))  # parallel run processes
    # torch threads per run; None: max(1, cores // jobs)
    threads: Optional[int] = field(default=None, metadata=THREADS)
    eval_mb_size: int = field(default=256, metadata=at_least(1))
    # measure each generative replay's pseudo-samples with a judge trained on real data (benchmarks.diagnostics);
    # the accuracies do not change, the seconds leave the measuring out
    diagnostics: bool = False


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate `benchmark=<preset>` selections from ordinary dotted overrides."""
    presets, rest = [], []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep and key.strip() == "benchmark":
            presets.append(value.strip())
        else:
            rest.append(item)
    return presets, rest


def load_compare_config(path_or_name: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The validated comparison config.

    Merges, in order: the `CompareConfig` schema defaults; `configs/compare/default.yaml` (or
    the compare file named/pathed by `path_or_name`); the benchmark preset selected by an
    override `benchmark=<name or path>`; the remaining `key=value` overrides.
    """
    source = resolve_config_path(path_or_name if path_or_name is not None else "default", "compare")
    presets, rest = _split_overrides(overrides)
    # Ranges are checked once, on the final merge (validate_compare_config): a file's value may be
    # out of range until an override replaces it.
    cfg = merge_config(CompareConfig, source, check=False)
    for preset in presets:
        if not preset:
            raise ConfigError("override 'benchmark=' needs a preset name, e.g. benchmark=split_mnist")
        cfg = merge_config(cfg, resolve_config_path(preset, "benchmark"), check=False)
    cfg = merge_config(cfg, None, rest, check=False)
    validate_compare_config(cfg)
    return cfg


def validate_compare_config(cfg: DictConfig) -> DictConfig:
    """Check names and ranges that the schema's types cannot; raise ConfigError naming the key."""
    cfg.benchmark.name = check_benchmark_name(cfg.benchmark.name)
    cfg.benchmark.scenario = check_scenario(cfg.benchmark.scenario)
    cfg.benchmark.transforms = check_transforms(cfg.benchmark.transforms)
    if cfg.benchmark.transforms == "avalanche":
        avalanche_default_transforms(cfg.benchmark.name)  # a data set Avalanche has no benchmark of fails here
    if str(cfg.solver.name).lower() not in SOLVER_NAMES:
        raise ConfigError(f"unknown solver '{cfg.solver.name}' (solver.name); valid names: {', '.join(SOLVER_NAMES)}")
    if str(cfg.device).lower() not in DEVICES:
        raise ConfigError(f"unknown device '{cfg.device}' (device); valid: {', '.join(DEVICES)}")
    check_ranges(cfg, CompareConfig)  # every numeric key's interval, and folder/file paths
    for name in cfg.benchmarks:
        check_benchmark_name(name)
    if len(set(cfg.benchmarks)) != len(cfg.benchmarks):
        raise ConfigError(f"benchmarks lists a benchmark more than once: {list(cfg.benchmarks)}")
    if len(cfg.strategies) == 0:
        raise ConfigError("strategies is empty; list at least one, e.g. strategies=[naive,ali_replay]")
    if len(cfg.seeds) == 0:
        raise ConfigError("seeds is empty; list at least one, e.g. seeds=[0]")
    for key in ("strategies", "seeds"):
        values = list(cfg[key])
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"{key} lists {', '.join(repeated)} more than once")
    return cfg


def fingerprint(cfg: DictConfig | dict) -> dict[str, Any]:
    """The part of a config that decides the results (execution-only keys removed)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    kept = {k: v for k, v in plain.items() if k not in EXECUTION_KEYS}
    if isinstance(kept.get("benchmark"), dict):
        # Results written before `benchmark.validation` and `benchmark.transforms` existed held
        # nothing out and had no per-item transforms, i.e. their defaults.
        kept["benchmark"] = {"validation": 0.0, "transforms": "none", **kept["benchmark"]}
    kept.setdefault("benchmarks", [])  # results written before several streams existed ran one
    return kept


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys.extend(config_differences(a, b, dotted + "."))
        elif a != b:
            keys.append(dotted)
    return keys
