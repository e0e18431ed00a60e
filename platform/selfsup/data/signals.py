"""1-D signal datasets, returned as ``(N, C, T)`` float32 tensors with a fixed train/test split.

- ``mnist1d``: MNIST-1D (Greydanus & Kobak 2020, https://arxiv.org/abs/2011.14439) regenerated
  offline from the templates in the ``mnist1d`` package with its default arguments: 5,000
  signals of length 40, 10 classes, its own 4,000 / 1,000 split. Nothing is downloaded.
- ``ucr``: a UCR/UEA classification set bundled with aeon, named by ``data.path`` (GunPoint,
  ArrowHead, BasicMotions, ItalyPowerDemand, OSULeaf, ACSF1, ...), with its own split; string
  class labels become 0..K-1 in sorted order.
- ``signal_npz``: your arrays: ``x`` ``(N, T)`` or ``(N, C, T)``, optional ``y``, ``x_test``,
  ``y_test`` (else ``test_fraction`` of ``x`` is held out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.datasets import DataError, SplitData, read_npz, to_split

SIGNAL_DATASETS = {
    "mnist1d": "MNIST-1D regenerated offline (mnist1d package): 5,000 signals of length 40, 10 classes",
    "ucr": "a UCR/UEA set bundled with aeon, data.path = its name (GunPoint, ArrowHead, BasicMotions, ...)",
    "signal_npz": "your signals: data.path -> .npz with x (N,T)|(N,C,T), optional y, x_test, y_test",
}


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
