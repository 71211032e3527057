"""Stand-ins built from CIFAR-10, for running split CIFAR-100 and split SVHN without their files.

`--layout cifar100` (the default): each CIFAR-10 class is cut into ten classes of equal size
(image i of CIFAR-10 class c becomes class 10 * c + i mod 10), which gives CIFAR-100's layout
exactly: 100 classes, 500 training and 100 test images each, 32x32 colour. `split_cifar100`
then runs its 10 experiences of 10 classes on real images, so time and memory per experience
are those of CIFAR-100; accuracy is not (the ten classes cut from one CIFAR-10 class cannot be
told apart).

    python -m benchmarks.standin ../shared/data/cifar10.npz runs/cifar100_standin
    ali-replay compare --config split_cifar10 benchmark.name=split_cifar100 data.root=runs/cifar100_standin ...

`--layout svhn`: CIFAR-10 as it is, written in torchvision's SVHN files (train_32x32.mat and
test_32x32.mat: `X` of shape 32 x 32 x 3 x N, uint8; `y` of shape N x 1, labels 1 to 10 where
10 stands for class 0). `split_svhn` then runs end to end on real 32x32 colour images of ten
classes, 5,000 training images each (SVHN has 73,257 in all, unevenly spread); its numbers are
CIFAR-10's, not SVHN's.

    python -m benchmarks.standin --layout svhn ../shared/data/cifar10.npz runs/svhn_standin
    ali-replay compare benchmark=split_svhn data.root=runs/svhn_standin ...
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ali_replay.data import load_dataset
from ali_replay.errors import DataError

SUBCLASSES = 10
SVHN_ZERO = 10  # SVHN's label of class 0


def split_labels(labels: np.ndarray, subclasses: int = SUBCLASSES) -> np.ndarray:
    """Labels with every class cut into `subclasses` classes, dealt round-robin in order."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    out = np.empty_like(labels)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        out[rows] = subclasses * c + np.arange(len(rows)) % subclasses
    return out


def _cifar10_splits(cifar10_npz: str | Path):
    """The train and test splits of a Keras-style cifar10.npz, read by the project's loader."""
    source = Path(cifar10_npz)
    if not source.is_file():
        raise DataError(f"{source} not found; pass the Keras-style cifar10.npz (e.g. ../shared/data/cifar10.npz)")
    splits = load_dataset("npz", path=source)  # the loader's own layout and label checks
    return (("train", splits.train), ("test", splits.test))


def write_cifar100_standin(cifar10_npz: str | Path, out_dir: str | Path) -> Path:
    """Write out_dir/cifar100.npz from a Keras-style cifar10.npz; returns its path."""
    arrays = {}
    for name, split in _cifar10_splits(cifar10_npz):
        arrays[f"x_{name}"] = split.images.permute(0, 2, 3, 1).numpy()  # back to Keras' N x H x W x C
        arrays[f"y_{name}"] = split_labels(split.targets.numpy())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "cifar100.npz"
    np.savez(target, **arrays)
    return target


def svhn_labels(labels: np.ndarray) -> np.ndarray:
    """Class ids 0-9 as SVHN's `y` column: N x 1 uint8, 1-9 as they are and 0 as 10."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"SVHN's layout holds classes 0 to 9, got labels {labels.min()} to {labels.max()}; "
                        "pass a ten-class data set such as CIFAR-10")
    return np.where(labels == 0, SVHN_ZERO, labels).astype(np.uint8).reshape(-1, 1)


def write_svhn_standin(cifar10_npz: str | Path, out_dir: str | Path) -> list[Path]:
    """Write out_dir/train_32x32.mat and test_32x32.mat from a Keras-style cifar10.npz; returns their paths."""
    from scipy.io import savemat
    from torchvision.datasets import SVHN

    splits = _cifar10_splits(cifar10_npz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, split in splits:
        images = split.images.permute(2, 3, 1, 0).numpy()  # N x C x H x W -> SVHN's H x W x C x N
        target = out / SVHN.split_list[name][1]  # the file torchvision's SVHN reads for this split
        savemat(target, {"X": images, "y": svhn_labels(split.targets.numpy())})
        written.append(target)
    return written


# Each layout's writer: (cifar10.npz, out_dir) -> the files written.
LAYOUTS = {"cifar100": lambda source, out: [write_cifar100_standin(source, out)], "svhn": write_svhn_standin}


def main(argv=None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cifar10_npz", help="a Keras-style cifar10.npz")
    parser.add_argument("out_dir", help="folder to write the stand-in into (pass it as data.root)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="cifar100",
                        help="cifar100: out_dir/cifar100.npz for split_cifar100 (default); "
                             "svhn: out_dir/train_32x32.mat and test_32x32.mat for split_svhn")
    args = parser.parse_args(argv)
    for path in LAYOUTS[args.layout](args.cifar10_npz, args.out_dir):
        print(path)


if __name__ == "__main__":
    main()
