"""Damaged data files of every supported format: one line naming the file and what is wrong; a
streamed dataset's unreadable file fails or is skipped (and listed) as ``data.on_bad_file`` says."""

import numpy as np
import pandas as pd
import pytest
import torch

from selfsup.data.datasets import DataError, folder
from selfsup.modalities import load_dataset
from selfsup.data.splits import Skipped
from selfsup.data.signals import WFDBRecords, wfdb_folder
from selfsup.data.views import ViewCollate
from tests.unit.test_image_data import write_images
from tests.unit.test_signals import write_records


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return str(path)


def npz_truncated(tmp):
    np.savez(tmp / "x.npz", x=np.random.rand(64, 8, 8))
    return "npz", truncate(tmp / "x.npz"), {}


def signal_npz_with_inf(tmp):
    x = np.random.rand(8, 2, 50)
    x[3, 1, 7] = np.inf
    np.savez(tmp / "s.npz", x=x)
    return "signal_npz", str(tmp / "s.npz"), {}


def npz_labels_mismatch(tmp):
    np.savez(tmp / "y.npz", x=np.random.rand(10, 8, 8), y=np.arange(9))
    return "npz", str(tmp / "y.npz"), {}


def csv_ragged_row(tmp):
    (tmp / "r.csv").write_text("a,b\n1,2\n3,4,5\n")
    return "csv", str(tmp / "r.csv"), {"columns": {"numerical": ["a", "b"]}}


def csv_short_row(tmp):
    (tmp / "s.csv").write_text("a,b\n1,2\n3\n")
    return "csv", str(tmp / "s.csv"), {"columns": {"numerical": ["a", "b"]}}


def parquet_wrong_type(tmp):
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}).to_parquet(tmp / "t.parquet")
    return "parquet", str(tmp / "t.parquet"), {"columns": {"numerical": ["a", "b"]}}


def parquet_truncated(tmp):
    pd.DataFrame({"a": np.arange(100.0)}).to_parquet(tmp / "p.parquet")
    return "parquet", truncate(tmp / "p.parquet"), {"columns": {"numerical": ["a"]}}


def wfdb_bad_header(tmp):
    write_records(tmp / "db", n=2)
    (tmp / "db" / "r1.hea").write_text("r1 3 500 nonsense\n")
    return "wfdb", str(tmp / "db"), {}


def wfdb_empty_signal_file(tmp):
    write_records(tmp / "db", n=2)
    (tmp / "db" / "r1.dat").write_bytes(b"")
    return "wfdb", str(tmp / "db"), {}


def image_truncated(tmp):
    write_images(tmp / "im", ["a"], n=3)
    truncate(tmp / "im" / "a" / "1.png", 0.3)
    return "folder", str(tmp / "im"), {}


def empty_class_folders(tmp):
    (tmp / "empty" / "a").mkdir(parents=True)
    return "folder", str(tmp / "empty"), {}


DAMAGED = [
    (npz_truncated, "x.npz: not a readable .npz file"),
    (signal_npz_with_inf, "s.npz: x: contains NaN or infinite values"),
    (npz_labels_mismatch, "y.npz: y: expected shape (10,) to match x"),
    (csv_ragged_row, "r.csv: not a readable csv file (ParserError"),
    (csv_short_row, "s.csv: column 'b': row 1: missing value"),
    (parquet_wrong_type, "t.parquet: column 'b': row 0: 'x' is not a number"),
    (parquet_truncated, "p.parquet: not a readable parquet file"),
    (wfdb_bad_header, "r1.hea: not a WFDB header"),
    (wfdb_empty_signal_file, "r1.hea: not a readable WFDB record"),
    (image_truncated, "1.png: not a readable image"),
    (empty_class_folders, "empty: no images"),
]


@pytest.mark.parametrize("damage, expected", DAMAGED, ids=[d.__name__ for d, _ in DAMAGED])
def test_a_damaged_file_fails_in_one_line_naming_it(tmp_path, damage, expected):
    name, path, kwargs = damage(tmp_path)
    with pytest.raises(DataError) as exc:
        load_dataset(name, path, **kwargs)
    message = str(exc.value)
    assert expected in message and str(tmp_path) in message and "\n" not in message


def streamed(tmp, on_bad_file):
    write_images(tmp / "train", ["a", "b"], n=4)
    write_images(tmp / "val", ["a", "b"], n=2)
    truncate(tmp / "train" / "b" / "2.png", 0.3)
    return folder(str(tmp), 8, stream=True, on_bad_file=on_bad_file)


def test_a_streamed_unreadable_file_fails_the_batch_by_default(tmp_path):
    data = streamed(tmp_path, "fail")
    collate = ViewCollate(lambda x: [x])
    bad = [str(f) for f in data.train.x.files].index(str(tmp_path / "train" / "b" / "2.png"))
    with pytest.raises(DataError, match=r"2.png: not a readable image"):
        collate([data.train.x[i] for i in range(len(data.train.x))])
    with pytest.raises(DataError, match=r"2.png: not a readable image"):
        data.train.x.take(torch.tensor([0, bad]))
    assert collate([data.train.x[i] for i in range(len(data.train.x)) if i != bad])["views"][0].shape == (7, 3, 8, 8)


def test_a_streamed_unreadable_file_is_skipped_and_listed_when_asked(tmp_path):
    data = streamed(tmp_path, "skip")
    x = data.train.x
    bad = [str(f) for f in x.files].index(str(tmp_path / "train" / "b" / "2.png"))
    assert isinstance(x[bad], Skipped) and "2.png: not a readable image" in x[bad].reason
    batch = ViewCollate(lambda v: [v])([x[i] for i in range(len(x))])
    assert batch["views"][0].shape == (7, 3, 8, 8) and [s.file for s in batch["skipped"]] == [str(x.files[bad])]
    rows, kept, skipped = x.take(torch.tensor([bad, 0, 1]))
    assert rows.shape == (2, 3, 8, 8) and kept.tolist() == [1, 2] and len(skipped) == 1
    assert torch.equal(rows[0], x[0])
    with pytest.raises(DataError, match="2.png"):  # a stacked read must return every row it was asked for
        x[[bad, 0]]
    with pytest.raises(DataError, match="every file of a batch of 1 was unreadable"):
        ViewCollate(lambda v: [v])([x[bad]])


def test_a_streamed_wfdb_record_that_cannot_be_read_is_skipped(tmp_path):
    write_records(tmp_path, n=4)
    (tmp_path / "r3.dat").write_bytes(b"")
    data = wfdb_folder(str(tmp_path), stream=True, on_bad_file="skip", test_fraction=0.25)
    x = data.train.x if any(str(f).endswith("r3.hea") for f in data.train.x.files) else data.test.x
    assert isinstance(x, WFDBRecords)
    samples = [x[i] for i in range(len(x))]
    assert sum(isinstance(s, Skipped) for s in samples) == 1 and all(s.shape == (3, 1000) for s in samples if torch.is_tensor(s))


def test_skip_needs_streamed_data(tmp_path):
    from selfsup.config import ExperimentConfig

    with pytest.raises(ValueError, match="data.on_bad_file: skip applies to streamed data"):
        ExperimentConfig.model_validate({"data": {"name": "folder", "path": str(tmp_path), "on_bad_file": "skip"}})
    assert ExperimentConfig.model_validate({"data": {"name": "folder", "path": str(tmp_path), "stream": True, "on_bad_file": "skip"}})
