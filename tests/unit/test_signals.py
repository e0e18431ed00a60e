"""1-D signals: MNIST-1D generated offline, aeon's bundled UCR sets, user .npz signals, the
signal views and the 1-D CNN backbone."""

import numpy as np
import pytest
import torch

from selfsup.config import load_experiment
from selfsup.data.datasets import DataError, load_dataset
from tests.unit.test_config import error_of, write
from selfsup.data.signals import mnist1d, signal_npz, ucr
from selfsup.data.views import SignalViews, build_views
from selfsup.models.backbones import build_backbone


def test_mnist1d_is_generated_offline_and_deterministic():
    d = mnist1d()
    assert d.shape == (1, 40) and len(d.train.x) == 4000 and len(d.test.x) == 1000
    assert sorted(d.train.y.unique().tolist()) == list(range(10))
    assert torch.equal(d.train.x[:5], mnist1d().train.x[:5])


def test_ucr_bundled_set_and_label_encoding():
    d = ucr("BasicMotions")
    assert d.shape == (6, 100) and len(d.train.x) == 40 and len(d.test.x) == 40
    assert sorted(d.train.y.unique().tolist()) == [0, 1, 2, 3]  # badminton, running, standing, walking
    with pytest.raises(DataError, match="'Nope' is not a UCR/UEA set bundled with aeon"):
        ucr("Nope")


def test_signal_npz_shapes_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "one.npz", x=rng.normal(size=(30, 50)), y=rng.integers(0, 3, 30))
    d = signal_npz(str(tmp_path / "one.npz"))
    assert d.shape == (1, 50) and len(d.train.x) + len(d.test.x) == 30 and d.has_labels
    np.savez(tmp_path / "multi.npz", x=rng.normal(size=(10, 12, 64)), x_test=rng.normal(size=(4, 12, 64)))
    assert signal_npz(str(tmp_path / "multi.npz")).shape == (12, 64)
    np.savez(tmp_path / "bad.npz", x=rng.normal(size=(2, 3, 4, 5)))
    with pytest.raises(DataError, match=r"bad.npz: x: expected signals of shape \(N,T\) or \(N,C,T\)"):
        signal_npz(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "nan.npz", x=np.full((4, 8), np.nan))
    with pytest.raises(DataError, match="nan.npz: x: contains NaN"):
        load_dataset("signal_npz", str(tmp_path / "nan.npz"))


def test_signal_views():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 100)
    identity = SignalViews(scale=(1.0, 1.0), amplitude=(1.0, 1.0), noise_std=0.0)
    assert all(torch.allclose(v, x, atol=1e-4) for v in identity(x))
    half = SignalViews(scale=(0.5, 0.5), amplitude=(2.0, 2.0), noise_std=0.0).view(x)
    assert half.shape == x.shape and float(half.abs().max()) <= 2 * float(x.abs().max()) + 1e-5
    dropped = SignalViews(channel_dropout=0.9).view(x)
    silent = (dropped.abs().sum(dim=2) == 0)
    assert silent.any() and not silent.all(dim=1).any()  # channels are dropped, never all of a sample
    a, b = build_views("signal", (3, 100), 2)(x)
    assert a.shape == b.shape == x.shape and not torch.allclose(a, b)


def test_cnn1d_backbone():
    net = build_backbone("cnn1d", (6, 100), 32, 8, 3)
    assert net(torch.randn(4, 6, 100)).shape == (4, 32)


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["data.name=mnist1d", "model.backbone=cnn"], "model.backbone 'cnn' does not suit 'mnist1d' data; use cnn1d or mlp"),
        (["model.backbone=cnn1d"], "model.backbone 'cnn1d' does not suit 'digits' data"),
        (["data.name=mnist1d", "model.backbone=cnn1d", "data.views=byol"], "data.views 'byol' is an image recipe"),
        (["data.views=signal"], "data.views 'signal' is not for images ('digits')"),
        (["data.name=ucr", "model.backbone=cnn1d"], "data.name 'ucr' needs data.path"),
        (["data.name=mnist1d", "model.backbone=cnn1d", "method.name=dino"], "method 'dino' is for images"),
    ],
)
def test_signal_config_errors(tmp_path, sets, expected):
    assert expected in error_of(load_experiment, write(tmp_path, "a.yaml", ""), sets)


@pytest.mark.parametrize("name, params", [("vicreg", dict(projector=[256, 256])), ("simclr", dict(projector=[128, 64], temperature=0.2))])
def test_method_learns_on_mnist1d(name, params):
    """Raw-signal logistic regression gets 0.33 on MNIST-1D and a random 1-D CNN 0.65; 8 epochs of
    pretraining with the signal views must add at least 5 points and lift RankMe."""
    from torch.utils.data import DataLoader, TensorDataset

    from selfsup.data.views import ViewCollate
    from selfsup.methods import build_method
    from selfsup.metrics.panel import evaluate
    from selfsup.train.engine import Engine, build_optimizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = mnist1d()
    method = build_method(name, build_backbone("cnn1d", data.shape, 64, 32, 3), **params)
    probe = (data.train.x, data.train.y, data.test.x, data.test.y)
    before = evaluate(method, data.train.x[:512], "cpu", probe)
    collate = ViewCollate(build_views("signal", data.shape, 2))
    loader = DataLoader(TensorDataset(data.train.x), batch_size=256, shuffle=True, drop_last=True, collate_fn=collate)
    epochs = 8
    engine = Engine(method, method, build_optimizer(method, lr=3e-3, weight_decay=1e-4), total_steps=epochs * len(loader), warmup_steps=len(loader))
    for _ in range(epochs):
        for batch in loader:
            engine.train_step(batch)
    after = evaluate(method, data.train.x[:512], "cpu", probe)
    assert after["probe/linear_acc"] > 0.7 and after["probe/linear_acc"] > before["probe/linear_acc"] + 0.05  # chance 0.1
    assert after["label_free/rankme"] > before["label_free/rankme"] and after["label_free/rankme_projector"] > 20
