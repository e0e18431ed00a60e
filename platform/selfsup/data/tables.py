"""Tabular datasets, returned as ``(N, F)`` float32 tensors with a fixed train/test split.

- ``table``: a table bundled with scikit-learn, named by ``data.path``: ``breast_cancer``
  (569 x 30, 2 classes), ``wine`` (178 x 13, 3 classes), ``iris`` (150 x 4, 3 classes).
- ``csv`` / ``parquet``: your file at ``data.path`` with a declared schema (``data.columns``):
  ``numerical`` and ``categorical`` column names and an optional ``label`` column.

Numerical columns are standardised with the mean and standard deviation of the training split
only; categorical columns are one-hot encoded over the categories seen in training (an unseen
category in the test split encodes as all zeros); a column with more than ``max_categories``
categories keeps its ``max_categories - 1`` most frequent in training and puts the rest in one
``<other>`` category, so a row's width (and the table's memory, ``N x width`` float32) stays
bounded whatever the cardinality. ``SplitData.groups`` records each column's width in the row, so
that T-JEPA's tokenizer embeds a categorical column as one token. Missing values are an error
naming the column and row, unless ``data.missing: impute``: numerical gaps take the training
mean, categorical gaps become their own category; a numerical column with no value at all in the
training split has nothing to impute from and is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup import storage
from selfsup.data.splits import DataError, SplitData, split_arrays, to_split
from selfsup.errors import first_line

BUNDLED = ("breast_cancer", "wine", "iris")
MAX_CATEGORIES = 64
"""Default ``data.columns.max_categories``: one-hot width of a categorical column at most."""
OTHER, MISSING = "<other>", "<missing>"


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x - mean) / std`` with the training split's statistics (std 0 -> 1)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def bundled(name: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """A scikit-learn table, split with ``test_fraction`` and standardised on its training part."""
    import sklearn.datasets

    if name not in BUNDLED:
        raise DataError(f"data.path: {name!r} is not a bundled table (available: {', '.join(BUNDLED)})")
    table = getattr(sklearn.datasets, f"load_{name}")()
    (xtr, ytr), (xte, yte) = split_arrays(table.data.astype(np.float32), table.target.astype(np.int64), test_fraction, split_seed)
    xtr, xte = standardise(xtr, xte)
    return SplitData(name, to_split(xtr, ytr), to_split(xte, yte), (1,) * xtr.shape[1])


def _read(path: str, kind: str):
    """The table at ``path``: a local file or a URI of any pyarrow filesystem (``s3://...``)."""
    import pandas as pd

    try:
        if not storage.is_file(path):
            raise DataError(f"{path}: file not found")
        filesys, inner = storage.filesystem(path)
        with filesys.open_input_file(inner) as f:
            return pd.read_csv(f) if kind == "csv" else pd.read_parquet(f)
    except DataError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        raise DataError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {first_line(exc)})") from None


def _numerical(frame, column: str, where: str, impute: bool) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{where}: column {column!r}: row {row}: {frame[column].iloc[row]!r} is not a number")
    if values.isna().any() and not impute:
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{where}: column {column!r}: row {row}: missing value (set data.missing: impute to fill it)")
    return values.to_numpy(dtype=np.float64)


def categories(train_codes: np.ndarray, limit: int) -> list[str]:
    """The one-hot categories of a column from its training values: every one seen, sorted; past
    ``limit``, the ``limit - 1`` most frequent (ties by name) and :data:`OTHER` for the rest."""
    names, counts = np.unique(train_codes, return_counts=True)
    if len(names) <= limit:
        return names.tolist()
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[: limit - 1]
    return sorted(names[i] for i in order) + [OTHER]


def one_hot(codes: np.ndarray, seen: list[str]) -> np.ndarray:
    """``(N, len(seen))`` float32 one-hot rows of ``codes``: a value not in ``seen`` takes
    :data:`OTHER` where the column has it, else encodes as all zeros (a category unseen in training)."""
    index = {c: i for i, c in enumerate(seen)}
    other = index.get(OTHER, -1)
    cols = np.fromiter((index.get(c, other) for c in codes), dtype=np.int64, count=len(codes))
    out = np.zeros((len(codes), len(seen)), dtype=np.float32)
    hit = cols >= 0
    out[np.flatnonzero(hit), cols[hit]] = 1.0
    return out


def user_table(
    path: str,
    kind: str,
    numerical: list[str],
    categorical: list[str],
    label: str | None,
    missing: str = "error",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    max_categories: int = MAX_CATEGORIES,
) -> SplitData:
    """A CSV or Parquet table with a declared schema (see the module docstring)."""
    where = path
    frame = _read(path, kind)
    for column in [*numerical, *categorical, *([label] if label else [])]:
        if column not in frame.columns:
            raise DataError(f"{where}: column {column!r} not in the file (columns: {', '.join(map(str, frame.columns))})")
    impute = missing == "impute"
    y = None
    if label:
        if frame[label].isna().any():
            row = int(np.flatnonzero(frame[label].isna().to_numpy())[0])
            raise DataError(f"{where}: column {label!r}: row {row}: missing label")
        classes = {c: i for i, c in enumerate(sorted(frame[label].unique(), key=str))}
        y = frame[label].map(classes).to_numpy(dtype=np.int64)
    rows = np.arange(len(frame))
    (train_rows, y_train), (test_rows, y_test) = split_arrays(rows, y, test_fraction, split_seed)
    parts_train, parts_test, groups = [], [], [1] * len(numerical)
    if numerical:
        num = np.stack([_numerical(frame, c, where, impute) for c in numerical], axis=1)
        train, test = num[train_rows], num[test_rows]
        empty = np.isnan(train).all(axis=0)
        if empty.any():
            column = numerical[int(np.flatnonzero(empty)[0])]
            raise DataError(f"{where}: column {column!r}: no value in the {len(train_rows)} training rows, nothing to impute from (remove it from data.columns)")
        fill = np.nanmean(train, axis=0)
        train, test = np.where(np.isnan(train), fill, train), np.where(np.isnan(test), fill, test)
        train, test = standardise(train, test)
        parts_train.append(train)
        parts_test.append(test)
    for column in categorical:
        values = frame[column]
        if values.isna().any() and not impute:
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(f"{where}: column {column!r}: row {row}: missing value (set data.missing: impute to fill it)")
        codes = values.astype(str).where(values.notna(), MISSING).to_numpy()
        seen = categories(codes[train_rows], max_categories)
        groups.append(len(seen))
        parts_train.append(one_hot(codes[train_rows], seen))
        parts_test.append(one_hot(codes[test_rows], seen))
    if not parts_train:
        raise DataError(f"{where}: data.columns declares no numerical or categorical column")
    x_train = np.concatenate(parts_train, axis=1).astype(np.float32)
    x_test = np.concatenate(parts_test, axis=1).astype(np.float32)
    return SplitData(Path(path.split('?')[0]).stem, to_split(x_train, y_train), to_split(x_test, y_test), tuple(groups))
