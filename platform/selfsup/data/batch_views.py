"""The paper recipes of :mod:`selfsup.data.views` as batched tensor ops, to make views on the
training device (``data.augment_on: device``) when per-sample augmentation in the loader's CPU
processes would starve the GPU.

Every random choice is drawn per sample, as torchvision draws it per call: a random resized crop
(area in ``scale`` of the image, log-uniform aspect ratio in ``ratio``; a crop that does not fit is
clamped to the image instead of redrawn) with a horizontal flip, resampled bilinearly to ``size``
by one ``affine_grid``/``grid_sample`` (no antialiasing); colour jitter with probability 0.8, its
brightness, contrast, saturation and hue factors applied in a random order per sample, with
torchvision's formulas; grayscale with probability 0.2 (RGB only); a Gaussian blur with sigma in
[0.1, 2.0] and the recipe's kernel (reflect padding), with the recipe's probability; solarize
(``x >= 0.5 -> 1 - x``) with the recipe's probability. Randomness comes from torch's generator of
the device, which the worker reseeds every epoch. Images are ``(B, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class Pipeline:
    """One view's recipe (the torchvision pipelines of :func:`selfsup.data.views.build_views`)."""

    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float] = (0.75, 4 / 3)
    flip: bool = True
    jitter: tuple[float, float, float, float] | None = None  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_kernel: int = 3
    solarize_p: float = 0.0


def _chance(p: float, b: int, device) -> torch.Tensor:
    """A ``(B, 1, 1, 1)`` boolean: which samples get an op applied with probability ``p``."""
    return (torch.rand(b, device=device) < p).view(b, 1, 1, 1)


def _uniform(lo: float, hi: float, b: int, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(b, device=device)).view(b, 1, 1, 1)


def crop_theta(u: torch.Tensor, scale, ratio, flip: bool) -> torch.Tensor:
    """Affine matrices ``(B, 2, 3)`` mapping output to input coordinates in [-1, 1] from uniform
    draws ``u`` ``(B, 5)``: area fraction, log aspect ratio, centre x and y, flip."""
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    theta = torch.zeros(u.shape[0], 2, 3, device=u.device)
    theta[:, 0, 0] = w * torch.where((u[:, 4] < 0.5) & flip, -1.0, 1.0)
    theta[:, 0, 2] = (1 - w) * (2 * u[:, 2] - 1)
    theta[:, 1, 1] = h
    theta[:, 1, 2] = (1 - h) * (2 * u[:, 3] - 1)
    return theta


def resized_crop(x: torch.Tensor, size: int, scale, ratio, flip: bool) -> torch.Tensor:
    """A random resized crop (and flip) of every image, to ``(B, C, size, size)``."""
    b = x.shape[0]
    theta = crop_theta(torch.rand(b, 5, device=x.device), scale, ratio, flip)
    grid = F.affine_grid(theta.to(x.dtype), [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


ACTION_DIM = 6
"""Parameters of a :func:`transformed_view`: crop width and height (fractions of the image), crop
centre x and y (in [-1, 1] image units), brightness and contrast factors."""


def transformed_view(
    x: torch.Tensor, size: int, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), jitter: float = 0.4, u: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random resized crop with brightness and contrast jitter of every image ``(B, C, H, W)``,
    and the parameters that made each view ``(B, ACTION_DIM)`` (seq-JEPA's actions, and what an
    equivariance probe predicts): ``(views (B, C, size, size), params)``. ``u``: the uniform draws
    ``(B, 7)`` to use (5 for the crop, as :func:`crop_theta` reads them, then brightness and
    contrast), e.g. made at collate time; drawn here if not given."""
    b = x.shape[0]
    u = torch.rand(b, 7, device=x.device) if u is None else u.to(x.device)
    theta = crop_theta(u[:, :5], scale, ratio, flip=False)
    grid = F.affine_grid(theta.to(x.dtype), [b, x.shape[1], size, size], align_corners=False)
    views = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    fb, fc = 1 - jitter + 2 * jitter * u[:, 5], 1 - jitter + 2 * jitter * u[:, 6]
    views = contrast(brightness(views, fb.view(b, 1, 1, 1).to(x.dtype)), fc.view(b, 1, 1, 1).to(x.dtype))
    params = torch.stack([theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2], fb, fc], dim=1)
    return views, params


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` of RGB images."""
    r, g, b = x.unbind(dim=1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp(0, 1)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = (grayscale(x) if x.shape[1] == 3 else x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x + (1 - f) * grayscale(x)).clamp(0, 1)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images by ``shift`` (a fraction of the circle, per sample)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    v = maxc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    h = ((h / 6.0) % 1.0 + shift.view(-1, 1, 1)) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = [torch.zeros_like(v) for _ in range(3)]
    for k, rgb in enumerate(choices):
        sel = i == k
        out = [torch.where(sel, c, o) for c, o in zip(rgb, out)]
    return torch.stack(out, dim=1)


def color_jitter(x: torch.Tensor, strengths, p: float) -> torch.Tensor:
    """ColorJitter(brightness, contrast, saturation, hue) with probability ``p``, its four factors
    drawn and applied in a random order per sample (saturation and hue on RGB only)."""
    b, dev = x.shape[0], x.device
    bri, con, sat, hu = strengths
    rgb = x.shape[1] == 3
    ops = [(brightness, _uniform(max(0.0, 1 - bri), 1 + bri, b, dev)) if bri > 0 else None,
           (contrast, _uniform(max(0.0, 1 - con), 1 + con, b, dev)) if con > 0 else None,
           (saturation, _uniform(max(0.0, 1 - sat), 1 + sat, b, dev)) if sat > 0 and rgb else None,
           (hue, _uniform(-min(hu, 0.5), min(hu, 0.5), b, dev)) if hu > 0 and rgb else None]
    order = torch.rand(b, 4, device=dev).argsort(dim=1)
    out = x
    for position in range(4):
        for k, op in enumerate(ops):
            if op is not None:
                fn, factor = op
                out = torch.where((order[:, position] == k).view(b, 1, 1, 1), fn(out, factor), out)
    return torch.where(_chance(p, b, dev), out, x)


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` ``(B,)``, reflect padding (torchvision's)."""
    b, c, hgt, wid = x.shape
    half = (kernel - 1) / 2
    pos = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    weights = torch.exp(-0.5 * (pos[None] / sigma[:, None]) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B * C, k)
    flat = F.pad(x.reshape(1, b * c, hgt, wid), [kernel // 2] * 4, mode="reflect")
    flat = F.conv2d(flat, weights.view(b * c, 1, 1, kernel), groups=b * c)
    flat = F.conv2d(flat, weights.view(b * c, 1, kernel, 1), groups=b * c)
    return flat.view(b, c, hgt, wid)


def view(x: torch.Tensor, pipe: Pipeline) -> torch.Tensor:
    """One augmented view ``(B, C, size, size)`` of ``x`` by the recipe ``pipe``."""
    b, dev = x.shape[0], x.device
    out = resized_crop(x, pipe.size, pipe.scale, pipe.ratio, pipe.flip).clamp(0, 1)
    if pipe.jitter is not None:
        out = color_jitter(out, pipe.jitter, pipe.jitter_p)
        if out.shape[1] == 3:
            out = torch.where(_chance(pipe.gray_p, b, dev), grayscale(out).expand_as(out), out)
    if pipe.blur_p > 0:
        sigma = 0.1 + 1.9 * torch.rand(b, device=dev, dtype=out.dtype)
        out = torch.where(_chance(pipe.blur_p, b, dev), gaussian_blur(out, pipe.blur_kernel, sigma), out)
    if pipe.solarize_p > 0:
        out = torch.where(_chance(pipe.solarize_p, b, dev), torch.where(out >= 0.5, 1 - out, out), out)
    return out


class BatchViews:
    """``views(x) -> [view(x, pipeline) for each pipeline]``: a batch ``(B, C, H, W)`` on any device
    to its augmented views, one per pipeline (DINO's local crops among them)."""

    def __init__(self, pipelines: list[Pipeline]):
        self.pipelines = pipelines

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [view(x, p) for p in self.pipelines]
