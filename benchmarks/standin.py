"""A CIFAR-100-shaped stand-in built from CIFAR-10, for timing split CIFAR-100 without its files.

Each CIFAR-10 class is cut into ten classes of equal size (image i of CIFAR-10 class c becomes
class 10 * c + i mod 10), which gives CIFAR-100's layout exactly: 100 classes, 500 training and
100 test images each, 32x32 colour. `split_cifar100` then runs its 10 experiences of 10
classes on real images, so time and memory per experience are those of CIFAR-100; accuracy
is not (the ten classes cut from one CIFAR-10 class cannot be told apart).

    python -m benchmarks.standin ../shared/data/cifar10.npz runs/cifar100_standin
    ali-replay compare --config split_cifar10 benchmark.name=split_cifar100 data.root=runs/cifar100_standin ...
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ali_replay.data import load_dataset
from ali_replay.errors import DataError

SUBCLASSES = 10


def split_labels(labels: np.ndarray, subclasses: int = SUBCLASSES) -> np.ndarray:
    """Labels with every class cut into `subclasses` classes, dealt round-robin in order."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    out = np.empty_like(labels)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        out[rows] = subclasses * c + np.arange(len(rows)) % subclasses
    return out


def write_cifar100_standin(cifar10_npz: str | Path, out_dir: str | Path) -> Path:
    """Write out_dir/cifar100.npz from a Keras-style cifar10.npz; returns its path."""
    source = Path(cifar10_npz)
    if not source.is_file():
        raise DataError(f"{source} not found; pass the Keras-style cifar10.npz (e.g. ../shared/data/cifar10.npz)")
    splits = load_dataset("npz", path=source)  # the loader's own layout and label checks
    arrays = {}
    for name, split in (("train", splits.train), ("test", splits.test)):
        arrays[f"x_{name}"] = split.images.permute(0, 2, 3, 1).numpy()  # back to Keras' N x H x W x C
        arrays[f"y_{name}"] = split_labels(split.targets.numpy())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "cifar100.npz"
    np.savez(target, **arrays)
    return target


def main(argv=None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cifar10_npz", help="a Keras-style cifar10.npz")
    parser.add_argument("out_dir", help="folder for cifar100.npz (pass it as data.root)")
    args = parser.parse_args(argv)
    print(write_cifar100_standin(args.cifar10_npz, args.out_dir))


if __name__ == "__main__":
    main()
