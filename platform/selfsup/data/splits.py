"""What every dataset module shares: the train/test containers (:class:`SplitData`), the checks
that turn user arrays into samples, ``.npz`` reading, and :class:`StreamedFiles`, the base of the
datasets read from their files on access. Imports nothing from the package but its errors: the image datasets
(``datasets.py``), ``signals.py`` and ``tables.py`` build on it, and ``selfsup.modalities.load_dataset``
picks among them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.errors import DataError  # noqa: F401 (raised here, imported from here by the dataset modules)


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor | None


@dataclass
class SplitData:
    """A dataset's train and test splits; ``shape`` is one sample's: ``(C, H, W)`` for images,
    ``(C, T)`` for signals, ``(F,)`` for table rows. ``groups`` (tables) are the widths of the
    columns in a row: 1 for a numerical column, the number of categories for a one-hot categorical."""

    name: str
    train: Split
    test: Split
    groups: tuple[int, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.train.y is not None and self.test.y is not None


def split_arrays(x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    return (x[train], pick(y, train)), (x[test], pick(y, test))


def to_split(x: np.ndarray, y: np.ndarray | None) -> Split:
    return Split(
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        None if y is None else torch.as_tensor(y, dtype=torch.int64),
    )


def as_samples(x: np.ndarray, where: str, kind: str, dims: str) -> np.ndarray:
    """``x`` as float32 ``(N, C, *dims)``: a missing channel axis is added; anything else that is
    not of that shape, not numeric or not finite is a one-line error naming ``where``.
    ``kind``/``dims``: ``"image", "H,W"`` or ``"signal", "T"``."""
    rank = dims.count(",") + 3
    if x.ndim == rank - 1:
        x = x[:, None]
    if x.ndim != rank:
        raise DataError(f"{where}: expected {kind}s of shape (N,{dims}) or (N,C,{dims}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: expected a numeric array, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: contains NaN or infinite values")
    return x.astype(np.float32)


def check_labels(y: np.ndarray | None, n: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: expected shape ({n},) to match x, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: expected integer class labels, got dtype {y.dtype}")
    return y.astype(np.int64)


def load_npz(path: str) -> tuple[Path, dict[str, np.ndarray]]:
    """Every array of an ``.npz`` file, read, or a one-line :class:`DataError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with np.load(p, allow_pickle=False) as arrays:
            return p, {key: arrays[key] for key in arrays.files}
    except Exception as exc:  # numpy raises several types for corrupt files
        raise DataError(f"{p}: not a readable .npz file ({exc})") from None


def npz_splits(path: str, samples, test_fraction: float = 0.2, split_seed: int = 0, groups: tuple[int, ...] | None = None) -> SplitData:
    """The splits of an ``.npz`` file of keys ``x``, optional ``y``, ``x_test``, ``y_test``: each
    ``x`` checked and shaped by ``samples(array, where)`` (a one-line :class:`DataError` naming
    ``where`` for what is not a sample), the test split ``x_test`` or ``test_fraction`` of ``x``."""
    p, arrays = load_npz(path)
    if "x" not in arrays:
        raise DataError(f"{p}: missing key 'x' (found {', '.join(arrays) or 'nothing'})")
    x = samples(arrays["x"], f"{p}: x")
    y = check_labels(arrays.get("y"), len(x), f"{p}: y")
    if "x_test" in arrays:
        xte = samples(arrays["x_test"], f"{p}: x_test")
        if xte.shape[1:] != x.shape[1:]:
            raise DataError(f"{p}: x_test: samples of shape {xte.shape[1:]} differ from x's {x.shape[1:]}")
        train, test = (x, y), (xte, check_labels(arrays.get("y_test"), len(xte), f"{p}: y_test"))
    else:
        train, test = split_arrays(x, y, test_fraction, split_seed)
    if len(train[0]) < 2:
        raise DataError(f"{p}: x: needs at least 2 training samples, got {len(train[0])}")
    return SplitData(p.stem, to_split(*train), to_split(*test), groups=groups)


def numeric_samples(x: np.ndarray, where: str, dims: str) -> np.ndarray:
    """``x`` as float32 when it is finite numbers of ``len(dims) + 1`` axes ``(N, *dims)`` (``dims``:
    the sample's axes, named for the message), else a one-line :class:`DataError` naming ``where``."""
    names = dims.split(",")
    if x.ndim != len(names) + 1 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: expected ({', '.join(['N', *names])}), got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: contains NaN or infinite values")
    return x.astype(np.float32)


def read_npz(path: str, kind: str, dims: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """Arrays from an ``.npz`` file (keys ``x``, optional ``y``, ``x_test``, ``y_test``), ``x`` and
    ``x_test`` checked and shaped by :func:`as_samples` (``kind``, ``dims``: see there)."""
    return npz_splits(path, lambda x, where: as_samples(x, where, kind, dims), test_fraction, split_seed)


@dataclass(frozen=True)
class Skipped:
    """Stands in for a streamed sample whose file could not be read (``data.on_bad_file: skip``):
    the collate function drops it and counts ``file``."""

    file: str
    reason: str


class StreamedFiles(torch.utils.data.Dataset):
    """Samples read from their files on access, for data too large to hold in memory
    (``data.stream``). ``ds[i]`` -> one sample; ``ds[slice]`` or ``ds[indices]`` -> ``(K, ...)``;
    ``len(ds)`` and ``ds.shape`` as for a tensor. Reading runs in the DataLoader's worker processes
    when ``data.loader_workers > 0``.

    A file that cannot be read raises its one-line :class:`DataError` (``on_bad_file="fail"``) or,
    with ``on_bad_file="skip"``, ``ds[i]`` returns a :class:`Skipped` in its place and
    :meth:`take` leaves it out; a stacked ``ds[indices]`` always fails on it, since it must return
    every row it was asked for.
    """

    def __init__(self, files, sample_shape: tuple[int, ...], on_bad_file: str = "fail"):
        self.files, self.sample_shape, self.on_bad_file = list(files), tuple(sample_shape), on_bad_file

    def read(self, f) -> np.ndarray:
        """One file -> one float32 sample of ``sample_shape``, or a :class:`DataError`."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.sample_shape)

    def _one(self, i: int):
        try:
            return torch.from_numpy(self.read(self.files[i]))
        except DataError as exc:
            if self.on_bad_file != "skip":
                raise
            return Skipped(str(self.files[i]), str(exc))

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
            return self._one(int(index))
        picked = range(len(self.files))[index] if isinstance(index, slice) else [int(i) for i in index]
        return torch.stack([torch.from_numpy(self.read(self.files[i])) for i in picked])

    def items(self, indices) -> list:
        """``[ds[i] for i in indices]`` (a :class:`Skipped` in place of what cannot be read); a
        subclass may read them together (one request per shard)."""
        return [self._one(int(i)) for i in indices]

    def take(self, indices) -> tuple[torch.Tensor, torch.Tensor, list[Skipped]]:
        """The readable samples among ``indices`` ``(K, ...)``, the positions in ``indices`` they
        came from ``(K,)``, and what was skipped."""
        samples = self.items(indices)
        kept = [k for k, s in enumerate(samples) if torch.is_tensor(s)]
        if not kept:
            raise DataError(f"{samples[0].file}: none of the {len(samples)} files asked for could be read ({samples[0].reason})")
        return torch.stack([samples[k] for k in kept]), torch.tensor(kept), [s for s in samples if isinstance(s, Skipped)]
