"""The body-worn sensors modality (``selfsup.modalities.sensors``) and its method: generated activity
windows (balanced, repeatable, hard for raw samples), aeon's Daphnet recording (unlabelled, split in
time) and BasicMotions as two devices, ``.npz`` windows; the rotation views and the shared device
encoder; ColloSSL's MMD, loss and device selection by hand; ColloSSL and VICReg learning activities
above the raw samples' probe and the network at initialisation."""

import math

import numpy as np
import pytest
import torch

from selfsup.config import ConfigError, ExperimentConfig, load_experiment
from selfsup.data.splits import DataError
from selfsup.data.views import SignalViews, Unchanged
from selfsup.methods import build_method
from selfsup.methods.collossl import SIGMAS, collossl_loss, device_distances, mmd
from selfsup.modalities import load_dataset
from selfsup.modalities.sensors import SensorViews, basicmotions, daphnet, rotations, sensor_npz, synthetic_activities
from selfsup.models.backbones import build_backbone
from tests.unit.learning import learn, raw_probe


@pytest.fixture(scope="module")
def activities():
    return synthetic_activities(n=800)



def test_synthetic_activities_are_balanced_repeatable_and_hard_for_raw_samples(activities):
    assert activities.shape == (4, 3, 128) and len(activities.train.x) == 640
    assert torch.cat([activities.train.y, activities.test.y]).bincount().tolist() == [200] * 4
    assert torch.equal(synthetic_activities(n=8).train.x, synthetic_activities(n=8).train.x)
    assert not torch.equal(synthetic_activities(n=8, split_seed=1).train.x, synthetic_activities(n=8).train.x)
    standing = activities.train.x[activities.train.y == 0]
    assert float(standing.mean(-1).norm(dim=-1).mean()) == pytest.approx(1.0, abs=0.05)  # gravity, whichever way a device is worn
    assert raw_probe(activities) < 0.4  # random orientations hide the motion's axes


def test_bundled_daphnet_and_basicmotions():
    d = daphnet()
    assert d.shape == (3, 3, 128) and not d.has_labels and (len(d.train.x), len(d.test.x)) == (173, 41)
    assert float(d.train.x[:, :, 1].mean()) == pytest.approx(1.0, abs=0.2)  # the vertical axes read about 1 g
    assert len(daphnet(window=64, stride=64).train.x) == 88
    with pytest.raises(DataError, match="daphnet: data.window 2000 is longer than the 1408 samples of a split"):
        daphnet(window=2000)
    b = basicmotions()
    assert b.shape == (2, 3, 100) and (len(b.train.x), len(b.test.x)) == (40, 40) and sorted(set(b.train.y.tolist())) == [0, 1, 2, 3]


def test_sensor_npz_and_its_errors(tmp_path):
    np.savez(tmp_path / "w.npz", x=np.random.rand(10, 3, 6, 32), y=np.arange(10) % 2)
    d = sensor_npz(str(tmp_path / "w.npz"))
    assert d.shape == (3, 6, 32) and len(d.train.x) == 8 and d.has_labels
    np.savez(tmp_path / "bad.npz", x=np.random.rand(10, 6, 32))
    with pytest.raises(DataError, match=r"bad.npz: x: expected \(N, devices, C, T\), got float64 \(10, 6, 32\)"):
        load_dataset("sensor_npz", str(tmp_path / "bad.npz"))


def test_rotation_views_keep_each_triplets_magnitude_and_one_crop_for_every_device():
    torch.manual_seed(0)
    r = rotations(50)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(50, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(50), atol=1e-5)
    x = torch.randn(4, 2, 7, 16)  # two triplets (an accelerometer, a gyroscope) and one more channel per device
    (v,) = SensorViews(SignalViews((1.0, 1.0), (1.0, 1.0), 0.0, 0.0, 1))(x)
    for g in (slice(0, 3), slice(3, 6)):
        assert torch.allclose(v[:, :, g].norm(dim=2), x[:, :, g].norm(dim=2), atol=1e-4)
    assert torch.allclose(v[:, :, 6], x[:, :, 6], atol=1e-5) and not torch.allclose(v, x, atol=1e-3)
    ramp = torch.linspace(0, 1, 16).expand(4, 2, 3, 16).contiguous()
    (cropped,) = SensorViews(SignalViews((0.5, 0.5), (1.0, 1.0), 0.0, 0.0, 1))(ramp)
    norms = cropped.norm(dim=2)  # rotations keep |(t, t, t)|: what is left is the crop
    assert torch.allclose(norms[:, 0], norms[:, 1], atol=1e-5) and not torch.allclose(norms, ramp.norm(dim=2), atol=1e-3)


def test_the_device_encoder_is_shared_by_the_devices():
    net = build_backbone("device_cnn", (3, 3, 32), 16, 8, 2).eval()
    x = torch.randn(2, 3, 3, 32)
    per = net.devices(x)
    assert per.shape == (2, 3, 16) and torch.allclose(net(x), per.mean(1), atol=1e-6)
    assert torch.allclose(net.devices(x[:, [2, 0, 1]]), per[:, [2, 0, 1]], atol=1e-6)
    assert build_backbone("fused_cnn", (3, 3, 32), 16, 8, 2)(x).shape == (2, 16)


def test_mmd_and_the_collossl_loss_by_hand():
    """One point against another 1 apart: the kernels' sums are 12 on the diagonal and
    ``sum_s exp(-1 / (2 s))`` across, so MMD = 24 - 2 of that; a sample against itself is the floor.
    One positive at cosine 1 and one negative at 0, temperature 1: log(1 + e^-1); the negative weighted
    a half: log(e + 1/2) - 1."""
    assert float(mmd(torch.zeros(1, 1), torch.ones(1, 1))) == pytest.approx(24 - 2 * sum(math.exp(-1 / (2 * s)) for s in SIGMAS), rel=1e-5)
    assert float(mmd(torch.ones(5, 3), torch.ones(5, 3))) == pytest.approx(1e-4)
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert float(collossl_loss(e1, e1[None], torch.ones(1), e2[None], torch.ones(1), 1.0)) == pytest.approx(math.log(1 + math.exp(-1)))
    assert float(collossl_loss(e1, e1[None], torch.ones(1), e2[None], torch.tensor([0.5]), 1.0)) == pytest.approx(math.log(math.e + 0.5) - 1)
    d = device_distances(torch.randn(16, 3, 3, 20))
    assert torch.equal(d, d.T) and torch.all(d.diagonal() == 0) and torch.all(d + torch.eye(3) > 0)


def test_collossl_takes_the_closest_device_as_positive_and_every_device_shuffled_as_negatives():
    """Device distances from the anchor 0: device 2 at 0.1 (the positive), device 1 at 0.5; the
    negatives are devices 0, 1 and 2 at the shuffled moments, weighted 1 / distance (the anchor's own
    distance half the smallest, 0.05), all weights over the largest (20)."""
    torch.manual_seed(0)
    method = build_method("collossl", build_backbone("device_cnn", (3, 3, 16), 8, 4, 2), temperature=0.5)
    method.distance.copy_(torch.tensor([[0.0, 0.5, 0.1], [0.5, 0.0, 0.3], [0.1, 0.3, 0.0]]))
    x = torch.randn(6, 3, 3, 16)
    shuffles = torch.stack([torch.randperm(6) for _ in range(3)])
    with torch.no_grad():
        got = method({"views": [x], "anchor": torch.tensor([0]), "shuffles": shuffles})["loss"]
    z = torch.nn.functional.normalize(method.backbone.devices(x), dim=-1)
    negatives = torch.stack([z[shuffles[c], c] for c in range(3)])
    expected = collossl_loss(z[:, 0], z[None, :, 2], torch.tensor([1 / 20]), negatives, torch.tensor([20, 2, 10]) / 20, 0.5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    method.eval()
    one = method.view_embed(x)  # LiDAR's view of a window: one of its devices
    per = method.backbone.devices(x)
    assert all(any(torch.allclose(one[i], per[i, d], atol=1e-6) for d in range(3)) for i in range(6))
    with pytest.raises(ValueError, match=r"method.anchor 3 is not one of the windows' 3 devices \(0 .. 2\)"):
        build_method("collossl", build_backbone("device_cnn", (3, 3, 16), 8, 4, 2), anchor=3)


def test_a_sensors_config_checks_its_keys(tmp_path):
    cfg = ExperimentConfig.model_validate({"name": "s", "data": {"name": "daphnet", "window": 64}, "model": {"backbone": "device_cnn"},
                                           "method": {"name": "collossl"}})
    assert cfg.data.kind.name == "sensors" and cfg.data.views == "auto"
    (tmp_path / "x.yaml").write_text("name: s\ndata: {name: synthetic_activities, window: 64}\nmodel: {backbone: device_cnn}\n")
    with pytest.raises(ConfigError, match="data.window applies to data.name 'daphnet' only"):
        load_experiment(tmp_path / "x.yaml")
    (tmp_path / "y.yaml").write_text("name: s\ndata: {name: synthetic_activities}\nmodel: {backbone: fused_cnn}\nmethod: {name: collossl}\n")
    with pytest.raises(ConfigError, match="method 'collossl' needs model.backbone device_cnn"):
        load_experiment(tmp_path / "y.yaml")


DEVICE_CNN = dict(name="device_cnn", embed_dim=64, width=16, depth=3)


def test_collossl_learns_activities_from_other_devices_at_the_same_moment(activities):
    """No augmentation: the other devices' windows of the same moment as positives (the closest by
    MMD, measured on the training set before training), every device's at other moments as
    negatives. The probe rises above the raw samples' and the network at initialisation (about 0.79
    against 0.29 and 0.69) and the loss falls."""
    before, after, losses = learn("collossl", activities, {}, 6, DEVICE_CNN, Unchanged(1))
    assert after["probe/linear_acc"] > raw_probe(activities) + 0.3 and after["probe/linear_acc"] > before["probe/linear_acc"] + 0.05
    assert after["label_free/rankme"] > 4 and losses[-1] < 0.85 * losses[0]


def test_vicreg_learns_activities_from_rotated_views(activities):
    """Two views, each device's axes turned at random: the probe rises above the raw samples' and the
    network at initialisation (about 0.86 against 0.29 and 0.69)."""
    before, after, losses = learn("vicreg", activities, dict(projector=[128, 128]), 6, DEVICE_CNN, SensorViews(SignalViews((1.0, 1.0), n_views=2)))
    assert after["probe/linear_acc"] > raw_probe(activities) + 0.3 and after["probe/linear_acc"] > before["probe/linear_acc"] + 0.05
    assert after["label_free/rankme"] > 4 and losses[-1] < losses[0]
