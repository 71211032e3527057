"""The SVHN stand-in: CIFAR-10's images and classes in torchvision's SVHN files, read back by split_svhn."""
import numpy as np
import pytest
import torch
from scipy.io import loadmat

from ali_replay.data import load_dataset
from ali_replay.errors import DataError
from benchmarks import standin
from benchmarks.streams import build_stream


@pytest.fixture
def cifar10_npz(tmp_path):
    """A tiny Keras-style cifar10.npz: 6 training and 3 test images of each class, random pixels."""
    rng = np.random.default_rng(0)
    y_train = np.tile(np.arange(10, dtype=np.uint8), 6)
    y_test = np.tile(np.arange(10, dtype=np.uint8), 3)
    arrays = dict(x_train=rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), y_train=y_train,
                  x_test=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), y_test=y_test)
    np.savez(tmp_path / "cifar10.npz", **arrays)
    return tmp_path / "cifar10.npz", arrays


def test_standin_runs_as_split_svhn(cifar10_npz, tmp_path):
    source, arrays = cifar10_npz
    written = standin.write_svhn_standin(source, tmp_path / "svhn")
    assert [p.name for p in written] == ["train_32x32.mat", "test_32x32.mat"]
    raw = loadmat(written[0])
    assert raw["X"].shape == (32, 32, 3, 60) and raw["X"].dtype == np.uint8
    assert raw["y"].shape == (60, 1) and sorted(np.unique(raw["y"])) == list(range(1, 11))  # 0 is written as 10
    splits = load_dataset("svhn", root=tmp_path / "svhn")  # torchvision's SVHN reads them back, in order
    for split, loaded in (("train", splits.train), ("test", splits.test)):
        assert torch.equal(loaded.images, torch.from_numpy(arrays[f"x_{split}"]).permute(0, 3, 1, 2))
        assert torch.equal(loaded.targets, torch.from_numpy(arrays[f"y_{split}"]).long())
    bundle = build_stream({"name": "split_svhn"}, {"root": str(tmp_path / "svhn")}, seed=0)
    assert bundle.n_experiences == 5 and bundle.classes_per_experience == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    for split, stream, n in (("train", bundle.benchmark.train_stream, 60), ("test", bundle.benchmark.test_stream, 30)):
        # Every original (image, class) pair comes out of the stream once, as [0, 1] floats.
        expected = sorted(zip(arrays[f"y_{split}"].tolist(), (x.tobytes() for x in arrays[f"x_{split}"])))
        seen = []
        for experience in stream:
            for x, y, *_ in experience.dataset.eval():
                assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
                pixels = torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
                seen.append((int(y), pixels.tobytes()))
        assert len(seen) == n and np.bincount([y for y, _ in seen]).tolist() == [n // 10] * 10
        assert sorted(seen) == expected


def test_cli_writes_either_layout(cifar10_npz, tmp_path, capsys):
    source, _ = cifar10_npz
    standin.main(["--layout", "svhn", str(source), str(tmp_path / "svhn")])
    written = [str(tmp_path / "svhn" / name) for name in ("train_32x32.mat", "test_32x32.mat")]
    assert capsys.readouterr().out.split() == written
    standin.main([str(source), str(tmp_path / "c100")])  # the default layout stays CIFAR-100's
    assert capsys.readouterr().out.split() == [str(tmp_path / "c100" / "cifar100.npz")]


def test_svhn_labels_write_zero_as_ten_and_refuse_other_classes():
    assert standin.svhn_labels(np.array([0, 3, 9])).tolist() == [[10], [3], [9]]
    with pytest.raises(DataError, match="classes 0 to 9"):
        standin.svhn_labels(np.array([0, 10]))
    with pytest.raises(DataError, match="cifar10.npz"):
        standin.write_svhn_standin("missing/cifar10.npz", "unused")
