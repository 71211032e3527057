"""The CIFAR-100 stand-in keeps CIFAR-10's images and cuts every class into ten equal ones."""
import numpy as np
import pytest
import torch

from ali_replay.data import load_dataset
from ali_replay.errors import DataError
from benchmarks import standin
from benchmarks.streams import build_stream


def test_split_labels_deals_each_class_round_robin():
    labels = np.array([3, 0, 3, 3, 0])
    assert standin.split_labels(labels, subclasses=2).tolist() == [6, 0, 7, 6, 1]


def test_standin_loads_as_split_cifar100(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)  # 20 images of each CIFAR-10 class
    y_train = np.repeat(np.arange(10, dtype=np.uint8), 20)
    np.savez(tmp_path / "cifar10.npz", x_train=x_train, y_train=y_train, x_test=x_train[::2], y_test=y_train[::2])
    target = standin.write_cifar100_standin(tmp_path / "cifar10.npz", tmp_path / "c100")
    splits = load_dataset("cifar100", root=target.parent)
    assert splits.num_classes == 100
    assert torch.bincount(splits.train.targets).tolist() == [2] * 100
    assert torch.equal(splits.train.images, torch.from_numpy(x_train).permute(0, 3, 1, 2))
    assert torch.equal(splits.train.targets // 10, torch.from_numpy(y_train).long())  # each cut stays in its class
    bundle = build_stream({"name": "split_cifar100"}, {"root": str(target.parent)}, seed=0)
    assert bundle.n_experiences == 10 and bundle.classes_per_experience[3] == list(range(30, 40))


def test_missing_source_names_the_file(tmp_path):
    with pytest.raises(DataError, match="cifar10.npz"):
        standin.write_cifar100_standin(tmp_path / "cifar10.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_source_without_labels_is_refused_by_the_loader(tmp_path):
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="no array y_train"):
        standin.write_cifar100_standin(tmp_path / "cifar10.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()
