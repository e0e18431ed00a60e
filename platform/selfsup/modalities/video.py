"""Video clips ``(C, T, H, W)``: moving digits made offline, ``.npz`` clips and folders of video
files (loaders in ``selfsup.data.videos``); temporally consistent views and temporal crops
(``selfsup.data.clip_views``); a video ViT over tubelets, a small 3-D conv net and torchvision's
video ResNets (``selfsup.models.video``); VideoMAE's tube masks and V-JEPA's spatio-temporal
blocks over the ViT's ``(T, H, W)`` token grid (``selfsup.data.masks``).

``data.clip_frames`` frames (16) at ``data.frame_stride`` (1) make a sample, ``data.frame_size``
its side (moving digits: 32, video files: 112); the ``video`` recipe's temporal crops take
``data.view_frames`` of them (half the clip). ``model.tubelet`` (2) is the ViT's tubelet length
in frames, ``model.patch_size`` (16) its side; ``model.video_resnet`` picks the video ResNet.
Methods made for any data take the ``video`` recipe here (two temporal crops: SimCLR, VICReg,
BYOL, ...), methods that see one view (MAE, I-JEPA) the ``clip`` recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from selfsup.data import shards, videos
from selfsup.data.clip_views import ClipViews
from selfsup.data.masks import SpatioTemporalBlocks, TubeMasks, register_masks
from selfsup.data.views import Unchanged
from selfsup.modalities.base import Dataset, Modality, register
from selfsup.models.backbones import backbone
from selfsup.models.video import SmallCNN3d, VideoResNet, ViT3d

register_masks("blocks", 3)(SpatioTemporalBlocks)
register_masks("random", 3)(TubeMasks)

SHAPING = ("clip_frames", "frame_stride", "frame_size")
"""The ``data:`` keys that shape the clips of a generated or decoded dataset (not of an ``.npz``)."""


@backbone("vit3d", "video ViT: tubelets of model.tubelet frames x model.patch_size pixels, 3-D sine-cosine positions (VideoMAE, V-JEPA)",
          transformer=True, patches=True)
def _vit3d(in_shape, embed_dim, depth, heads, patch_size, tubelet=None, **_):
    return ViT3d(in_shape, embed_dim, depth, heads, patch_size or 16, tubelet or 2)


@backbone("cnn3d", "small 3-D conv net for clips: conv-BN-ReLU blocks (3x3x3), stride-2, global average pool")
def _cnn3d(in_shape, embed_dim, width, depth, **_):
    return SmallCNN3d(in_shape[0], embed_dim, width, depth)


@backbone("video_resnet", "torchvision's video ResNets (model.video_resnet: r3d_18, mc3_18, r2plus1d_18), random init, 512-wide features")
def _video_resnet(in_shape, video_resnet=None, **_):
    return VideoResNet(video_resnet or "r3d_18", in_shape[0])


def _shaped(a: dict, size: int) -> dict:
    return {"clip_frames": a["clip_frames"] or 16, "frame_stride": a["frame_stride"] or 1, "frame_size": a["frame_size"] or size}


@register
class Video(Modality):
    name, plural, sample = "video", "videos", "(C, T, H, W)"
    datasets = {
        "moving_digits": Dataset("scikit-learn's 1,797 digits moving and bouncing on a 32x32 canvas, 16-frame clips, 10 classes (made offline)",
                                 lambda a: videos.moving_digits(**_shaped(a, 32), test_fraction=a["test_fraction"], split_seed=a["split_seed"]),
                                 path="none"),
        "video_npz": Dataset("your clips: data.path -> .npz with x (N,T,H,W)|(N,C,T,H,W), optional y, x_test, y_test",
                             lambda a: videos.video_npz(a["path"], a["test_fraction"], a["split_seed"])),
        "video_folder": Dataset("your videos (mp4, avi, mkv, webm, ...): data.path (a folder, or s3://, ...) -> class subfolders (or none), decoded with PyAV",
                                lambda a: videos.video_folder(a["path"], **_shaped(a, 112), test_fraction=a["test_fraction"],
                                                              split_seed=a["split_seed"], stream=a["stream"], on_bad_file=a["on_bad_file"]),
                                streams=True),
        "video_shards": Dataset("video shards: data.path -> WebDataset .tar (key.mp4|avi|... + key.cls) or Parquet (video bytes, label) shards, "
                                "one or a folder or bucket prefix of them (s3://, gs://, ...); selfsup shard writes them",
                                lambda a: shards.read_shards(a["path"], test_fraction=a["test_fraction"], split_seed=a["split_seed"],
                                                             stream=a["stream"], on_bad_file=a["on_bad_file"], clip=tuple(_shaped(a, 112).values())),
                                streams=True),
    }
    recipes = {
        "video": "clips: two temporal crops (CVRL's interval sampling), crop, flip and colour jitter alike on every frame",
        "clip": "clips: the whole clip, crop, flip and colour jitter alike on every frame (VCOP, MAE, I-JEPA)",
        "none": "no augmentation: the samples as they are",
    }
    default_recipes = ("video", "clip", "none")
    augmentation = "clip"
    backbones = ("vit3d", "cnn3d", "video_resnet")
    fields = {
        "clip_frames": (int | None, Field(None, ge=1)),
        "frame_stride": (int | None, Field(None, ge=1)),
        "frame_size": (int | None, Field(None, ge=4)),
        "view_frames": (int | None, Field(None, ge=1)),
    }
    keys = (*SHAPING, "view_frames")
    loads = SHAPING
    model_fields = {
        "tubelet": (int | None, Field(None, ge=1)),
        "video_resnet": (Literal[VideoResNet.ARCHS] | None, None),
    }

    def method_recipes(self, method) -> tuple[str, ...]:
        """A method made for videos takes its own; one that sees a single view (MAE, I-JEPA) the
        whole clip (its token grid is the clip's); the others two temporal crops."""
        if method.modality == self.name:
            return method.recipes
        return ("clip", "none") if method.n_views == 1 else self.default_recipes

    def check(self, data) -> None:
        if data.name == "video_npz":
            for key in SHAPING:
                if getattr(data, key) is not None:
                    raise ValueError(f"data.{key} shapes generated and decoded clips, not data.name 'video_npz' (its clips are as stored)")
        if data.view_frames is not None and data.view_frames > (data.clip_frames or 16):
            raise ValueError(f"data.view_frames {data.view_frames} exceeds the clip's {data.clip_frames or 16} frames (data.clip_frames)")

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        if recipe == "none":
            return Unchanged(n_views)
        frames = (cfg.view_frames or max(1, data.shape[1] // 2)) if recipe == "video" else None
        flip = True if cfg.flip is None else cfg.flip
        return ClipViews(n_views, frames, cfg.crop_scale or (0.3, 1.0), cfg.crop_ratio, flip, cfg.color_strength)

    def fake(self, cfg, root: Path) -> str:
        """Two class folders of two 8-frame 32x32 MPEG-4 videos (random colours)."""
        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                videos.write_video(root / c / f"{i}.mp4", rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8))
        return str(root)
