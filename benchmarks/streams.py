"""Continual-learning streams built from the project's in-memory data sets with Avalanche.

Each benchmark splits one data set by class into experiences (`split_digits`, `split_mnist`,
`split_fashion_mnist`, `split_cifar10`, `split_cifar10_gray` (CIFAR-10 in grayscale at 28 x 28), `split_svhn`:
5 experiences of 2 classes; `split_cifar100`:
10 experiences of 10 classes) with Avalanche's `class_incremental_benchmark`. In the
`class_incremental` scenario every sample carries task label 0; in `task_incremental` the task
label is the experience index (Avalanche's `task_incremental_benchmark`), and class ids keep
their original values (a multi-head solver masks the units of classes outside the task).

The class order is 0, 1, ..., K-1 unless `benchmark.shuffle_classes` is true, in which case it is
a permutation drawn from `numpy.random.RandomState(seed)` (the same for a seed on every machine).

`benchmark.validation` (a share in [0, 1), default 0) holds out that share of every class's
training images as a validation stream (`valid_stream`, split by class like the others, so each
experience's share is held out of its own training data). The held-out images are drawn per class
by `validation_split` from `numpy.random.default_rng((seed, VALIDATION_KEY))`: the same for a seed
on every machine, and independent of the class order's draw. With 0 nothing is held out and the
stream is exactly the one built without the key.

Images stay uint8 tensors in memory. With `benchmark.transforms=none` (the default) each item is
converted to float32 in [0, 1] when the data loader asks for it, with no per-item transform pipeline
on top (validation and test data alike). With `benchmark.transforms=avalanche` the items go through
the default transforms of Avalanche's own classic benchmark of that data set (`SplitMNIST`,
`SplitFMNIST`, `SplitCIFAR10`, `SplitCIFAR100`), imported from Avalanche: its `train` group on the
training experiences (for CIFAR: random crop with 4 pixels of padding, horizontal flip, Normalize)
and its `eval` group on validation and test data (Normalize only), exactly as those benchmarks
serve them. Every strategy then sees the stream an Avalanche user gets from that benchmark.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ali_replay.errors import ConfigError, ShapeError
from strategies.kind import SCENARIOS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    """Which data set a benchmark splits and how."""

    dataset: str
    n_experiences: int
    shape: tuple[int, int, int]  # C x H x W of its images


STREAMS: dict[str, StreamSpec] = {
    "split_digits": StreamSpec("digits", 5, (1, 8, 8)),
    "split_mnist": StreamSpec("mnist", 5, (1, 28, 28)),
    "split_fashion_mnist": StreamSpec("fashion_mnist", 5, (1, 28, 28)),
    "split_cifar10": StreamSpec("cifar10", 5, (3, 32, 32)),
    "split_cifar10_gray": StreamSpec("cifar10_gray", 5, (1, 28, 28)),  # textured objects in MNIST's shape
    "split_svhn": StreamSpec("svhn", 5, (3, 32, 32)),
    "split_cifar100": StreamSpec("cifar100", 10, (3, 32, 32)),
}
BENCHMARK_NAMES: tuple[str, ...] = tuple(STREAMS)
TRANSFORMS: tuple[str, ...] = ("none", "avalanche")
# The data sets with a classic Avalanche benchmark: the module and the prefix of its default
# `_default_<prefix>_train_transform` / `_default_<prefix>_eval_transform`.
AVALANCHE_DEFAULT_TRANSFORMS: dict[str, tuple[str, str]] = {
    "mnist": ("avalanche.benchmarks.classic.cmnist", "mnist"),
    "fashion_mnist": ("avalanche.benchmarks.classic.cfashion_mnist", "fmnist"),
    "cifar10": ("avalanche.benchmarks.classic.ccifar10", "cifar10"),
    "cifar100": ("avalanche.benchmarks.classic.ccifar100", "cifar100"),
}
# Mixed into the validation draw's seed so that it does not repeat the class order's draw.
VALIDATION_KEY = 0x76616C


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
    validation: float = 0.0  # share of each class's training images held out
    # Indices into the data set's training split: what the train stream holds, and what the
    # validation stream holds (None when nothing is held out).
    train_indices: Optional[np.ndarray] = None
    validation_indices: Optional[np.ndarray] = None
    transforms: str = "none"  # "avalanche": Avalanche's default transforms of the data set (module doc)

    @property
    def validation_stream(self) -> Any:
        """The validation stream (one experience per training experience), or None without validation."""
        return self.benchmark.streams.get("valid") if self.validation > 0 else None


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


class _PILImages(_UInt8Images):
    """uint8 N x C x H x W images served as PIL images, as torchvision's data sets serve them."""

    def __getitem__(self, i: int):
        from PIL import Image

        pixels = self.images[i].permute(1, 2, 0).numpy()
        return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels), self.targets[i]


def check_transforms(transforms: Any) -> str:
    """The normalised `benchmark.transforms` value, or a ConfigError listing the valid ones."""
    value = str(transforms).strip().lower()
    if value not in TRANSFORMS:
        raise ConfigError(f"unknown benchmark.transforms {transforms!r}; valid: {', '.join(TRANSFORMS)}")
    return value


def avalanche_default_transforms(name: str) -> tuple[Callable, Callable]:
    """The default (train, eval) transforms of Avalanche's classic benchmark of benchmark `name`."""
    import importlib

    dataset = STREAMS[check_benchmark_name(name)].dataset
    if dataset not in AVALANCHE_DEFAULT_TRANSFORMS:
        having = [b for b, spec in STREAMS.items() if spec.dataset in AVALANCHE_DEFAULT_TRANSFORMS]
        raise ConfigError(f"benchmark.transforms=avalanche: Avalanche ships no classic benchmark of '{name}', so "
                          f"it has no default transforms; use benchmark.transforms=none, or one of {', '.join(having)}")
    module, prefix = AVALANCHE_DEFAULT_TRANSFORMS[dataset]
    found = importlib.import_module(module)
    return getattr(found, f"_default_{prefix}_train_transform"), getattr(found, f"_default_{prefix}_eval_transform")


def _with_transforms(datasets: dict[str, _UInt8Images], train: Callable, evaluation: Callable) -> dict[str, Any]:
    """The split data sets as Avalanche data sets with the train and eval transform groups.

    As Avalanche's classic benchmarks build them (`nc_benchmark`): both groups on every data set, the
    training split starting in `train`, the others in `eval`. A chain that starts from PIL images
    (ToTensor, RandomCrop) is served PIL images, one of tensor ops (SplitMNIST's Normalize) tensors.
    """
    from avalanche.benchmarks.utils import _make_taskaware_classification_dataset
    from torchvision.transforms import Compose, ToTensor

    chain = train.transforms if isinstance(train, Compose) else [train]
    pil = any(isinstance(t, ToTensor) for t in chain)
    groups = {"train": (train, None), "eval": (evaluation, None)}
    out = {}
    for split, data in datasets.items():
        if pil:
            data = _PILImages(data.images, torch.as_tensor(data.targets))
        out[split] = _make_taskaware_classification_dataset(
            data, transform_groups=groups, initial_transform_group="train" if split == "train" else "eval")
    return out


def check_validation_share(share: Any) -> float:
    """The validation share as a float in [0, 1), or a ConfigError."""
    try:
        value = float(share)
    except (TypeError, ValueError):
        raise ConfigError(f"benchmark.validation must be a number in [0, 1), got {share!r}") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"benchmark.validation must be in [0, 1) (the share of each class's training images "
                          f"held out), got {share!r}; e.g. benchmark.validation=0.1")
    return value


def validation_split(targets: Any, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): `share` of each class's examples held out, drawn by `seed`.

    Each class keeps round(share * n) of its n examples for validation, at least one and at most
    n - 1, so both parts hold every class. Both index arrays are sorted.
    """
    share = check_validation_share(share)
    labels = np.asarray(targets.tolist() if hasattr(targets, "tolist") else targets, dtype=np.int64)
    if share == 0.0:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng((int(seed), VALIDATION_KEY))
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise ConfigError(f"benchmark.validation={share}: class {int(label)} has {len(members)} training "
                              f"example(s), too few to hold one out; use benchmark.validation=0")
        n_val = min(len(members) - 1, max(1, int(round(share * len(members)))))
        held.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


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


def stream_shape(name: str) -> tuple[int, int, int]:
    """The C x H x W of a benchmark's images, known before its data is read."""
    return STREAMS[check_benchmark_name(name)].shape


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

    `benchmark_cfg` needs `name` and may give `scenario` (default class_incremental),
    `shuffle_classes` (default false), `n_experiences`, `validation` (default 0: the share of
    each class's training images held out as the `valid` stream) and `transforms` (default none;
    `avalanche`: the default transforms of Avalanche's classic benchmark of that data set, see the
    module doc); `data_cfg` may give `root`, `download` and `path`.
    """
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark, with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import task_incremental_benchmark, with_task_labels

    from ali_replay import data as data_module

    name = check_benchmark_name(_get(benchmark_cfg, "name", "split_digits"))
    scenario = check_scenario(_get(benchmark_cfg, "scenario", "class_incremental"))
    shuffle = bool(_get(benchmark_cfg, "shuffle_classes", False))
    validation = check_validation_share(_get(benchmark_cfg, "validation", 0.0))
    transforms = check_transforms(_get(benchmark_cfg, "transforms", "none"))
    shipped = avalanche_default_transforms(name) if transforms == "avalanche" else None
    spec = STREAMS[name]
    n_experiences = _get(benchmark_cfg, "n_experiences", None) or spec.n_experiences
    splits = data_module.load_dataset(
        spec.dataset,
        root=_get(data_cfg, "root", "data"),
        download=bool(_get(data_cfg, "download", False)),
        path=_get(data_cfg, "path", None),
    )
    if tuple(int(s) for s in splits.shape) != spec.shape:
        raise ShapeError(f"benchmark '{name}' expects images of shape {spec.shape}, but its data set holds "
                         f"{tuple(splits.shape)}; point data.root at the {spec.dataset} files")
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
    test = _UInt8Images(splits.test.images, splits.test.targets)
    train_idx = val_idx = None
    if validation > 0:
        train_idx, val_idx = validation_split(splits.train.targets, validation, seed)
        keep, held = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
        datasets = {"train": _UInt8Images(splits.train.images[keep], splits.train.targets[keep]),
                    "test": test,
                    "valid": _UInt8Images(splits.train.images[held], splits.train.targets[held])}
    else:
        datasets = {"train": _UInt8Images(splits.train.images, splits.train.targets), "test": test}
    if shipped is not None:
        datasets = _with_transforms(datasets, *shipped)
    bm = class_incremental_benchmark(datasets, class_order=order, num_experiences=n_experiences)
    if scenario == "task_incremental":
        bm = with_classes_timeline(task_incremental_benchmark(bm, reset_task_labels=True))
    else:
        bm = with_task_labels(bm)  # every experience gets task_label 0, as plugins expect
    _classes_as_lists(bm)
    per_exp = num_classes // n_experiences
    groups = [order[i * per_exp:(i + 1) * per_exp] for i in range(n_experiences)]
    logger.info("%s (%s): %d experiences, class order %s%s", name, scenario, n_experiences, order,
                ", Avalanche's default transforms" if shipped is not None else "")
    if val_idx is not None:
        logger.info("%s: %d training images held out for validation (%.3g of each class)", name, len(val_idx),
                    validation)
    return StreamBundle(
        benchmark=bm,
        input_shape=tuple(int(s) for s in splits.shape),
        num_classes=num_classes,
        class_order=order,
        scenario=scenario,
        n_experiences=n_experiences,
        classes_per_experience=groups,
        validation=validation,
        train_indices=train_idx,
        validation_indices=val_idx,
        transforms=transforms,
    )
