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
  the folder ``data.path`` (local, or a URI such as ``s3://bucket/prefix``: each record's files are
  then fetched into a temporary folder to be read, see :mod:`selfsup.data.files`), read with the
  ``wfdb`` package in physical units; optional lead selection
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

from selfsup import storage
from selfsup.data.files import Folder, local_copy, open_binary
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


def read_header(header: str):
    """A record's header (its ``.hea`` file, local or a URI), or a one-line error naming it."""
    import wfdb

    try:
        with local_copy(header) as hea:
            return wfdb.rdheader(hea[: -len(".hea")])
    except Exception as exc:  # wfdb raises many types for malformed headers
        raise DataError(f"{header}: not a WFDB header ({type(exc).__name__}: {first_line(exc)})") from None


def read_record(header: str, leads: list[str] | None, length: int, rate: float | None, signal_files: list[str] = ()) -> np.ndarray:
    """One WFDB record, named by its ``.hea`` file, as ``(C, length)`` float32 in physical units
    (missing samples as 0). ``signal_files``: the names of its signal files beside the header (the
    header's ``file_name``), fetched with it when the record is at a URI."""
    import wfdb
    from fractions import Fraction

    try:
        with local_copy(header, signal_files) as hea:
            rec = wfdb.rdrecord(hea[: -len(".hea")], channel_names=leads, physical=True)
    except Exception as exc:  # wfdb raises many types for unreadable records
        raise DataError(f"{header}: not a readable WFDB record ({type(exc).__name__}: {first_line(exc)})") from None
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

    def __init__(self, records, leads: list[str] | None, channels: int, length: int, rate: float | None, on_bad_file: str = "fail",
                 signal_files: dict[str, list[str]] | None = None):
        super().__init__(records, (channels, length), on_bad_file)
        self.leads, self.length, self.rate, self.signal_files = leads, length, rate, signal_files or {}

    def read(self, record) -> np.ndarray:
        return read_record(record, self.leads, self.length, self.rate, self.signal_files.get(record, []))


def _labels(where: str, root: str, names: list[str]) -> np.ndarray:
    import pandas as pd

    if not storage.is_file(where):
        raise DataError(f"{where}: file not found (data.labels)")
    with open_binary(where) as f:
        table = pd.read_csv(f, dtype=str)
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
    root = Folder(path)
    records = root.files({".hea"})  # a record is named by its header
    if not records:
        raise DataError(f"{root.root}: no WFDB records (.hea headers)")
    lengths, channels, signal_files = [], None, {}
    for record in records:
        head = read_header(record)
        signal_files[record] = sorted(set(head.file_name or []))
        names = list(head.sig_name or [])
        if len(names) != head.n_sig or not head.n_sig:
            raise DataError(f"{record}: not a WFDB header (declares {head.n_sig} signals, describes {len(names)})")
        if not head.sig_len and length is None:
            raise DataError(f"{record}: the header declares no signal length; set data.signal_length")
        absent = [lead for lead in leads or [] if lead not in names]
        if absent:
            raise DataError(f"{record}: no lead {absent[0]!r} (leads: {', '.join(names)})")
        if not leads and channels is not None and head.n_sig != channels:
            raise DataError(f"{record}: {head.n_sig} channels, the first record has {channels}; set data.leads")
        channels = len(leads) if leads else head.n_sig
        lengths.append(round((head.sig_len or 0) * (rate / head.fs if rate else 1)))
    if length is None:
        if len(set(lengths)) > 1:
            i = next(i for i, n in enumerate(lengths) if n != lengths[0])
            raise DataError(f"{records[i]}: {lengths[i]} samples, the first record has {lengths[0]}; set data.signal_length")
        length = lengths[0]
    names = [root.relative_name(r)[: -len(".hea")] for r in records]
    y = _labels(labels, root.root, names) if labels else None
    (train, y_train), (test, y_test) = split_arrays(np.asarray(records, dtype=object), y, test_fraction, split_seed)

    def split(files: np.ndarray, y: np.ndarray | None) -> Split:
        ds = WFDBRecords(files, leads, channels, length, rate, on_bad_file, {f: signal_files[f] for f in files})
        if not stream:
            return to_split(np.stack([ds.read(f) for f in files]), y)
        return Split(ds, None if y is None else torch.as_tensor(y, dtype=torch.int64))

    return SplitData(root.name, split(train, y_train), split(test, y_test))
