"""Images ``(C, H, W)``: scikit-learn's digits, CIFAR, ``.npz`` arrays and folders of image files
(loaders in ``selfsup.data.datasets``); the methods' own paper recipes (``selfsup.data.views``),
per sample with torchvision or batched on the device; conv nets, MLPs and timm models; I-JEPA's
multi-block and MAE's random masks over a ViT's 2-D patch grid (``selfsup.data.masks``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from selfsup.data import datasets, shards
from selfsup.data.masks import MultiBlockMasks, RandomPatchMasks, register_masks
from selfsup.data.views import RECIPES, build_views
from selfsup.modalities.base import Dataset, Modality, register


register_masks("blocks", 2)(MultiBlockMasks)
register_masks("random", 2)(RandomPatchMasks)


def _resized(data, size: int | None):
    return datasets.resized(data, size) if size else data


@register
class Image(Modality):
    name, plural, sample = "image", "images", "(C, H, W)"
    datasets = {
        "digits": Dataset("scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes, fixed 80/20 split",
                          lambda a: _resized(datasets.digits(a["test_fraction"], a["split_seed"]), a["image_size"]), path="none"),
        "npz": Dataset("your arrays: data.path -> .npz with x (N,H,W)|(N,C,H,W), optional y, x_test, y_test",
                       lambda a: _resized(datasets.npz(a["path"], a["test_fraction"], a["split_seed"]), a["image_size"])),
        "folder": Dataset("your images: data.path (a folder, or s3://, gs://, ...) -> class subfolders (or none: unlabelled), optional train/ and val/ or test/",
                          lambda a: datasets.folder(a["path"], a["image_size"] or 32, a["test_fraction"], a["split_seed"], a["stream"],
                                                    a["on_bad_file"]), streams=True),
        "shards": Dataset("image shards: data.path -> WebDataset .tar (key.jpg|png + key.cls) or Parquet (image bytes, label) "
                          "shards, one or a folder or bucket prefix of them (s3://, gs://, ...); selfsup shard writes them",
                          lambda a: shards.read_shards(a["path"], a["image_size"] or 32, a["test_fraction"], a["split_seed"], a["stream"],
                                                       a["on_bad_file"]), streams=True),
        "cifar10": Dataset("CIFAR-10 python pickles at data.path (data_batch_1..5, test_batch), 32x32 RGB, 10 classes",
                           lambda a: _resized(datasets.cifar(a["path"], 10), a["image_size"])),
        "cifar100": Dataset("CIFAR-100 python pickles at data.path (train, test), 32x32 RGB, 100 fine classes",
                            lambda a: _resized(datasets.cifar(a["path"], 100), a["image_size"])),
    }
    recipes = {k: RECIPES[k] for k in ("light", "simclr", "byol", "dino", "crop", "mae", "none")}
    augmentation = "light"
    device_views = True
    backbones = ("cnn", "mlp", "timm")
    fields = {
        "image_size": (int | None, Field(None, ge=4)),
        "crop_ratio": (tuple[float, float], (0.75, 1.3333)),
        "flip": (bool | None, None),
        "color_strength": (float, Field(1.0, ge=0.0)),
        "local_crops": (int, Field(6, ge=0)),
        "local_scale": (tuple[float, float], (0.05, 0.4)),
        "local_size": (int | None, Field(None, ge=2)),
    }
    keys = ("image_size",)
    loads = ("image_size",)

    def check(self, data) -> None:
        if not 0.0 < data.local_scale[0] <= data.local_scale[1] <= 1.0:
            raise ValueError(f"local_scale must satisfy 0 < low <= high <= 1, got {data.local_scale}")
        if not 0.0 < data.crop_ratio[0] <= data.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {data.crop_ratio}")

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        return build_views(recipe, data.shape, n_views, cfg.crop_scale, cfg.crop_ratio, cfg.flip, cfg.noise_std, cfg.color_strength,
                           local_crops, cfg.local_scale, cfg.local_size, batched=batched)

    def fake(self, cfg, root: Path) -> str:
        """Two class folders of two random 32x32 RGB PNGs."""
        from PIL import Image as PIL

        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                PIL.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
        return str(root)
