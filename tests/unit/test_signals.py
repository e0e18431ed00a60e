"""1-D signals: MNIST-1D generated offline, aeon's bundled UCR sets, user .npz signals, WFDB
records, the signal views and the 1-D CNN backbone."""

import numpy as np
import pytest
import torch

from selfsup.config import load_experiment
from selfsup.data.splits import DataError
from selfsup.modalities import load_dataset
from tests.unit.test_config import error_of, write
from selfsup.data.signals import WFDBRecords, mnist1d, signal_npz, ucr, wfdb_folder
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


def write_records(root, n=6, fs=500, seconds=2, leads=("I", "II", "V1"), sub="a"):
    """``n`` WFDB records (format 16) of ``leads``: record i is a sine of 1 + i % 2 Hz; the first
    half in ``root/sub``. Returns the labels CSV (record, label: slow | fast)."""
    import wfdb

    t = np.arange(fs * seconds) / fs
    rows = ["record,label"]
    for i in range(n):
        folder = root / sub if i < n // 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        sig = np.stack([np.sin(2 * np.pi * (1 + i % 2) * t + k) for k in range(len(leads))], axis=1)
        wfdb.wrsamp(f"r{i}", fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig, fmt=["16"] * len(leads), write_dir=str(folder))
        rows.append(f"{sub + '/' if i < n // 2 else ''}r{i},{'slow' if i % 2 == 0 else 'fast'}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


def test_wfdb_records_with_labels(tmp_path):
    labels = write_records(tmp_path / "db")
    d = wfdb_folder(str(tmp_path / "db"), labels=str(labels), test_fraction=0.34)
    assert d.shape == (3, 1000) and len(d.train.x) + len(d.test.x) == 6
    assert sorted(torch.cat([d.train.y, d.test.y]).tolist()) == [0, 0, 0, 1, 1, 1]  # fast, slow sorted
    t = np.arange(1000) / 500
    for x, y in zip(d.train.x, d.train.y):  # the label follows its own record: fast is 2 Hz, slow 1 Hz
        f = 2 if y == 0 else 1
        assert np.allclose(x[0].numpy(), np.sin(2 * np.pi * f * t), atol=1e-3)


def test_wfdb_leads_resampling_length_and_streaming(tmp_path):
    write_records(tmp_path)
    d = wfdb_folder(str(tmp_path), length=300, rate=250, leads=["V1", "I"], stream=True)
    assert isinstance(d.train.x, WFDBRecords) and d.shape == (2, 300) and d.has_labels is False
    x = d.train.x[[0, 1]]
    assert x.shape == (2, 2, 300)
    full = wfdb_folder(str(tmp_path), rate=250, leads=["V1", "I"])
    assert full.shape == (2, 500)  # 2 s at 250 Hz: the records' own length after resampling
    assert torch.allclose(full.train.x[0, :, :300], d.train.x[0], atol=1e-6)
    padded = wfdb_folder(str(tmp_path), length=1200)
    assert torch.all(padded.train.x[:, :, 1000:] == 0) and padded.train.x[:, :, :1000].abs().sum() > 0


def test_wfdb_errors_name_the_record(tmp_path):
    labels = write_records(tmp_path)
    with pytest.raises(DataError, match="r0.hea: no lead 'V6' \\(leads: I, II, V1\\)"):
        wfdb_folder(str(tmp_path), leads=["V6"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no WFDB records"):
        wfdb_folder(str(tmp_path / "empty"))
    write_records(tmp_path / "more", n=1, seconds=3, sub="b")
    with pytest.raises(DataError, match="r0.hea: 1500 samples, the first record has 1000; set data.signal_length"):
        wfdb_folder(str(tmp_path))
    assert wfdb_folder(str(tmp_path), length=1000).shape == (3, 1000)
    write_records(tmp_path / "two", n=1, leads=("I", "II"), sub="c")
    with pytest.raises(DataError, match="r0.hea: 2 channels, the first record has 3; set data.leads"):
        wfdb_folder(str(tmp_path), length=1000)
    with pytest.raises(DataError, match="labels.csv: no label for record 'more/r0'"):
        wfdb_folder(str(tmp_path), length=1000, leads=["I"], labels=str(labels))
    (tmp_path / "bad.hea").write_text("this is not a header\n")
    with pytest.raises(DataError, match="bad.hea: not a WFDB header"):
        wfdb_folder(str(tmp_path), length=1000, leads=["I"])


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["data.name=mnist1d", "model.backbone=cnn"], "model.backbone 'cnn' does not suit 'mnist1d' data; use one of cnn1d, mlp, vit1d"),
        (["model.backbone=cnn1d"], "model.backbone 'cnn1d' does not suit 'digits' data"),
        (["data.name=mnist1d", "model.backbone=cnn1d", "data.views=byol"], "data.views 'byol' is not for signals ('mnist1d'); signals take 'signal', 'none' (or auto)"),
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
