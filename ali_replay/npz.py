"""Keras-style .npz image files: x_train, y_train, x_test, y_test, read and validated with errors that name the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ali_replay.errors import DataError

NPZ_LAYOUT = (
    "a Keras-style .npz with x_train, y_train, x_test, y_test "
    "(images uint8 N x H x W or N x H x W x C, labels integer N)"
)


def read_npz(file: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Keras-style npz file's train and test images (uint8 N x C x H x W) and labels (int64 N), validated."""
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{file} is not a readable .npz file ({err}); expected {NPZ_LAYOUT}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{file} holds a single array, not named arrays; expected {NPZ_LAYOUT}")
    with archive:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive.files]
        if missing:
            raise DataError(f"{file} has no array {', '.join(missing)} (found: {', '.join(archive.files) or 'none'}); "
                            f"expected {NPZ_LAYOUT}")
        parts = {}
        for split in ("train", "test"):
            try:
                x, y = archive[f"x_{split}"], archive[f"y_{split}"]
            except (OSError, ValueError, EOFError) as err:
                raise DataError(f"{file}: cannot read x_{split}/y_{split} ({err}); expected {NPZ_LAYOUT}") from err
            parts[split] = (_npz_images(file, f"x_{split}", x), _npz_labels(file, f"y_{split}", y))
            if len(parts[split][0]) != len(parts[split][1]):
                raise DataError(f"{file}: x_{split} has {len(parts[split][0])} images but y_{split} has "
                                f"{len(parts[split][1])} labels; expected {NPZ_LAYOUT}")
    (x_tr, y_tr), (x_te, y_te) = parts["train"], parts["test"]
    for arr, label_name in ((y_tr, "y_train"), (y_te, "y_test")):
        if len(arr) and int(arr.min()) < 0:
            raise DataError(f"{file}: labels out of range: {label_name} has label {int(arr.min())}; "
                            f"labels must be in 0..num_classes-1")
    if len(y_tr) == 0:
        raise DataError(f"{file}: x_train is empty; expected {NPZ_LAYOUT}")
    if len(y_te) and int(y_te.max()) > int(y_tr.max()):
        raise DataError(f"{file}: labels out of range: y_test has label {int(y_te.max())} but y_train "
                        f"labels only go up to {int(y_tr.max())}")
    return x_tr, y_tr, x_te, y_te


def _npz_images(file: Path, key: str, x: np.ndarray) -> torch.Tensor:
    """One npz image array as uint8 N x C x H x W."""
    layout = f"expected {key} as uint8 N x H x W or N x H x W x C"
    if x.ndim not in (3, 4):
        raise DataError(f"{file}: {key} has shape {x.shape} ({x.ndim}-d); {layout}")
    if x.ndim == 4 and x.shape[-1] not in (1, 3, 4):
        # A channel-first array would otherwise be read as a stack of 3-pixel-high images.
        raise DataError(f"{file}: {key} has shape {x.shape}, whose last axis is not 1, 3 or 4 channels; {layout}")
    x = _as_uint8(file, key, x, layout)
    t = torch.from_numpy(x)
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.contiguous()


def _as_uint8(file: Path, key: str, x: np.ndarray, layout: str) -> np.ndarray:
    """Cast to uint8 only when no value changes."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu" or x.dtype.kind == "f":
        if x.size == 0:
            return x.astype(np.uint8)
        finite = x.dtype.kind != "f" or bool(np.isfinite(x).all())
        whole = x.dtype.kind != "f" or (finite and bool((x == np.round(x)).all()))
        if finite and whole and x.min() >= 0 and x.max() <= 255:
            return x.astype(np.uint8)
    raise DataError(f"{file}: {key} has dtype {x.dtype} with values that are not whole numbers in 0..255; "
                    f"{layout} (scale floats in [0, 1] by 255 first)")


def _npz_labels(file: Path, key: str, y: np.ndarray) -> torch.Tensor:
    """One npz label array as int64 N (N x 1 is accepted)."""
    layout = f"expected {key} as integer labels of shape N or N x 1"
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{file}: {key} has shape {y.shape}; {layout}")
    if y.dtype.kind == "f" and len(y) and not bool((np.isfinite(y) & (y == np.round(y))).all()):
        raise DataError(f"{file}: {key} has dtype {y.dtype} with non-integer values; {layout}")
    if y.dtype.kind not in "iuf":
        raise DataError(f"{file}: {key} has dtype {y.dtype}; {layout}")
    return torch.from_numpy(y.astype(np.int64))
