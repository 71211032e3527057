"""Continual-learning streams built from the project's in-memory data sets with Avalanche.

Each benchmark splits one data set by class into experiences (`split_digits`, `split_mnist`,
`split_fashion_mnist`, `split_cifar10`, `split_svhn`: 5 experiences of 2 classes; `split_cifar100`:
10 experiences of 10 classes) with Avalanche's `class_incremental_benchmark`. In the
`class_incremental` scenario every sample carries task label 0; in `task_incremental` the task
label is the experience index (Avalanche's `task_incremental_benchmark`), and class ids keep
their original values (a multi-head solver masks the units of classes outside the task).

The class order is 0, 1, ..., K-1 unless `benchmark.shuffle_classes` is true, in which case it is
a permutation drawn from `numpy.random.RandomState(seed)` (the same for a seed on every machine).

Images stay uint8 tensors in memory; each item is converted to float32 in [0, 1] when the data
loader asks for it, with no per-item transform pipeline on top.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from ali_replay.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    """Which data set a benchmark splits and how."""

    dataset: str
    n_experiences: int


STREAMS: dict[str, StreamSpec] = {
    "split_digits": StreamSpec("digits", 5),
    "split_mnist": StreamSpec("mnist", 5),
    "split_fashion_mnist": StreamSpec("fashion_mnist", 5),
    "split_cifar10": StreamSpec("cifar10", 5),
    "split_svhn": StreamSpec("svhn", 5),
    "split_cifar100": StreamSpec("cifar100", 10),
}
BENCHMARK_NAMES: tuple[str, ...] = tuple(STREAMS)
SCENARIOS: tuple[str, ...] = ("class_incremental", "task_incremental")


@dataclass
class StreamBundle:
    """An Avalanche benchmark and what the solver and the harness need to know about it."""

    benchmark: Any  # avalanche CLScenario with train_stream and test_stream
    input_shape: tuple[int, int, int]
    num_classes: int
    class_order: list[int]
    scenario: str
    n_experiences: int
    classes_per_experience: list[list[int]]


class _UInt8Images(Dataset):
    """uint8 N x C x H x W images served as (float32 in [0, 1], int label) with no extra layers."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        self.images = images
        # Avalanche reads `targets` once to build its class index; a list avoids a per-item
        # tensor indexing cost there and keeps labels plain ints in every mini-batch.
        self.targets = [int(t) for t in targets.tolist()]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i].float().div_(255.0), self.targets[i]


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """A key from a DictConfig, a mapping or an attribute object, with a default."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        try:
            value = cfg.get(key, default)
        except Exception:  # noqa: BLE001 - struct configs raise on unknown keys
            value = default
        return default if value is None else value
    return getattr(cfg, key, default)


def check_benchmark_name(name: str) -> str:
    """The normalised benchmark name, or a ConfigError listing the valid ones."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in STREAMS:
        raise ConfigError(f"unknown benchmark '{name}' (benchmark.name); valid names: {', '.join(BENCHMARK_NAMES)}")
    return key


def check_scenario(scenario: str) -> str:
    """The scenario name, or a ConfigError listing the valid ones."""
    key = str(scenario).strip().lower().replace("-", "_")
    if key not in SCENARIOS:
        raise ConfigError(f"unknown scenario '{scenario}' (benchmark.scenario); valid: {', '.join(SCENARIOS)}")
    return key


def class_order_for(num_classes: int, shuffle: bool, seed: int) -> list[int]:
    """0..K-1, or its permutation by `numpy.random.RandomState(seed)` when shuffling."""
    if not shuffle:
        return list(range(num_classes))
    return [int(c) for c in np.random.RandomState(int(seed)).permutation(num_classes)]


_CLASS_ATTRIBUTES = ("classes_in_this_experience", "previous_classes", "classes_seen_so_far", "future_classes")


def _classes_as_lists(bm: Any) -> None:
    """Store the experiences' class sets as sorted lists.

    Avalanche's `with_classes_timeline` stores sets, but some of its modules index tensors with
    these (MultiHeadClassifier's unit masks), which needs a list.
    """
    for stream in bm.streams.values():
        for exp in stream:
            for attribute in _CLASS_ATTRIBUTES:
                value = getattr(exp, attribute, None)
                if value is not None:
                    setattr(exp, attribute, sorted(int(c) for c in value))


def build_stream(benchmark_cfg: Any, data_cfg: Any = None, seed: int = 0) -> StreamBundle:
    """Build the Avalanche benchmark named by `benchmark_cfg.name` from `load_dataset`.

    `benchmark_cfg` needs `name` and may give `scenario` (default class_incremental) and
    `shuffle_classes` (default false); `data_cfg` may give `root`, `download` and `path`.
    """
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark, with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import task_incremental_benchmark, with_task_labels

    from ali_replay import data as data_module

    name = check_benchmark_name(_get(benchmark_cfg, "name", "split_digits"))
    scenario = check_scenario(_get(benchmark_cfg, "scenario", "class_incremental"))
    shuffle = bool(_get(benchmark_cfg, "shuffle_classes", False))
    spec = STREAMS[name]
    n_experiences = _get(benchmark_cfg, "n_experiences", None) or spec.n_experiences
    splits = data_module.load_dataset(
        spec.dataset,
        root=_get(data_cfg, "root", "data"),
        download=bool(_get(data_cfg, "download", False)),
        path=_get(data_cfg, "path", None),
    )
    num_classes = int(splits.num_classes)
    if n_experiences < 1 or num_classes % n_experiences != 0:
        divisors = [k for k in range(1, num_classes + 1) if num_classes % k == 0]
        raise ConfigError(f"benchmark.n_experiences={n_experiences} does not split the {num_classes} classes of "
                          f"'{name}' evenly; choose one of {divisors}")
    present = sorted(set(splits.train.targets.unique().tolist()))
    if present != list(range(num_classes)):
        missing = sorted(set(range(num_classes)) - set(present))
        raise ConfigError(f"benchmark '{name}': the training split has no images of classes {missing}")
    order = class_order_for(num_classes, shuffle, seed)
    train = _UInt8Images(splits.train.images, splits.train.targets)
    test = _UInt8Images(splits.test.images, splits.test.targets)
    bm = class_incremental_benchmark({"train": train, "test": test}, class_order=order,
                                     num_experiences=n_experiences)
    if scenario == "task_incremental":
        bm = with_classes_timeline(task_incremental_benchmark(bm, reset_task_labels=True))
    else:
        bm = with_task_labels(bm)  # every experience gets task_label 0, as plugins expect
    _classes_as_lists(bm)
    per_exp = num_classes // n_experiences
    groups = [order[i * per_exp:(i + 1) * per_exp] for i in range(n_experiences)]
    logger.info("%s (%s): %d experiences, class order %s", name, scenario, n_experiences, order)
    return StreamBundle(
        benchmark=bm,
        input_shape=tuple(int(s) for s in splits.shape),
        num_classes=num_classes,
        class_order=order,
        scenario=scenario,
        n_experiences=n_experiences,
        classes_per_experience=groups,
    )
