"""Built-in and user datasets, returned as float tensors with a fixed train/test split.

Images are ``(N, C, H, W)`` float32; labels ``(N,)`` int64 or ``None`` when the data has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = {
    "digits": "scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes, fixed 80/20 split",
    "npz": "your arrays: data.path -> .npz with x (N,H,W)|(N,C,H,W), optional y, x_test, y_test",
}


class DataError(ValueError):
    """A dataset problem, reported as one line naming the file and the key."""


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor | None


@dataclass
class ImageData:
    name: str
    train: Split
    test: Split

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.train.y is not None and self.test.y is not None


def _split(x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    return (x[train], pick(y, train)), (x[test], pick(y, test))


def _to_split(x: np.ndarray, y: np.ndarray | None) -> Split:
    return Split(
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        None if y is None else torch.as_tensor(y, dtype=torch.int64),
    )


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{where}: expected images of shape (N,H,W) or (N,C,H,W), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: expected a numeric array, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: contains NaN or infinite values")
    return x.astype(np.float32)


def _labels(y: np.ndarray | None, n: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: expected shape ({n},) to match x, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: expected integer class labels, got dtype {y.dtype}")
    return y.astype(np.int64)


def digits(test_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """scikit-learn's bundled digits: 1,797 8x8 grey images scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    (xtr, ytr), (xte, yte) = _split(x, bunch.target.astype(np.int64), test_fraction, split_seed)
    return ImageData("digits", _to_split(xtr, ytr), _to_split(xte, yte))


def npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """User arrays from an ``.npz`` file (keys ``x``, optional ``y``, ``x_test``, ``y_test``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        arrays = np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt files
        raise DataError(f"{p}: not a readable .npz file ({exc})") from None
    with arrays:
        if "x" not in arrays.files:
            raise DataError(f"{p}: missing key 'x' (found {', '.join(arrays.files) or 'nothing'})")
        x = _as_images(arrays["x"], f"{p}: x")
        y = _labels(arrays["y"] if "y" in arrays.files else None, len(x), f"{p}: y")
        if "x_test" in arrays.files:
            xte = _as_images(arrays["x_test"], f"{p}: x_test")
            if xte.shape[1:] != x.shape[1:]:
                raise DataError(f"{p}: x_test: image shape {xte.shape[1:]} differs from x {x.shape[1:]}")
            yte = _labels(arrays["y_test"] if "y_test" in arrays.files else None, len(xte), f"{p}: y_test")
            train, test = (x, y), (xte, yte)
        else:
            train, test = _split(x, y, test_fraction, split_seed)
    if len(train[0]) < 2:
        raise DataError(f"{p}: x: needs at least 2 training samples, got {len(train[0])}")
    return ImageData(p.stem, _to_split(*train), _to_split(*test))


def load_dataset(name: str, path: str | None = None, test_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """Load a dataset by its config name (see :data:`DATASETS`)."""
    if name == "digits":
        return digits(test_fraction, split_seed)
    if name == "npz":
        return npz(path, test_fraction, split_seed)
    raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
