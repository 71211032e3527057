"""Streams: shapes, class splits, task labels and class order for every benchmark."""
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ali_replay import data as data_module
from ali_replay.errors import ConfigError
from benchmarks.streams import BENCHMARK_NAMES, build_stream, class_order_for


def _classes(stream):
    return [sorted(int(c) for c in exp.classes_in_this_experience) for exp in stream]


def _check_split(bundle, n_exp, per_exp, shape, n_train=None, n_test=None):
    bm = bundle.benchmark
    assert bundle.n_experiences == n_exp == len(bm.train_stream) == len(bm.test_stream)
    assert bundle.input_shape == shape
    assert bundle.num_classes == n_exp * per_exp
    expected = [list(range(i * per_exp, (i + 1) * per_exp)) for i in range(n_exp)]
    assert _classes(bm.train_stream) == expected
    assert _classes(bm.test_stream) == expected
    assert bundle.classes_per_experience == expected
    if n_train is not None:
        assert sum(len(e.dataset) for e in bm.train_stream) == n_train
    if n_test is not None:
        assert sum(len(e.dataset) for e in bm.test_stream) == n_test
    x, y, t = bm.train_stream[n_exp - 1].dataset[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == shape
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y in expected[-1] and t == 0
    assert all(exp.task_label == 0 for exp in bm.train_stream)


@pytest.fixture(scope="module")
def digits_stream():
    return build_stream({"name": "split_digits"}, {"root": "data"}, seed=0)


def test_split_digits(digits_stream):
    _check_split(digits_stream, 5, 2, (1, 8, 8), n_train=1400, n_test=397)
    assert digits_stream.scenario == "class_incremental"
    assert digits_stream.class_order == list(range(10))
    # Each experience holds exactly its classes' examples.
    exp = digits_stream.benchmark.train_stream[2]
    labels = {int(exp.dataset[i][1]) for i in range(len(exp.dataset))}
    assert labels == {4, 5}


def test_number_of_experiences_can_be_chosen():
    bundle = build_stream({"name": "split_digits", "n_experiences": 10}, None, seed=0)
    _check_split(bundle, 10, 1, (1, 8, 8), n_train=1400, n_test=397)
    with pytest.raises(ConfigError, match=r"n_experiences=3 does not split the 10 classes.*\[1, 2, 5, 10\]"):
        build_stream({"name": "split_digits", "n_experiences": 3}, None, seed=0)


def test_task_incremental_labels_are_experience_index():
    bundle = build_stream({"name": "split_digits", "scenario": "task_incremental"}, None, seed=0)
    assert bundle.scenario == "task_incremental"
    for stream in (bundle.benchmark.train_stream, bundle.benchmark.test_stream):
        for i, exp in enumerate(stream):
            assert exp.task_label == i
            assert set(exp.dataset.targets_task_labels) == {i}
            assert exp.dataset[0][2] == i
            assert sorted(exp.classes_in_this_experience) == [2 * i, 2 * i + 1]


def test_shuffled_order_is_a_seeded_permutation():
    a = build_stream({"name": "split_digits", "shuffle_classes": True}, None, seed=3)
    b = build_stream({"name": "split_digits", "shuffle_classes": True}, None, seed=3)
    assert sorted(a.class_order) == list(range(10))
    assert a.class_order == b.class_order
    assert a.class_order == class_order_for(10, True, 3)
    orders = {tuple(class_order_for(10, True, s)) for s in range(5)}
    assert len(orders) > 1 and tuple(range(10)) not in orders
    expected = [sorted(a.class_order[2 * i:2 * i + 2]) for i in range(5)]
    assert _classes(a.benchmark.train_stream) == expected
    assert _classes(a.benchmark.test_stream) == expected


def test_unknown_benchmark_lists_names():
    with pytest.raises(ConfigError) as err:
        build_stream({"name": "split_imagenet"}, None, 0)
    for name in BENCHMARK_NAMES:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="task_incremental"):
        build_stream({"name": "split_digits", "scenario": "domain_incremental"}, None, 0)


# --------------------------------------------------------------------------- offline copies


def test_split_mnist(shared_data):
    bundle = build_stream({"name": "split_mnist"}, {"root": str(shared_data)}, seed=0)
    _check_split(bundle, 5, 2, (1, 28, 28), n_train=60000, n_test=10000)


def test_split_cifar10(shared_data):
    if not (shared_data / "cifar10.npz").is_file():
        pytest.skip("no cifar10.npz in the offline data")
    bundle = build_stream({"name": "split_cifar10"}, {"root": str(shared_data)}, seed=0)
    _check_split(bundle, 5, 2, (3, 32, 32), n_train=50000, n_test=10000)


# --------------------------------------------------------------------------- tiny files in torchvision's formats


def _labels_per_class(n_classes, per_class, offset=0):
    return np.repeat(np.arange(n_classes), per_class) + offset


def test_split_svhn_from_tiny_mat_files(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("test", 2)):
        y = _labels_per_class(10, per_class, offset=1)  # SVHN labels are 1..10, 10 meaning digit 0
        x = rng.integers(0, 256, size=(32, 32, 3, len(y)), dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y.reshape(-1, 1)})
    bundle = build_stream({"name": "split_svhn"}, {"root": str(tmp_path)}, seed=0)
    _check_split(bundle, 5, 2, (3, 32, 32), n_train=30, n_test=20)


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned byte data
    with open(path, "wb") as handle:
        handle.write(struct.pack(">I", magic))
        handle.write(struct.pack(f">{array.ndim}I", *array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def test_split_fashion_mnist_from_tiny_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", 4), ("t10k", 2)):
        y = _labels_per_class(10, per_class)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(len(y), 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    bundle = build_stream({"name": "split_fashion_mnist"}, {"root": str(tmp_path)}, seed=0)
    _check_split(bundle, 5, 2, (1, 28, 28), n_train=40, n_test=20)


def test_split_cifar100_with_in_memory_splits(monkeypatch):
    # torchvision's CIFAR100 checks the md5 sums of the official pickles, so a tiny fake file
    # cannot be read; the stream is built from a tiny in-memory DataSplits instead.
    calls = []

    def fake_load(name, root="data", download=False, path=None):
        calls.append(name)
        rng = np.random.default_rng(1)

        def split(per_class):
            y = torch.as_tensor(_labels_per_class(100, per_class))
            x = torch.as_tensor(rng.integers(0, 256, size=(len(y), 3, 32, 32), dtype=np.uint8))
            return data_module.ImageDataset(x, y)

        train, test = split(2), split(1)
        return data_module.DataSplits("cifar100", train, test, 100, (3, 32, 32))

    monkeypatch.setattr(data_module, "load_dataset", fake_load)
    bundle = build_stream({"name": "split_cifar100"}, {"root": "nowhere"}, seed=0)
    assert calls == ["cifar100"]
    _check_split(bundle, 10, 10, (3, 32, 32), n_train=200, n_test=100)


# --------------------------------------------------------------------------- Avalanche's default transforms


def _tiny_cifar10(monkeypatch, per_class=(6, 3)):
    """load_dataset answering a tiny in-memory CIFAR-10 (random pixels), as the CIFAR-100 test does."""
    rng = np.random.default_rng(2)

    def split(n):
        y = torch.as_tensor(_labels_per_class(10, n))
        return data_module.ImageDataset(torch.as_tensor(rng.integers(0, 256, size=(len(y), 3, 32, 32),
                                                                     dtype=np.uint8)), y)

    splits = data_module.DataSplits("cifar10", split(per_class[0]), split(per_class[1]), 10, (3, 32, 32))
    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: splits)
    return splits


def test_avalanche_transforms_are_split_cifar10s_own(monkeypatch):
    from avalanche.benchmarks.classic.ccifar10 import _default_cifar10_eval_transform
    from strategies.input_space import infer_input_space

    _tiny_cifar10(monkeypatch)
    plain = build_stream({"name": "split_cifar10"}, {"root": "x"}, seed=0)
    shipped = build_stream({"name": "split_cifar10", "transforms": "avalanche", "validation": 0.5}, {"root": "x"},
                           seed=0)
    assert plain.transforms == "none" and shipped.transforms == "avalanche"
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(3, 1, 1)
    assert _default_cifar10_eval_transform.transforms[-1].mean == pytest.approx(mean.flatten().tolist())
    # Test data: the eval group (ToTensor, Normalize) of the very images the plain stream serves.
    for a, b in zip(plain.benchmark.test_stream, shipped.benchmark.test_stream):
        x_plain, y_plain, _ = a.dataset[0]
        x_shipped, y_shipped, _ = b.dataset[0]
        assert y_plain == y_shipped
        assert torch.allclose(x_shipped, (x_plain - mean) / std, atol=1e-5)
    # Training data: augmented (random crop with padding, flip), so repeated reads differ; its eval view does not.
    experience = shipped.benchmark.train_stream[0]
    torch.manual_seed(0)
    reads = [experience.dataset[0][0] for _ in range(12)]
    assert any(not torch.equal(reads[0], r) for r in reads[1:])
    assert torch.equal(experience.dataset.eval()[0][0], experience.dataset.eval()[0][0])
    # The validation stream is served in the eval group too, and replay plugins find the Normalize.
    valid = shipped.validation_stream[0].dataset
    assert torch.equal(valid[0][0], valid[0][0])
    assert infer_input_space(experience).mean.flatten().tolist() == pytest.approx(mean.flatten().tolist())
    assert _classes(shipped.benchmark.train_stream) == _classes(plain.benchmark.train_stream)


def test_avalanche_transforms_on_split_mnist_normalise_once(shared_data):
    plain = build_stream({"name": "split_mnist"}, {"root": str(shared_data)}, seed=0)
    shipped = build_stream({"name": "split_mnist", "transforms": "avalanche"}, {"root": str(shared_data)}, seed=0)
    for stream in ("train_stream", "test_stream"):
        x_plain, y, _ = getattr(plain.benchmark, stream)[1].dataset[5]
        x_shipped, y_shipped, _ = getattr(shipped.benchmark, stream)[1].dataset[5]
        assert y == y_shipped
        assert torch.allclose(x_shipped, (x_plain - 0.1307) / 0.3081, atol=1e-5)


def test_transforms_are_checked_with_the_fix():
    from benchmarks.config import load_compare_config, validate_compare_config

    with pytest.raises(ConfigError, match="valid: none, avalanche"):
        build_stream({"name": "split_digits", "transforms": "torchvision"}, None, seed=0)
    with pytest.raises(ConfigError, match="no classic benchmark of 'split_svhn'.*split_mnist"):
        validate_compare_config(load_compare_config(overrides=["benchmark.name=split_svhn",
                                                               "benchmark.transforms=avalanche"]))
    with pytest.raises(ConfigError, match="split_digits"):
        build_stream({"name": "split_digits", "transforms": "avalanche"}, None, seed=0)


def test_results_written_before_the_transforms_key_still_match():
    from benchmarks.config import fingerprint, load_compare_config

    cfg = load_compare_config("split_mnist", [])
    old = fingerprint(cfg)
    del old["benchmark"]["transforms"]
    assert fingerprint(old) == fingerprint(cfg)
    assert fingerprint(load_compare_config("split_mnist", ["benchmark.transforms=avalanche"])) != fingerprint(cfg)


def test_the_report_says_when_a_stream_had_avalanches_transforms():
    from benchmarks.report import render_markdown

    run = {"strategy": "naive", "seed": 0, "acc_matrix": [[0.5]], "final_avg_acc": 0.5, "avg_forgetting": 0.0,
           "bwt": 0.0, "train_seconds": 1.0, "n_experiences": 1}
    results = {"benchmark": "split_cifar10", "scenario": "class_incremental", "runs": [run],
               "config": {"benchmark": {"name": "split_cifar10", "transforms": "avalanche"}, "seeds": [0]}}
    assert "- transforms: the default transforms of Avalanche's own classic benchmark" in render_markdown(results)
    results["config"]["benchmark"]["transforms"] = "none"
    assert "- transforms:" not in render_markdown(results)
