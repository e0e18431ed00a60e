"""1-D signal datasets, returned as ``(N, C, T)`` float32 tensors with a fixed train/test split.

- ``mnist1d``: MNIST-1D (Greydanus & Kobak 2020, https://arxiv.org/abs/2011.14439) regenerated
  offline from the templates in the ``mnist1d`` package with its default arguments: 5,000
  signals of length 40, 10 classes, its own 4,000 / 1,000 split. Nothing is downloaded.
- ``ucr``: a UCR/UEA classification set bundled with aeon, named by ``data.path`` (GunPoint,
  ArrowHead, BasicMotions, ItalyPowerDemand, OSULeaf, ACSF1, ...), with its own split; string
  class labels become 0..K-1 in sorted order.
- ``signal_npz``: your arrays: ``x`` ``(N, T)`` or ``(N, C, T)``, optional ``y``, ``x_test``,
  ``y_test`` (else ``test_fraction`` of ``x`` is held out).
- ``wfdb``: WFDB records (PhysioNet's format: a ``.hea`` header and its signal files) anywhere under
  the folder ``data.path``, read with the ``wfdb`` package in physical units; optional lead selection
  (``data.leads``), resampling (``data.sampling_rate``), a fixed length (``data.signal_length``:
  longer records keep their first samples, shorter ones are zero-padded) and labels from a CSV
  (``data.labels``, columns ``record`` = the record's path under the folder without extension, and
  ``label``). Every header is checked before training; with ``data.stream`` the signals are read on
  access (:class:`WFDBRecords`), for collections too large for memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import torch

from selfsup.data.splits import DataError, Split, SplitData, StreamedFiles, read_npz, split_arrays, to_split
from selfsup.errors import first_line



def mnist1d(seed: int = 42) -> SplitData:
    """MNIST-1D as its generator makes it (``seed`` 42 is the published dataset's)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    train = (d["x"].astype(np.float32)[:, None], d["y"].astype(np.int64))
    test = (d["x_test"].astype(np.float32)[:, None], d["y_test"].astype(np.int64))
    return SplitData("mnist1d", to_split(*train), to_split(*test))


def ucr(name: str) -> SplitData:
    """A UCR/UEA set from aeon's bundled data, equal-length series only."""
    import aeon.datasets

    bundled = Path(aeon.datasets.__file__).parent / "data"
    if not (bundled / name).is_dir():
        have = sorted(p.name for p in bundled.iterdir() if p.is_dir() and (p / f"{p.name}_TRAIN.ts").is_file())
        raise DataError(f"data.path: {name!r} is not a UCR/UEA set bundled with aeon (bundled: {', '.join(have)})")
    from aeon.datasets import load_classification

    parts = [load_classification(name, split=split, extract_path=str(bundled)) for split in ("train", "test")]
    if any(not isinstance(x, np.ndarray) for x, _ in parts):
        raise DataError(f"data.path: {name!r} has series of unequal length, which selfsup does not load")
    classes = {c: i for i, c in enumerate(sorted(set(parts[0][1]) | set(parts[1][1])))}
    train, test = [(x.astype(np.float32), np.asarray([classes[c] for c in y], dtype=np.int64)) for x, y in parts]
    return SplitData(name, to_split(*train), to_split(*test))


def signal_npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """User signals from an ``.npz`` file: ``x`` ``(N, T)`` or ``(N, C, T)`` (see ``datasets.read_npz``)."""
    return read_npz(path, "signal", "T", test_fraction, split_seed)


def read_record(record: Path, leads: list[str] | None, length: int, rate: float | None) -> np.ndarray:
    """One WFDB record as ``(C, length)`` float32 in physical units (missing samples as 0)."""
    import wfdb
    from fractions import Fraction

    try:
        rec = wfdb.rdrecord(str(record), channel_names=leads, physical=True)
    except Exception as exc:  # wfdb raises many types for unreadable records
        raise DataError(f"{record}.hea: not a readable WFDB record ({type(exc).__name__}: {first_line(exc)})") from None
    x = np.nan_to_num(np.asarray(rec.p_signal, dtype=np.float64)).T
    if rate and rec.fs != rate:
        from scipy.signal import resample_poly

        ratio = Fraction(rate / rec.fs).limit_denominator(1000)
        x = resample_poly(x, ratio.numerator, ratio.denominator, axis=1)
    out = np.zeros((x.shape[0], length), dtype=np.float32)
    out[:, : min(length, x.shape[1])] = x[:, :length]
    return out


class WFDBRecords(StreamedFiles):
    """WFDB records read on access to ``(C, T)`` (``data.stream``; see :class:`StreamedFiles`)."""

    def __init__(self, records, leads: list[str] | None, channels: int, length: int, rate: float | None, on_bad_file: str = "fail"):
        super().__init__(records, (channels, length), on_bad_file)
        self.leads, self.length, self.rate = leads, length, rate

    def read(self, record) -> np.ndarray:
        return read_record(record, self.leads, self.length, self.rate)


def _labels(path: str, root: Path, names: list[str]) -> np.ndarray:
    import pandas as pd

    where = Path(path)
    if not where.is_file():
        raise DataError(f"{where}: file not found (data.labels)")
    table = pd.read_csv(where, dtype=str)
    for column in ("record", "label"):
        if column not in table.columns:
            raise DataError(f"{where}: column {column!r} not in the file (columns: {', '.join(table.columns)})")
    by_record = dict(zip(table["record"], table["label"]))
    missing = [n for n in names if n not in by_record]
    if missing:
        raise DataError(f"{where}: no label for record {missing[0]!r} of {root} ({len(missing)} records without one)")
    classes = {c: i for i, c in enumerate(sorted({by_record[n] for n in names}))}
    return np.asarray([classes[by_record[n]] for n in names], dtype=np.int64)


def wfdb_folder(
    path: str,
    length: int | None = None,
    rate: float | None = None,
    leads: list[str] | None = None,
    labels: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    stream: bool = False,
    on_bad_file: str = "fail",
) -> SplitData:
    """The WFDB records under ``path`` (see the module docstring)."""
    import wfdb

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    records = sorted(h.with_suffix("") for h in root.rglob("*.hea"))
    if not records:
        raise DataError(f"{root}: no WFDB records (.hea headers)")
    lengths, channels = [], None
    for record in records:
        try:
            head = wfdb.rdheader(str(record))
        except Exception as exc:  # wfdb raises many types for malformed headers
            raise DataError(f"{record}.hea: not a WFDB header ({type(exc).__name__}: {first_line(exc)})") from None
        names = list(head.sig_name or [])
        if len(names) != head.n_sig or not head.n_sig:
            raise DataError(f"{record}.hea: not a WFDB header (declares {head.n_sig} signals, describes {len(names)})")
        if not head.sig_len and length is None:
            raise DataError(f"{record}.hea: the header declares no signal length; set data.signal_length")
        absent = [lead for lead in leads or [] if lead not in names]
        if absent:
            raise DataError(f"{record}.hea: no lead {absent[0]!r} (leads: {', '.join(names)})")
        if not leads and channels is not None and head.n_sig != channels:
            raise DataError(f"{record}.hea: {head.n_sig} channels, the first record has {channels}; set data.leads")
        channels = len(leads) if leads else head.n_sig
        lengths.append(round((head.sig_len or 0) * (rate / head.fs if rate else 1)))
    if length is None:
        if len(set(lengths)) > 1:
            i = next(i for i, n in enumerate(lengths) if n != lengths[0])
            raise DataError(f"{records[i]}.hea: {lengths[i]} samples, the first record has {lengths[0]}; set data.signal_length")
        length = lengths[0]
    names = [r.relative_to(root).as_posix() for r in records]
    y = _labels(labels, root, names) if labels else None
    (train, y_train), (test, y_test) = split_arrays(np.asarray(records, dtype=object), y, test_fraction, split_seed)

    def split(files: np.ndarray, y: np.ndarray | None) -> Split:
        ds = WFDBRecords(files, leads, channels, length, rate, on_bad_file)
        if not stream:
            return to_split(np.stack([read_record(f, leads, length, rate) for f in files]), y)
        return Split(ds, None if y is None else torch.as_tensor(y, dtype=torch.int64))

    return SplitData(root.name, split(train, y_train), split(test, y_test))
