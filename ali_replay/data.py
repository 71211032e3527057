"""Image data sets loaded once into memory as uint8 N x C x H x W tensors with integer labels."""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ali_replay.errors import DataError
from ali_replay.npz import NPZ_LAYOUT, read_npz

logger = logging.getLogger(__name__)

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar10_gray", "cifar100", "svhn",
                                  "npz")

_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist"}

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

_GET_IT = "pass data.download=true to download it, or put the files there"


class ImageDataset(Dataset):
    """In-memory images with integer labels."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str] | None = None):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            got = (f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                   else type(images).__name__)
            raise DataError(f"images must be a uint8 tensor N x C x H x W, got {got}")
        if not isinstance(targets, torch.Tensor) or targets.ndim != 1:
            got = (f"tensor of shape {tuple(targets.shape)}" if isinstance(targets, torch.Tensor)
                   else type(targets).__name__)
            raise DataError(f"targets must be a 1-d integer tensor, got {got}")
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
            raise DataError(f"targets must be an integer tensor, got {targets.dtype}")
        if len(images) != len(targets):
            raise DataError(f"{len(images)} images but {len(targets)} targets")
        # Avalanche and the losses expect int64 class ids; other integer widths are cast losslessly.
        targets = targets.to(torch.int64)
        if len(targets) and int(targets.min()) < 0:
            raise DataError(f"labels out of range: found label {int(targets.min())}, labels must be >= 0")
        top = int(targets.max()) + 1 if len(targets) else 0
        if classes is None:
            classes = [str(c) for c in range(top)]
        classes = [str(c) for c in classes]
        if top > len(classes):
            raise DataError(f"labels out of range: found label {top - 1} but only {len(classes)} class names")
        self.images = images
        self.targets = targets
        self.classes = classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i) -> tuple[torch.Tensor, int]:
        return self.images[i].to(torch.float32).div_(255.0), int(self.targets[i])

    def __repr__(self) -> str:
        return f"ImageDataset(n={len(self)}, shape={self.shape}, classes={len(self.classes)})"

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def float_images(self) -> torch.Tensor:
        """All images as float32 in [0, 1], N x C x H x W."""
        return self.images.to(torch.float32).div_(255.0)

    def subset(self, indices) -> "ImageDataset":
        """The images and targets at the given indices (or boolean mask), class names kept."""
        if isinstance(indices, slice):
            return ImageDataset(self.images[indices], self.targets[indices], self.classes)
        idx = torch.as_tensor(np.asarray(indices))
        if idx.dtype != torch.bool:
            idx = idx.to(torch.int64).reshape(-1)
        return ImageDataset(self.images[idx], self.targets[idx], self.classes)


@dataclass
class DataSplits:
    """The train and test splits of one data set, with its class count and image shape."""

    name: str
    train: ImageDataset
    test: ImageDataset
    num_classes: int
    shape: tuple[int, int, int]


def load_dataset(name: str, root: str | Path = "data", download: bool = False,
                 path: str | Path | None = None) -> DataSplits:
    """Return the train/test splits of a data set by name."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise DataError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    root = Path(root).expanduser().absolute()
    if key == "digits":
        splits = _load_digits()
    elif key == "cifar10_gray":
        splits = gray_28(load_dataset("cifar10", root, download))
    elif key == "npz":
        splits = _load_npz_path(path)
    elif key in ("cifar10", "cifar100") and _use_cifar_npz(key, root):
        npz = root / f"{key}.npz"
        logger.info("torchvision's %s files are absent under %s; reading %s", key.upper(), root, npz)
        splits = _make_splits(key, *read_npz(npz), list(CIFAR10_CLASSES) if key == "cifar10" else None)
    else:
        splits = _load_torchvision(key, root, download)
    logger.info("loaded %s: %d train / %d test images of shape %s, %d classes", splits.name,
                len(splits.train), len(splits.test), splits.shape, splits.num_classes)
    return splits


GRAY_SIZE = 28
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights of PIL's convert("L")


def gray_28(splits: DataSplits) -> DataSplits:
    """A colour data set in grayscale at 28 x 28 (`cifar10_gray`): textured objects in MNIST's shape.

    Each image's BT.601 luma, resized with antialiasing from 32 x 32 to 28 x 28 and rounded
    back to uint8: a 1 x 28 x 28 stream that is not digits, for checking that recipes chosen on
    MNIST carry to another kind of data.
    """
    def convert(images: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor(LUMA).view(1, 3, 1, 1)
        out = []
        for i in range(0, len(images), 5000):  # in chunks: 50,000 float images at once would take 600 MB
            luma = (images[i:i + 5000].float() * weights).sum(1, keepdim=True)
            small = torch.nn.functional.interpolate(luma, size=(GRAY_SIZE, GRAY_SIZE), mode="bilinear",
                                                    antialias=True, align_corners=False)
            out.append(small.round_().clamp_(0, 255).to(torch.uint8))
        return torch.cat(out)

    if splits.shape[0] != 3:
        raise DataError(f"{splits.name} has {splits.shape[0]} channel(s); its gray version needs colour images")
    return _make_splits(f"{splits.name}_gray", convert(splits.train.images), splits.train.targets,
                        convert(splits.test.images), splits.test.targets, splits.train.classes)


def _make_splits(name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, classes: Sequence[str] | None) -> DataSplits:
    """Check labels and shapes once for both splits and wrap them."""
    labels = torch.cat([torch.as_tensor(train_y).reshape(-1), torch.as_tensor(test_y).reshape(-1)])
    if len(labels) == 0:
        raise DataError(f"{name}: both splits are empty")
    low = int(labels.min())
    if low < 0:
        raise DataError(f"{name}: labels out of range: found label {low}, labels must be in 0..num_classes-1")
    num_classes = int(labels.max()) + 1
    if classes is None:
        classes = [str(c) for c in range(num_classes)]
    elif len(classes) < num_classes:
        raise DataError(f"{name}: labels out of range: found label {num_classes - 1} "
                        f"but the data set has only {len(classes)} classes")
    else:
        # A file holding only the lower classes gets a head sized to what is present.
        classes = list(classes)[:num_classes]
    train = ImageDataset(train_x, train_y, classes)
    test = ImageDataset(test_x, test_y, classes)
    if train.shape != test.shape:
        raise DataError(f"{name}: train images are {train.shape} but test images are {test.shape} (C, H, W)")
    if len(train) == 0:
        raise DataError(f"{name}: the training split is empty")
    return DataSplits(name=name, train=train, test=test, num_classes=num_classes, shape=train.shape)


def _load_digits() -> DataSplits:
    """scikit-learn's 8x8 digits with a fixed stratified 1400/397 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are counts 0..16; rescale to the 0..255 range every other set uses.
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=397, stratify=labels, random_state=0)
    return _make_splits("digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te),
                        torch.from_numpy(y_te), [str(c) for c in range(10)])


# ---------------------------------------------------------------------------------------------
# Keras-style .npz files


def _load_npz_path(path: str | Path | None) -> DataSplits:
    """The 'npz' data set: the file named by data.path."""
    if path is None or str(path).strip() == "":
        raise DataError(f"data set 'npz' needs a file: set data.path to {NPZ_LAYOUT}")
    file = Path(path).expanduser().absolute()
    if not file.is_file():
        raise DataError(f"npz file {file} not found (data.path); expected {NPZ_LAYOUT}")
    return _make_splits("npz", *read_npz(file), None)


# ---------------------------------------------------------------------------------------------
# torchvision data sets


def _tv_mnist_files(cls: type) -> Callable[[Path], tuple[Path, list[str]]]:
    def files(root: Path) -> tuple[Path, list[str]]:
        # torchvision stores the unzipped idx files named after the download, minus ".gz".
        names = [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
        return root / cls.__name__ / "raw", names
    return files


def _tv_cifar_files(cls: type) -> Callable[[Path], tuple[Path, list[str]]]:
    def files(root: Path) -> tuple[Path, list[str]]:
        names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return root / cls.base_folder, names
    return files


def _svhn_files(root: Path) -> tuple[Path, list[str]]:
    from torchvision.datasets import SVHN
    return root, [SVHN.split_list[s][1] for s in ("train", "test")]


def _svhn_class():
    from torchvision.datasets import SVHN

    class _SVHN(SVHN):
        # torchvision rehashes the 180 MB file on every load and rejects anything but the official
        # bytes; presence is enough here, and a corrupt file still fails in loadmat.
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

    return _SVHN


def _torchvision_specs() -> dict[str, dict[str, Any]]:
    from torchvision import datasets as tvd

    return {
        "mnist": dict(display="MNIST", cls=tvd.MNIST, files=_tv_mnist_files(tvd.MNIST),
                      layout="torchvision's MNIST/raw/*-ubyte files"),
        "fashion_mnist": dict(display="Fashion-MNIST", cls=tvd.FashionMNIST, files=_tv_mnist_files(tvd.FashionMNIST),
                              layout="torchvision's FashionMNIST/raw/*-ubyte files"),
        "cifar10": dict(display="CIFAR-10", cls=tvd.CIFAR10, files=_tv_cifar_files(tvd.CIFAR10),
                        layout="torchvision's cifar-10-batches-py/ folder (or a Keras-style cifar10.npz)"),
        "cifar100": dict(display="CIFAR-100", cls=tvd.CIFAR100, files=_tv_cifar_files(tvd.CIFAR100),
                         layout="torchvision's cifar-100-python/ folder (or a Keras-style cifar100.npz)"),
        "svhn": dict(display="SVHN", cls=_svhn_class(), files=_svhn_files,
                     layout="torchvision's train_32x32.mat and test_32x32.mat files"),
    }


def _use_cifar_npz(key: str, root: Path) -> bool:
    """Whether to read root/<key>.npz (cifar10 or cifar100) because torchvision's folder is absent."""
    from torchvision.datasets import CIFAR10, CIFAR100
    folder = (CIFAR10 if key == "cifar10" else CIFAR100).base_folder
    return not (root / folder).exists() and (root / f"{key}.npz").is_file()


def _missing_files(key: str, spec: dict[str, Any], root: Path) -> list[Path]:
    """Expected files that are absent under root (empty when the set can be read)."""
    folder, names = spec["files"](root)
    missing = [folder / n for n in names if not (folder / n).is_file()]
    if missing and key in ("mnist", "fashion_mnist"):
        # torchvision still reads the pre-0.8 processed/*.pt cache when it is there.
        processed = folder.parent / "processed"
        if (processed / "training.pt").is_file() and (processed / "test.pt").is_file():
            return []
    return missing


def _not_found(spec: dict[str, Any], root: Path, detail: str) -> str:
    where = f"{root}" if root.is_dir() else f"{root} (which does not exist)"
    return f"{spec['display']} not found: expected {spec['layout']} under {where}{detail}; {_GET_IT}"


def _load_torchvision(key: str, root: Path, download: bool) -> DataSplits:
    """Read a torchvision data set with its own class and convert its arrays in one go."""
    spec = _torchvision_specs()[key]
    if not download:
        missing = _missing_files(key, spec, root)
        if missing:
            # Name the absent files only when some are there; otherwise the layout says it all.
            detail = ""
            if len(missing) < len(spec["files"](root)[1]):
                shown = ", ".join(str(m.relative_to(root)) for m in missing[:3])
                detail = f" (missing {shown}{' and more' if len(missing) > 3 else ''})"
            raise DataError(_not_found(spec, root, detail))
    cls = spec["cls"]
    built = []
    for split in ("train", "test"):
        kwargs = {"split": split} if key == "svhn" else {"train": split == "train"}
        try:
            built.append(cls(root=str(root), download=download, **kwargs))
        except RuntimeError as err:
            if download:
                raise DataError(f"could not download {spec['display']} into {root}: {err}") from err
            raise DataError(_not_found(spec, root, f" (torchvision: {err})")) from err
        except OSError as err:
            if download:
                raise DataError(f"could not download {spec['display']} into {root}: {err}; "
                                f"check the network, or put the files there ({spec['layout']})") from err
            raise DataError(f"cannot read {spec['display']} under {root}: {err}; expected {spec['layout']}") from err
        except (ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
            raise DataError(f"{spec['display']} files under {root} are corrupt ({err}); expected {spec['layout']}; "
                            f"delete them and pass data.download=true to download them again") from err
    (x_tr, y_tr), (x_te, y_te) = (_tv_arrays(key, ds) for ds in built)
    classes = getattr(built[0], "classes", None) or [str(c) for c in range(10)]
    return _make_splits(key, x_tr, y_tr, x_te, y_te, classes)


def _tv_arrays(key: str, ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision data set's whole data array as uint8 N x C x H x W and its int64 labels."""
    data = ds.data
    x = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    if key == "svhn":
        # SVHN is already N x C x H x W and names its labels `labels`.
        labels = ds.labels
    elif key in ("cifar10", "cifar100"):
        x = x.permute(0, 3, 1, 2)  # CIFAR arrays are N x H x W x C
        labels = ds.targets
    else:
        x = x.unsqueeze(1)  # MNIST-style grayscale N x H x W
        labels = ds.targets
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    return x.to(torch.uint8).contiguous(), y
