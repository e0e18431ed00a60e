"""Image-folder and CIFAR python-pickle datasets, on tiny fakes written by the tests."""

import pickle

import numpy as np
import pytest
from PIL import Image

import torch

from selfsup.data.datasets import DataError, ImageFiles, cifar, folder


def write_cifar(root, names, key, n=4, classes=10):
    rng = np.random.default_rng(0)
    for name in names:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), key: list(rng.integers(0, classes, n))}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_format(tmp_path):
    write_cifar(tmp_path, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels")
    d = cifar(str(tmp_path), 10)
    assert d.shape == (3, 32, 32) and len(d.train.x) == 20 and len(d.test.x) == 4 and d.has_labels
    assert 0.0 <= float(d.train.x.min()) and float(d.train.x.max()) <= 1.0
    raw = pickle.load(open(tmp_path / "test_batch", "rb"), encoding="bytes")[b"data"][0]
    assert np.allclose(d.test.x[0].numpy().reshape(-1), raw / 255.0)  # channel-major, as the format stores it


def test_cifar100_format(tmp_path):
    write_cifar(tmp_path, ["train", "test"], b"fine_labels", classes=100)
    d = cifar(str(tmp_path), 100)
    assert len(d.train.x) == 4 and d.train.y.max() < 100


def test_cifar_errors_name_the_file(tmp_path):
    write_cifar(tmp_path, ["data_batch_1"], b"labels")
    with pytest.raises(DataError, match="data_batch_2: file not found"):
        cifar(str(tmp_path), 10)
    (tmp_path / "train").write_bytes(b"garbage")
    with pytest.raises(DataError, match="train: not a CIFAR pickle"):
        cifar(str(tmp_path), 100)


def write_images(root, classes, n=3, size=12):
    rng = np.random.default_rng(1)
    for c in classes:
        d = root / c if c else root
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_folder_with_classes_and_split(tmp_path):
    write_images(tmp_path, ["cat", "dog"], n=5)
    d = folder(str(tmp_path), image_size=8, test_fraction=0.2)
    assert d.shape == (3, 8, 8) and len(d.train.x) + len(d.test.x) == 10 and set(d.train.y.tolist()) <= {0, 1}


def test_folder_train_val_layout_and_unlabelled(tmp_path):
    write_images(tmp_path / "train", ["a", "b"])
    write_images(tmp_path / "val", ["a", "b"], n=2)
    d = folder(str(tmp_path), image_size=16)
    assert len(d.train.x) == 6 and len(d.test.x) == 4 and d.has_labels
    flat = tmp_path / "flat"
    write_images(flat, [None], n=6)
    assert not folder(str(flat), image_size=8).has_labels


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        folder(str(tmp_path / "empty"), 8)
    write_images(tmp_path / "bad", ["a"])
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        folder(str(tmp_path / "bad"), 8)


def test_streamed_folder_decodes_on_access_like_the_eager_one(tmp_path):
    write_images(tmp_path, ["cat", "dog"], n=5)
    eager, lazy = folder(str(tmp_path), 8), folder(str(tmp_path), 8, stream=True)
    assert isinstance(lazy.train.x, ImageFiles) and lazy.shape == eager.shape == (3, 8, 8)
    assert torch.equal(lazy.train.y, eager.train.y) and len(lazy.test.x) == len(eager.test.x)
    assert torch.equal(lazy.train.x[3], eager.train.x[3])
    assert torch.equal(lazy.train.x[1:4], eager.train.x[1:4])
    assert torch.equal(lazy.train.x[torch.tensor([5, 0])], eager.train.x[torch.tensor([5, 0])])
