"""Images ``(C, H, W)``: scikit-learn's digits, CIFAR, ``.npz`` arrays and folders of image files
(loaders in ``selfsup.data.datasets``); the methods' own paper recipes (``selfsup.data.views``),
per sample with torchvision or batched on the device; conv nets, MLPs, timm models and ScatSimCLR's
scattering network; I-JEPA's multi-block and MAE's random masks over a ViT's 2-D patch grid
(``selfsup.data.masks``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from selfsup.data import datasets, shards
from selfsup.data.masks import MultiBlockMasks, RandomPatchMasks, register_masks
from selfsup.data.views import RECIPES, build_views
from selfsup.modalities.base import Dataset, Modality, register
from selfsup.models.backbones import backbone
from selfsup.models.eager import eager


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
    backbones = ("cnn", "mlp", "timm", "scatnet")
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
    model_fields = {
        "scat_scales": (int, Field(2, ge=1)),
        "scat_angles": (int, Field(8, ge=1)),
    }

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


class ResBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN, ReLU, a 1x1 conv-BN shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                                  nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ScatNet(nn.Module):
    """ScatSimCLR's encoder (Kinakh et al. 2021, https://arxiv.org/abs/2108.13939; reference
    vkinakh/scatsimclr, ``src/models/scatnet_simclr.py``): a fixed scattering transform (Mallat
    2012; kymatio's ``Scattering2D``: ``J`` scales, ``L`` angles, order 2, each channel on its own:
    ``C (1 + J L + L^2 J (J - 1) / 2)`` maps of ``(H / 2^J, W / 2^J)``), BatchNorm over those maps,
    and a small trainable adapter: a 3x3 conv-BN-ReLU onto ``width`` channels, ``depth`` residual
    blocks at ``2 width``, ``depth`` more at ``embed_dim``, a global average pool ``(B, embed_dim)``.
    ``width`` 32, ``depth`` 4 and ``embed_dim`` 128 are the reference's ``scatsimclr8`` adapter; it
    pools to 4x4 and flattens (2048 values), the global pool here keeps the width ``embed_dim``."""

    def __init__(self, in_shape: tuple[int, ...], embed_dim: int, width: int, depth: int, scales: int, angles: int):
        super().__init__()
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D  # kymatio.torch imports its 3-D part, which today's SciPy breaks

        c, h, w = in_shape
        if min(h, w) < 2**scales:
            raise ValueError(f"model.scat_scales {scales}: the scattering transform halves {h}x{w} images {scales} times; use fewer scales")
        self.scattering = ScatteringTorch2D(J=scales, shape=(h, w), L=angles, max_order=2)
        maps = c * (1 + scales * angles + angles**2 * scales * (scales - 1) // 2)
        layers = [nn.BatchNorm2d(maps), nn.Conv2d(maps, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for c_out in (2 * width, embed_dim):
            layers += [ResBlock(width if c_out == 2 * width else 2 * width, c_out)] + [ResBlock(c_out, c_out) for _ in range(depth - 1)]
        self.adapter = nn.Sequential(*layers)
        self.embed_dim = embed_dim

    @eager
    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed scattering maps ``(B, C * maps, H / 2^J, W / 2^J)``, in float32 (complex FFTs:
        no autocast, no compiled graph)."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            s = self.scattering(x.float().contiguous())  # kymatio refuses channels-last tensors
        return s.flatten(1, 2)

    def forward(self, x):
        return self.adapter(self.scatter(x)).mean(dim=(2, 3))


@backbone("scatnet", "ScatSimCLR's encoder: a fixed scattering transform (kymatio; model.scat_scales, model.scat_angles) and a residual adapter")
def _scatnet(in_shape, embed_dim, width, depth, scat_scales=2, scat_angles=8, **_):
    return ScatNet(in_shape, embed_dim, width, depth, scat_scales, scat_angles)
