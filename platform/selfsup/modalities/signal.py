"""Signals ``(C, T)``: MNIST-1D, aeon's bundled UCR/UEA sets, ``.npz`` arrays and WFDB records such
as ECGs (loaders in ``selfsup.data.signals``); the batched ``signal`` recipe; 1-D conv nets, MLPs
and the time-patch ViT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from selfsup.data import signals
from selfsup.data.views import RECIPES, build_views
from selfsup.modalities.base import Dataset, Modality, register

def _wfdb(a: dict):
    return signals.wfdb_folder(a["path"], a["signal_length"], a["sampling_rate"], a["leads"], a["labels"], test_fraction=a["test_fraction"], split_seed=a["split_seed"],
                               stream=a["stream"], on_bad_file=a["on_bad_file"])


@register
class Signal(Modality):
    name, plural, sample = "signal", "signals", "(C, T)"
    datasets = {
        "mnist1d": Dataset("MNIST-1D regenerated offline (mnist1d package): 5,000 signals of length 40, 10 classes",
                           lambda a: signals.mnist1d(), path="none"),
        "ucr": Dataset("a UCR/UEA set bundled with aeon, data.path = its name (GunPoint, ArrowHead, BasicMotions, ...)",
                       lambda a: signals.ucr(a["path"]), path="name"),
        "signal_npz": Dataset("your signals: data.path -> .npz with x (N,T)|(N,C,T), optional y, x_test, y_test",
                              lambda a: signals.signal_npz(a["path"], a["test_fraction"], a["split_seed"])),
        "wfdb": Dataset("your WFDB records (e.g. ECG): data.path (a folder, or s3://, gs://, ...) -> .hea + signal files, optional data.labels CSV",
                        _wfdb, streams=True, keys=("signal_length", "sampling_rate", "leads", "labels")),
    }
    recipes = {k: RECIPES[k] for k in ("signal", "none")}
    default_recipes = ("signal",)
    augmentation = "signal"
    backbones = ("cnn1d", "mlp", "vit1d")
    loads = ("signal_length", "sampling_rate", "leads", "labels")
    fields = {
        "amplitude_scale": (tuple[float, float], (0.8, 1.25)),
        "channel_dropout": (float, Field(0.0, ge=0.0, lt=1.0)),
        "signal_length": (int | None, Field(None, ge=2)),
        "sampling_rate": (float | None, Field(None, gt=0.0)),
        "leads": (list[str] | None, Field(None, min_length=1)),
        "labels": (str | None, None),
    }

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        return build_views(recipe, data.shape, n_views, cfg.crop_scale, noise_std=cfg.noise_std, amplitude=cfg.amplitude_scale,
                           channel_dropout=cfg.channel_dropout)

    def fake(self, cfg, root: Path) -> str:
        """Three WFDB records of the config's leads, length and rate (random values)."""
        import wfdb

        leads, n = cfg.leads or ["I"], cfg.signal_length or 100
        for i in range(3):
            wfdb.wrsamp(f"r{i}", fs=cfg.sampling_rate or 100, units=["mV"] * len(leads), sig_name=leads,
                        p_signal=np.random.default_rng(i).normal(size=(n, len(leads))), fmt=["16"] * len(leads), write_dir=str(root))
        return str(root)
