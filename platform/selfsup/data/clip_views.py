"""Views of video clips ``(B, C, T, H, W)``, made at collate time as batched tensor ops.

Every spatial transform is drawn once per clip and applied alike to each of its frames (a
*temporally consistent* augmentation: CVRL's finding, Qian et al., "Spatiotemporal Contrastive
Video Representation Learning", CVPR 2021, https://arxiv.org/abs/2008.03800, sec. 3.2, is that
frame-by-frame augmentation breaks the motion the network should learn from):

- random resized crop (area ``scale``, aspect ``ratio``) and horizontal flip, one affine map per
  clip (``grid_sample`` over the clip's ``C * T`` planes), back to ``H x W``;
- colour jitter with probability 0.8 (brightness, contrast, saturation by ``0.4 s``, ``s`` =
  ``data.color_strength``; CVRL's hue jitter is left out: a batched hue rotation costs more than
  the rest together) and grayscale with probability 0.2, one draw per clip, on RGB clips;
- temporal crops (``frames`` set): each view is a run of ``frames`` consecutive frames; two views
  of a clip start ``interval`` frames apart, ``interval = round(k * (T - frames))`` with ``k``
  drawn from the density ``2 (1 - k)`` on ``[0, 1]`` (CVRL's linearly decreasing temporal
  interval sampling; reference ``sample_ssl_sequence`` in tensorflow/models
  ``official/projects/video_ssl/ops/video_ssl_preprocess_ops.py``, which inverts the same CDF by
  bisection), the earlier start uniform and the order of the two random.

Recipes (``selfsup.modalities.video``): ``video`` (temporal crops + spatial augmentation: CVRL's,
and SimCLR's, VICReg's and BYOL's on clips), ``clip`` (the whole clip, spatial augmentation only:
VCOP's, MAE's and I-JEPA's), ``none``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.data.batch_views import crop_theta


def interval_starts(batch: int, length: int, frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Start frames ``(B, 2)`` of two runs of ``frames`` in clips of ``length`` frames: their distance
    drawn with density decreasing linearly to 0 at the longest possible (CVRL), in random order."""
    room = length - frames
    u = torch.rand(batch, 3, generator=generator)
    interval = torch.round((1 - torch.sqrt(1 - u[:, 0])) * room)
    first = torch.floor(u[:, 1] * (room - interval + 1)).clamp(max=room - interval)
    starts = torch.stack([first, first + interval], dim=1)
    swap = u[:, 2] < 0.5
    starts[swap] = starts[swap].flip(1)
    return starts.long()


def take_frames(x: torch.Tensor, start: torch.Tensor, frames: int) -> torch.Tensor:
    """``x[b, :, start[b] : start[b] + frames]`` for every clip: ``(B, C, T, H, W) -> (B, C, frames, H, W)``."""
    idx = start[:, None] + torch.arange(frames)[None]  # (B, frames)
    return x[torch.arange(x.shape[0])[:, None], :, idx].permute(0, 2, 1, 3, 4)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation factors in ``[1 - 0.4 s, 1 + 0.4 s]`` with probability
    0.8, then grayscale with probability 0.2, one draw per clip of ``(B, 3, T, H, W)``."""
    b = x.shape[0]
    u = torch.rand(b, 5, generator=generator).to(x)
    shape = (b, 1, 1, 1, 1)
    jitter = (u[:, 3] < 0.8).view(shape)
    factor = lambda k: (1 + 0.4 * strength * (2 * u[:, k] - 1)).view(shape)  # noqa: E731
    out = (x * factor(0)).clamp(0, 1)
    mean = _gray(out).mean(dim=(2, 3, 4), keepdim=True)
    out = ((out - mean) * factor(1) + mean).clamp(0, 1)
    gray = _gray(out)
    out = ((out - gray) * factor(2) + gray).clamp(0, 1)
    out = torch.where(jitter, out, x)
    return torch.where((u[:, 4] < 0.2).view(shape), _gray(out), out)


class ClipViews:
    """``n_views`` views of a batch of clips ``(B, C, T, H, W)``: temporal crops of ``frames``
    frames (``None``: the whole clip) and the temporally consistent spatial augmentation of the
    module docstring (``color_strength`` 0 or a non-RGB clip: no colour jitter; ``noise_std``:
    Gaussian noise)."""

    def __init__(self, n_views: int = 2, frames: int | None = None, scale=(0.3, 1.0), ratio=(0.5, 2.0), flip: bool = True,
                 color_strength: float = 1.0, noise_std: float = 0.0):
        self.n_views, self.frames, self.scale, self.ratio, self.flip = n_views, frames, scale, ratio, flip
        self.color_strength, self.noise_std = color_strength, noise_std

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        theta = crop_theta(torch.rand(b, 5), self.scale, self.ratio, self.flip).to(x)
        planes = x.reshape(b, c * t, h, w)
        grid = F.affine_grid(theta, list(planes.shape), align_corners=False)
        out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="reflection", align_corners=False).view(b, c, t, h, w)
        if c == 3 and self.color_strength > 0:
            out = color_jitter(out, self.color_strength)
        if self.noise_std > 0:
            out = out + self.noise_std * torch.randn_like(out)
        return out

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.frames is None or self.frames >= x.shape[2]:
            return [self.spatial(x) for _ in range(self.n_views)]
        starts = [interval_starts(x.shape[0], x.shape[2], self.frames)]
        while sum(s.shape[1] for s in starts) < self.n_views:
            starts.append(interval_starts(x.shape[0], x.shape[2], self.frames))
        starts = torch.cat(starts, dim=1)
        return [self.spatial(take_frames(x, starts[:, v], self.frames)) for v in range(self.n_views)]
