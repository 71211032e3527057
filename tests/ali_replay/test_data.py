"""Tests for ali_replay.data: real loaders on small real data and tiny files written here."""
from pathlib import Path

import numpy as np
import pytest
import torch

from ali_replay.data import DATASET_NAMES, DataSplits, ImageDataset, load_dataset
from ali_replay.errors import DataError, UserError


# ---------------------------------------------------------------------------------------------
# digits (scikit-learn, no files)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


def test_digits_sizes_and_shape(digits):
    assert digits.name == "digits"
    assert (len(digits.train), len(digits.test)) == (1400, 397)
    assert digits.shape == (1, 8, 8) == digits.train.shape == digits.test.shape
    assert digits.num_classes == 10
    assert digits.train.classes == [str(c) for c in range(10)]
    assert digits.train.images.dtype == torch.uint8
    assert digits.train.images.shape == (1400, 1, 8, 8)


def test_digits_items_are_float_in_unit_range(digits):
    x, y = digits.train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert isinstance(y, int) and 0 <= y < 10
    allx = digits.train.float_images()
    assert allx.dtype == torch.float32 and allx.shape == (1400, 1, 8, 8)
    assert float(allx.min()) == 0.0 and float(allx.max()) == 1.0
    # 16 (full ink) maps to 255, so the max pixel is exactly 1.0 after scaling.
    assert int(digits.train.images.max()) == 255
    assert torch.equal(allx[0], x)


def test_digits_targets_and_stratification(digits):
    for split in (digits.train, digits.test):
        assert split.targets.dtype == torch.int64
        assert set(split.targets.tolist()) == set(range(10))
    # Stratified: each class keeps roughly its share (about 140 of 1400, about 40 of 397).
    train_counts = torch.bincount(digits.train.targets, minlength=10)
    test_counts = torch.bincount(digits.test.targets, minlength=10)
    assert int(train_counts.min()) >= 135 and int(test_counts.min()) >= 36


def test_digits_split_is_deterministic(digits):
    again = load_dataset("DIGITS", root="/nonexistent/ignored")
    assert torch.equal(again.train.images, digits.train.images)
    assert torch.equal(again.test.targets, digits.test.targets)


def test_digits_pixels_match_sklearn(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    flat = bunch.images.reshape(len(bunch.images), -1)
    x0 = digits.train.images[0, 0].numpy().astype(np.float64)
    # Find the source image (same label, same pixels after 0..16 -> 0..255 scaling).
    expected = np.rint(flat * 255.0 / 16.0)
    match = np.where((expected == x0.reshape(1, -1)).all(axis=1))[0]
    assert len(match) >= 1
    assert int(bunch.target[match[0]]) == int(digits.train.targets[0])


# ---------------------------------------------------------------------------------------------
# ImageDataset


def test_subset_keeps_images_and_targets_aligned(digits):
    idx = [5, 0, 17, 1399]
    sub = digits.train.subset(idx)
    assert len(sub) == 4 and sub.shape == (1, 8, 8)
    for k, i in enumerate(idx):
        assert torch.equal(sub.images[k], digits.train.images[i])
        assert int(sub.targets[k]) == int(digits.train.targets[i])
        assert sub[k][1] == digits.train[i][1]
    assert sub.classes == digits.train.classes
    ones = digits.train.subset(digits.train.targets == 1)
    assert len(ones) == int((digits.train.targets == 1).sum()) and set(ones.targets.tolist()) == {1}
    np_sub = digits.train.subset(np.array([3, 4]))
    assert torch.equal(np_sub.images, digits.train.images[3:5])


def test_image_dataset_validation():
    imgs = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    ds = ImageDataset(imgs, torch.tensor([0, 2, 1], dtype=torch.int32))
    assert ds.targets.dtype == torch.int64 and ds.classes == ["0", "1", "2"]
    with pytest.raises(DataError, match="uint8"):
        ImageDataset(imgs.float(), torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match="N x C x H x W"):
        ImageDataset(imgs[:, 0], torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match="3 images but 2 targets"):
        ImageDataset(imgs, torch.tensor([0, 1]))
    with pytest.raises(DataError, match="integer"):
        ImageDataset(imgs, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(DataError, match="labels out of range"):
        ImageDataset(imgs, torch.tensor([0, -1, 2]))
    with pytest.raises(DataError, match="labels out of range"):
        ImageDataset(imgs, torch.tensor([0, 1, 5]), classes=["a", "b"])


# ---------------------------------------------------------------------------------------------
# errors for names and missing files


def test_unknown_name_lists_valid_names():
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    msg = str(info.value)
    assert "imagenet" in msg and "digits" in msg and "svhn" in msg
    assert isinstance(info.value, UserError)


def test_names_are_case_insensitive_and_listed():
    assert "fashion_mnist" in DATASET_NAMES and "cifar10_gray" in DATASET_NAMES and len(DATASET_NAMES) == 8
    assert load_dataset(" Digits ").num_classes == 10


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"])
def test_missing_root_names_path_and_download(tmp_path, name):
    with pytest.raises(DataError) as info:
        load_dataset(name, root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg
    assert "data.download=true" in msg and "expected" in msg


def test_missing_mnist_root_that_does_not_exist(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root=root)
    msg = str(info.value)
    assert str(root) in msg and "does not exist" in msg and "MNIST/raw" in msg and "download" in msg
    assert not root.exists()  # nothing is created when download is off


def test_missing_npz_path_names_data_path(tmp_path):
    with pytest.raises(DataError, match="data.path"):
        load_dataset("npz")
    missing = tmp_path / "absent.npz"
    with pytest.raises(DataError) as info:
        load_dataset("npz", path=missing)
    assert str(missing) in str(info.value) and "data.path" in str(info.value)


# ---------------------------------------------------------------------------------------------
# npz files


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, size=(6, 5, 7), dtype=np.uint8)
    x_te = rng.integers(0, 256, size=(2, 5, 7), dtype=np.uint8)
    y_tr = np.array([0, 1, 2, 2, 1, 0], dtype=np.uint8)
    y_te = np.array([[2], [0]], dtype=np.int32)  # N x 1 is accepted
    f = _write_npz(tmp_path / "g.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    s = load_dataset("npz", path=f)
    assert s.shape == (1, 5, 7) and s.num_classes == 3
    assert s.train.classes == ["0", "1", "2"]
    assert torch.equal(s.train.images[:, 0], torch.from_numpy(x_tr))
    assert s.test.targets.tolist() == [2, 0] and s.test.targets.dtype == torch.int64
    x, y = s.train[3]
    assert y == 2 and torch.allclose(x[0], torch.from_numpy(x_tr[3]).float() / 255)


def test_npz_colour_hwc_is_permuted(tmp_path):
    rng = np.random.default_rng(1)
    x_tr = rng.integers(0, 256, size=(4, 6, 5, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, size=(3, 6, 5, 3), dtype=np.uint8)
    x_tr[2, 4, 1, 2] = 7  # image 2, row 4, column 1, blue channel
    f = _write_npz(tmp_path / "c.npz", x_train=x_tr, y_train=np.array([0, 1, 1, 0]),
                   x_test=x_te, y_test=np.array([1, 0, 0]))
    s = load_dataset("npz", path=f)
    assert s.shape == (3, 6, 5) and s.num_classes == 2
    assert s.train.images.is_contiguous()
    assert int(s.train.images[2, 2, 4, 1]) == 7
    assert torch.equal(s.test.images, torch.from_numpy(x_te).permute(0, 3, 1, 2))


def test_npz_safe_casts_are_accepted(tmp_path):
    x = np.arange(2 * 3 * 3, dtype=np.int64).reshape(2, 3, 3) * 10  # 0..170 fits in uint8
    f = _write_npz(tmp_path / "i.npz", x_train=x, y_train=np.array([0.0, 1.0]), x_test=x.astype(np.float32),
                   y_test=np.array([1, 0]))
    s = load_dataset("npz", path=f)
    assert s.train.images.dtype == torch.uint8 and int(s.train.images.max()) == 170
    assert s.train.targets.tolist() == [0, 1]


def _good_arrays():
    x = np.zeros((4, 3, 3), dtype=np.uint8)
    return dict(x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x[:2], y_test=np.array([0, 1]))


def test_npz_missing_array_is_named(tmp_path):
    arrays = _good_arrays()
    del arrays["y_test"]
    f = _write_npz(tmp_path / "m.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset("npz", path=f)
    msg = str(info.value)
    assert "y_test" in msg and str(f) in msg and "x_train" in msg


def test_npz_wrong_ndim(tmp_path):
    arrays = _good_arrays()
    arrays["x_train"] = np.zeros((4, 9), dtype=np.uint8)
    f = _write_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=r"x_train has shape \(4, 9\)"):
        load_dataset("npz", path=f)
    arrays["x_train"] = np.zeros((4, 3, 8, 8), dtype=np.uint8)  # channel-first is not the layout
    f = _write_npz(tmp_path / "chw.npz", **arrays)
    with pytest.raises(DataError, match="N x H x W x C"):
        load_dataset("npz", path=f)


def test_npz_bad_dtype_and_lengths(tmp_path):
    arrays = _good_arrays()
    arrays["x_train"] = np.full((4, 3, 3), 0.5, dtype=np.float32)
    with pytest.raises(DataError, match="x_train has dtype float32"):
        load_dataset("npz", path=_write_npz(tmp_path / "f.npz", **arrays))
    arrays = _good_arrays()
    arrays["x_train"] = np.full((4, 3, 3), 300, dtype=np.int16)
    with pytest.raises(DataError, match="0..255"):
        load_dataset("npz", path=_write_npz(tmp_path / "big.npz", **arrays))
    arrays = _good_arrays()
    arrays["y_train"] = np.array([0, 1, 0])
    with pytest.raises(DataError, match="x_train has 4 images but y_train has 3 labels"):
        load_dataset("npz", path=_write_npz(tmp_path / "len.npz", **arrays))


def test_npz_label_range(tmp_path):
    arrays = _good_arrays()
    arrays["y_train"] = np.array([0, -1, 0, 1])
    with pytest.raises(DataError, match="labels out of range"):
        load_dataset("npz", path=_write_npz(tmp_path / "neg.npz", **arrays))
    arrays = _good_arrays()
    arrays["y_test"] = np.array([0, 4])
    with pytest.raises(DataError, match="labels out of range"):
        load_dataset("npz", path=_write_npz(tmp_path / "hi.npz", **arrays))


def test_npz_not_an_archive(tmp_path):
    f = tmp_path / "junk.npz"
    f.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="junk.npz"):
        load_dataset("npz", path=f)


# ---------------------------------------------------------------------------------------------
# SVHN from tiny .mat files in torchvision's layout


def _write_svhn(root: Path, split: str, n: int, seed: int):
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # H x W x C x N
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 means digit 0
    savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return x, y


def test_svhn_from_tiny_mat_files(tmp_path):
    x_tr, y_tr = _write_svhn(tmp_path, "train", 12, seed=0)
    x_te, y_te = _write_svhn(tmp_path, "test", 10, seed=1)
    x_tr[5, 20, 1, 3] = 0  # reference pixel: row 5, column 20, green, image 3
    x_tr[20, 5, 1, 3] = 255  # its transpose holds a different value, so H/W swaps show
    from scipy.io import savemat
    savemat(tmp_path / "train_32x32.mat", {"X": x_tr, "y": y_tr})

    s = load_dataset("SVHN", root=tmp_path)
    assert s.name == "svhn" and s.shape == (3, 32, 32)
    assert (len(s.train), len(s.test)) == (12, 10)
    assert s.num_classes == 10 and len(s.train.classes) == 10
    assert s.train.targets.dtype == torch.int64
    assert s.train.targets[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 became 0
    assert int(s.train.images[3, 1, 5, 20]) == 0 and int(s.train.images[3, 1, 20, 5]) == 255
    assert torch.equal(s.test.images, torch.from_numpy(np.transpose(x_te, (3, 2, 0, 1))))


def test_svhn_missing_test_file_fails_before_loading(tmp_path):
    _write_svhn(tmp_path, "train", 3, seed=0)
    with pytest.raises(DataError) as info:
        load_dataset("svhn", root=tmp_path)
    msg = str(info.value)
    assert "test_32x32.mat" in msg and str(tmp_path) in msg and "download" in msg


# ---------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100 npz fallbacks (tiny files here; the real CIFAR-10 copy below)


def test_cifar10_npz_fallback_tiny(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    _write_npz(tmp_path / "cifar10.npz", x_train=x, y_train=np.arange(10), x_test=x[:4], y_test=np.arange(4))
    s = load_dataset("cifar10", root=tmp_path)
    assert s.name == "cifar10" and s.shape == (3, 32, 32) and s.num_classes == 10
    assert s.train.classes[0] == "airplane" and s.train.classes[9] == "truck"
    assert torch.equal(s.train.images, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_cifar100_npz_fallback_tiny(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)
    y = rng.permutation(100)
    _write_npz(tmp_path / "cifar100.npz", x_train=x, y_train=y[:, None], x_test=x[:5], y_test=y[:5])
    s = load_dataset("cifar100", root=tmp_path)
    assert s.name == "cifar100" and s.shape == (3, 32, 32) and s.num_classes == 100
    assert torch.equal(s.train.targets, torch.from_numpy(y))  # Keras' N x 1 labels are flattened
    assert torch.equal(s.train.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    (tmp_path / "cifar-100-python").mkdir()  # torchvision's folder, when present, is what is read
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# real offline copies


@pytest.fixture(scope="module")
def mnist(shared_data) -> DataSplits:
    return load_dataset("mnist", root=shared_data)


def test_mnist_offline(mnist):
    assert (len(mnist.train), len(mnist.test)) == (60000, 10000)
    assert mnist.shape == (1, 28, 28) and mnist.num_classes == 10 and len(mnist.train.classes) == 10
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.targets.dtype == torch.int64
    assert int(mnist.train.targets[0]) == 5  # the well-known first MNIST training label
    x, y = mnist.train[0]
    assert y == 5 and x.shape == (1, 28, 28) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert torch.bincount(mnist.test.targets, minlength=10).min() > 800


@pytest.fixture(scope="module")
def cifar10(shared_data) -> DataSplits:
    return load_dataset("cifar10", root=shared_data)


def test_cifar10_offline_npz(cifar10):
    assert (len(cifar10.train), len(cifar10.test)) == (50000, 10000)
    assert cifar10.shape == (3, 32, 32) and cifar10.num_classes == 10
    assert cifar10.train.classes == ["airplane", "automobile", "bird", "cat", "deer",
                                     "dog", "frog", "horse", "ship", "truck"]
    # The copy is balanced per class in each split.
    assert torch.bincount(cifar10.train.targets, minlength=10).tolist() == [5000] * 10
    assert torch.bincount(cifar10.test.targets, minlength=10).tolist() == [1000] * 10
    sub = cifar10.test.subset(range(200)).float_images()
    assert sub.shape == (200, 3, 32, 32) and sub.dtype == torch.float32
    assert 0.0 <= float(sub.min()) and float(sub.max()) <= 1.0 and float(sub.std()) > 0.1


def test_cifar10_gray_is_the_luma_at_28_by_28(tmp_path):
    """Read from a cifar10.npz the test writes: each image's BT.601 luma, resized to 28 x 28."""
    x_tr = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    x_tr[0] = (200, 100, 50)  # a flat colour: its luma everywhere
    x_tr[1, :, :16] = 255  # white left half, black right half
    x_tr[2:] = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    f = _write_npz(tmp_path / "cifar10.npz", x_train=x_tr, y_train=np.array([0, 1, 2, 3]),
                   x_test=x_tr[:2], y_test=np.array([1, 0]))
    assert f.parent == tmp_path
    gray = load_dataset("cifar10_gray", root=tmp_path)
    assert gray.name == "cifar10_gray" and gray.shape == (1, 28, 28) and gray.num_classes == 4
    assert gray.train.images.dtype == torch.uint8 and gray.train.targets.tolist() == [0, 1, 2, 3]
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert int(gray.train.images[0].min()) == int(gray.train.images[0].max()) == luma
    left, right = gray.train.images[1, 0, :, :13], gray.train.images[1, 0, :, 15:]
    assert int(left.min()) == 255 and int(right.max()) == 0  # the edge stays where it was, in between
    assert gray.train.classes[:2] == ["airplane", "automobile"]
    with pytest.raises(DataError, match="needs colour images"):
        from ali_replay.data import gray_28
        gray_28(load_dataset("digits"))
