"""Several body-worn sensors ``(devices, C, T)`` (human activity recognition): the whole modality in
this file. A sample is one time window seen by every device at once (an ankle, a thigh, a wrist
accelerometer...), ``C`` channels each (x, y, z; an accelerometer's first), time-aligned across the
devices.

Datasets:

- ``synthetic_activities``: generated offline, deterministic by ``data.split_seed``. Four devices
  (ankle, thigh, trunk, wrist; 3-axis accelerometers in g) worn by a person standing, walking,
  running or cycling, 4 s windows at 32 Hz (``T = 128``): gravity plus each device's periodic motion
  at the activity's cadence (overlapping ranges: a brisk walk is as fast as a slow run), its amplitude
  and shape per device and activity (a running ankle swings hard, a cycling ankle circles, a
  cycling wrist barely moves) times the person's vigour (0.5-1.5), every device mounted at a
  random orientation, with noise of random strength; the label is the activity. The orientation hides the motion's axes
  from raw samples; the cadence and the devices' amplitudes, which any rotation keeps, tell the
  activities apart.
- ``daphnet``: aeon's bundled Daphnet recording ``S06R02E0`` (a person with Parkinson's disease
  walking; ankle, thigh and trunk 3-axis accelerometers at 64 Hz, 110 s), in g, as windows of
  ``data.window`` samples (128) every ``data.window_stride`` (32). Its freezing-of-gait annotations
  are all zero in this recording, so it loads unlabelled; the last ``test_fraction`` of the
  recording is the test split (overlapping windows of one recording would leak across a random one).
- ``basicmotions``: aeon's bundled BasicMotions (a smart watch's accelerometer and gyroscope, 10 s at
  10 Hz, while standing, walking, running or playing badminton; 40 + 40 recordings) as two devices
  of 3 channels.
- ``sensor_npz``: your windows in an ``.npz``: ``x`` ``(N, devices, C, T)``, optional ``y``,
  ``x_test``, ``y_test``.

Views (the ``sensors`` recipe): every device's axes turned by a random 3-D rotation (a sensor is
worn at any angle), then the ``signal`` recipe's amplitude scaling by ``data.amplitude_scale``,
jitter ``data.noise_std`` and ``data.channel_dropout``, and a random crop of ``data.crop_scale`` of
the window resampled to ``T`` only when set (it would change the cadence), one crop for all
devices of a window, so the devices stay aligned.

Backbones: ``device_cnn``, the 1-D conv net (``cnn1d``'s) shared by every device: ``(B, D, C, T) ->
(B, D, E)`` per device (:meth:`DeviceCNN.devices`), their mean the window's representation; ``cnn1d``
with the devices' channels side by side (``(B, D * C, T)``, early fusion) is :class:`Fused`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from selfsup.data.signals import ucr
from selfsup.data.splits import DataError, SplitData, npz_splits, numeric_samples, split_arrays, to_split
from selfsup.data.views import SignalViews, Unchanged
from selfsup.modalities.base import Dataset, Modality, register
from selfsup.models.backbones import SmallCNN1d, backbone

ACTIVITIES = ("standing", "walking", "running", "cycling")
DEVICES = ("ankle", "thigh", "trunk", "wrist")
CADENCE = {0: (0.1, 0.4), 1: (1.4, 2.4), 2: (2.1, 3.1), 3: (1.0, 2.0)}
"""Each activity's step (or pedal) rate in Hz."""
SWING = np.array([  # g of periodic motion: rows activities, columns devices (ankle, thigh, trunk, wrist)
    [0.02, 0.02, 0.03, 0.05],
    [0.9, 0.5, 0.25, 0.35],
    [1.8, 1.1, 0.7, 0.8],
    [0.7, 0.6, 0.08, 0.04],
])


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random 3-D rotation matrices ``(n, 3, 3)`` (QR of Gaussian matrices, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def activity_window(kind: int, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """One window ``(4, 3, T)`` of the four devices while doing activity ``kind`` (see the module docstring)."""
    f = rng.uniform(*CADENCE[kind])
    phase, vigour, noise = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5), rng.uniform(0.03, 0.3)
    window = np.empty((len(DEVICES), 3, len(t)), dtype=np.float32)
    for d in range(len(DEVICES)):
        angle = 2 * np.pi * f * t + phase + d * np.pi / 3
        swing = SWING[kind, d] * vigour * rng.uniform(0.7, 1.3)
        if kind == 3 and d < 2:  # pedalling: the leg circles
            motion = np.stack([np.cos(angle), np.zeros_like(t), np.sin(angle)])
        else:  # stepping: a vertical bounce at the cadence, a forward swing at half of it
            motion = np.stack([0.6 * np.sin(angle / 2), 0.2 * np.sin(angle + 1.0), np.abs(np.sin(angle)) - 2 / np.pi])
        signal = np.array([0.0, 0.0, 1.0])[:, None] + swing * motion
        window[d] = random_rotations(1, rng)[0] @ signal + rng.normal(0, noise, size=signal.shape)
    return window


def synthetic_activities(n: int = 1200, length: int = 128, rate: float = 32.0, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """``n`` windows ``(4, 3, length)`` of the four :data:`ACTIVITIES`, balanced (see the module
    docstring); the same ``split_seed`` gives the same windows."""
    rng = np.random.default_rng(split_seed)
    y = np.arange(n) % len(ACTIVITIES)
    rng.shuffle(y)
    t = np.arange(length) / rate
    x = np.stack([activity_window(int(k), rng, t) for k in y])
    (xtr, ytr), (xte, yte) = split_arrays(x, y.astype(np.int64), test_fraction, split_seed)
    return SplitData("synthetic_activities", to_split(xtr, ytr), to_split(xte, yte))


def daphnet(window: int = 128, stride: int = 32, test_fraction: float = 0.2) -> SplitData:
    """aeon's bundled Daphnet recording as windows ``(3, 3, window)`` in g, unlabelled, the last
    ``test_fraction`` of the recording held out (see the module docstring)."""
    import aeon.datasets
    import pandas as pd

    table = pd.read_csv(Path(aeon.datasets.__file__).parent / "data" / "Daphnet_S06R02E0" / "S06R02E0.csv")
    series = table.iloc[:, 1:10].to_numpy(np.float32).T.reshape(3, 3, -1) / 1000.0  # (ankle, thigh, trunk) x (fwd, vert, lateral)
    cut = int(series.shape[-1] * (1 - test_fraction))

    def windows(part: np.ndarray) -> np.ndarray:
        starts = range(0, part.shape[-1] - window + 1, stride)
        if not starts:
            raise DataError(f"daphnet: data.window {window} is longer than the {part.shape[-1]} samples of a split")
        return np.stack([part[..., s:s + window] for s in starts])

    return SplitData("daphnet", to_split(windows(series[..., :cut]), None), to_split(windows(series[..., cut:]), None))


def basicmotions() -> SplitData:
    """aeon's BasicMotions as ``(2, 3, 100)``: the accelerometer and the gyroscope as two devices."""
    d = ucr("BasicMotions")
    devices = lambda x: x.numpy().reshape(len(x), 2, 3, -1)  # noqa: E731  (6 channels: 3 of each sensor)
    return SplitData("basicmotions", to_split(devices(d.train.x), d.train.y.numpy()), to_split(devices(d.test.x), d.test.y.numpy()))


def sensor_npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """Your windows from an ``.npz``: ``x`` ``(N, devices, C, T)`` (optional ``y``, ``x_test``, ``y_test``)."""
    return npz_splits(path, lambda x, where: numeric_samples(x, where, "devices,C,T"), test_fraction, split_seed)


def rotations(n: int) -> torch.Tensor:
    """``n`` uniformly random 3-D rotations ``(n, 3, 3)`` (QR of Gaussian matrices, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    return torch.where((torch.linalg.det(q) < 0)[:, None, None], q * torch.tensor([-1.0, 1.0, 1.0]), q)


class SensorViews:
    """``n_views`` views of a batch ``(B, D, C, T)``: every device's axes turned by a random 3-D
    rotation (each triplet of its channels alike: an accelerometer's and a gyroscope's x, y, z;
    the augmentation Tang et al. 2020, arXiv 2011.11542, found best for activity recognition),
    then :class:`SignalViews` over the devices' channels side by side, so one crop (none by
    default: a crop resampled to the window's length changes the cadence) covers every device."""

    def __init__(self, signal: SignalViews):
        self.signal, self.n_views = signal, signal.n_views

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        b, d, c, t = x.shape
        triplets = c // 3 * 3
        if not triplets:
            return x
        turned = torch.einsum("nij,nkjt->nkit", rotations(b * d).to(x), x[:, :, :triplets].reshape(b * d, c // 3, 3, t))
        return torch.cat([turned.reshape(b, d, triplets, t), x[:, :, triplets:]], dim=2)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, d, c, t = x.shape
        return [self.signal.view(self.rotate(x).reshape(b, d * c, t)).view(b, d, c, t) for _ in range(self.n_views)]


class DeviceCNN(nn.Module):
    """The ``device_cnn`` backbone: one 1-D conv net for every one of the ``n_devices`` devices,
    ``(B, D, C, T) -> (B, E)``, the mean of :meth:`devices`."""

    def __init__(self, devices: int, channels: int, embed_dim: int, width: int, depth: int):
        super().__init__()
        self.net, self.embed_dim, self.n_devices = SmallCNN1d(channels, embed_dim, width, depth), embed_dim, devices

    def devices(self, x: torch.Tensor) -> torch.Tensor:
        """Each device's embedding ``(B, D, E)``."""
        b, d, c, t = x.shape
        return self.net(x.reshape(b * d, c, t)).view(b, d, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.devices(x).mean(dim=1)


class Fused(nn.Module):
    """The ``fused_cnn`` backbone: the devices' channels side by side into one 1-D conv net,
    ``(B, D, C, T) -> (B, E)``."""

    def __init__(self, channels: int, embed_dim: int, width: int, depth: int):
        super().__init__()
        self.net, self.embed_dim = SmallCNN1d(channels, embed_dim, width, depth), embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1, 2))


@backbone("device_cnn", "1-D conv net shared by every device of a window (B, D, C, T): each device's embedding, their mean")
def _device_cnn(in_shape, embed_dim, width, depth, **_):
    return DeviceCNN(in_shape[0], in_shape[1], embed_dim, width, depth)


@backbone("fused_cnn", "1-D conv net over every device's channels side by side (early fusion)")
def _fused_cnn(in_shape, embed_dim, width, depth, **_):
    return Fused(in_shape[0] * in_shape[1], embed_dim, width, depth)


@register
class Sensors(Modality):
    name, plural, sample = "sensors", "sensor windows", "(devices, C, T)"
    datasets = {
        "synthetic_activities": Dataset("1,200 generated 4 s windows of 4 body-worn accelerometers (ankle, thigh, trunk, wrist) "
                                        "at random orientations: standing, walking, running or cycling, 4 classes (made offline; data.samples sets the count)",
                                        lambda a: synthetic_activities(a["samples"] or 1200, test_fraction=a["test_fraction"],
                                                                                 split_seed=a["split_seed"]), path="none", generated=True),
        "daphnet": Dataset("aeon's bundled Daphnet recording: ankle, thigh and trunk accelerometers at 64 Hz, unlabelled, "
                           "windows of data.window samples every data.window_stride",
                           lambda a: daphnet(a["window"], a["window_stride"], a["test_fraction"]), path="none",
                           keys=("window", "window_stride")),
        "basicmotions": Dataset("aeon's bundled BasicMotions: a watch's accelerometer and gyroscope as 2 devices, 4 activities, 40 + 40",
                                lambda a: basicmotions(), path="none"),
        "sensor_npz": Dataset("your windows: data.path -> .npz with x (N, devices, C, T), optional y, x_test, y_test",
                              lambda a: sensor_npz(a["path"], a["test_fraction"], a["split_seed"])),
    }
    recipes = {
        "sensors": "body-worn sensors: a random 3-D rotation of each device's axes, amplitude scaling, jitter",
        "none": "no augmentation: the samples as they are",
    }
    default_recipes = ("sensors", "none")
    augmentation = "sensors"
    backbones = ("device_cnn", "fused_cnn")
    fields = {
        "window": (int, Field(128, ge=2)),
        "window_stride": (int, Field(32, ge=1)),
    }
    loads = ("window", "window_stride")

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        if recipe == "none":
            return Unchanged(n_views)
        return SensorViews(SignalViews(cfg.crop_scale or (1.0, 1.0), cfg.amplitude_scale, cfg.noise_std, cfg.channel_dropout, n_views))

    def fake(self, cfg, root: Path) -> str:
        """An ``.npz`` of 8 + 4 random windows of 3 devices, 6 channels, 128 samples."""
        rng = np.random.default_rng(0)
        path = root / "windows.npz"
        np.savez(path, x=rng.normal(size=(8, 3, 6, 128)).astype(np.float32), x_test=rng.normal(size=(4, 3, 6, 128)).astype(np.float32))
        return str(path)

