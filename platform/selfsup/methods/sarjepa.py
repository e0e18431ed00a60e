"""SAR-JEPA: a joint-embedding predictive architecture whose targets are hand-made gradient
features, for synthetic aperture radar and other images (Li, Yang, Liu et al., 2024, "Predicting
Gradient is Better: Exploring Self-Supervised Learning for SAR ATR with a Joint-Embedding
Predictive Architecture", ISPRS J.).

https://arxiv.org/abs/2311.15153 — sec. 3 and the reference code (waterdisappear/SAR-JEPA,
``Pretraining/models_lomar.py``). Masks are local: per image, ``n_windows`` windows of
``window x window`` patches, each hiding ``mask_ratio`` of its patches (after LoMaR, Chen et al.
2022). The context encoder sees a window's visible patches; a predictor fills in its hidden ones.
What it predicts is not a learned target encoder's output but a fixed operator's: multi-scale
gradients of the image, which for speckled SAR images are gradients *by ratio* (ROEWA-like):

    s_top, s_bottom, s_left, s_right = sums of the image over the half-windows of radius r
    g_r = sqrt(log(s_left / s_right)^2 + log(s_top / s_bottom)^2)     # "ratio", per pixel
    target(patch) = [g_r1(patch pixels), ..., g_rS(patch pixels)]   # S scales (5, 9, 13, 17)
    loss = mean over hidden patches of |predictor(encoder(visible), hidden) - target|^2

``operator: difference`` uses the plain difference of half-window means (an image gradient for
optical images) instead of the log-ratio. Images with several channels use their channel mean.
The representation (``embed``) is the mean of the encoder's patch tokens ``(B, D)``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from selfsup.methods.base import Method, PredictorShape, register
from selfsup.models.backbones import require_vit
from selfsup.models.predictor import MaskedPredictor
from selfsup.models.tokens import select
from selfsup.sections import Fraction


def half_window_sums(x: torch.Tensor, r: int) -> tuple[torch.Tensor, ...]:
    """Sums of ``x`` ``(B, 1, H, W)`` over the four half-windows of the ``(2r+1) x (2r+1)`` window
    around each pixel (top ``r+1`` rows, bottom ``r+1`` rows, left and right ``r+1`` columns; the
    centre row or column belongs to both halves, as in the reference), reflect-padded:
    ``(top, bottom, left, right)``, each ``(B, 1, H, W)``."""
    k = 2 * r + 1
    top = torch.zeros(k, k, device=x.device, dtype=x.dtype)
    top[: r + 1] = 1
    kernels = torch.stack([top, top.flip(0), top.T, top.T.flip(1)])[:, None]  # top, bottom, left, right
    out = F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), kernels)
    return tuple(out.split(1, dim=1))


def gradient_features(x: torch.Tensor, scales: tuple[int, ...], operator: str = "ratio", eps: float = 1e-2) -> torch.Tensor:
    """The gradient magnitude of the channel mean of ``x`` ``(B, C, H, W)`` at each radius in
    ``scales``: ``(B, S, H, W)``. ``ratio``: ``log`` of the ratio of opposite half-window sums (each
    pixel plus ``eps``, the reference's offset; intensities are amplitudes, so negative values are
    clipped to 0); ``difference``: their difference over the half-window's size."""
    gray = x.float().mean(dim=1, keepdim=True)
    if operator == "ratio":
        gray = gray.clamp_min(0)
    out = []
    for r in scales:
        top, bottom, left, right = half_window_sums(gray + eps if operator == "ratio" else gray, r)
        if operator == "ratio":
            gx, gy = torch.log(left / right), torch.log(top / bottom)
        else:
            size = (r + 1) * (2 * r + 1)
            gx, gy = (left - right) / size, (top - bottom) / size
        out.append(torch.sqrt(gx**2 + gy**2))
    return torch.cat(out, dim=1)


def patch_targets(features: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, S, H, W) -> (B, H/p * W/p, S * p * p)``: per patch (row-major), each scale's ``p x p``
    values in turn, as the reference concatenates them."""
    b, s, h, w = features.shape
    x = features.reshape(b, s, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), s * p * p)


def sarjepa_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``(B, K, S p p)`` between predicted and operator features of the hidden patches."""
    return ((prediction - target.detach()) ** 2).mean()


class LocalWindowMasks:
    """LoMaR-style local masks on a patch grid ``(H, W)``: per sample, ``n_windows`` windows of
    ``window x window`` patches at uniform positions, each hiding ``round(mask_ratio * window^2)``
    random patches (at least one, and one left visible). ``masks(batch_size) -> (context (B, n,
    Kc), hidden (B, n, Kh))``: patch indices, row-major, sorted within each window."""

    def __init__(self, grid: tuple[int, int], window: int, n_windows: int, mask_ratio: float):
        if window > min(grid):
            raise ValueError(f"window {window} does not fit the {grid[0]}x{grid[1]} patch grid")
        self.grid, self.window, self.n_windows = grid, window, n_windows
        self.hidden = min(window * window - 1, max(1, round(mask_ratio * window * window)))

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        (h, w), k, n = self.grid, self.window, self.n_windows
        rows = torch.randint(h - k + 1, (batch_size, n, 1), generator=generator)
        cols = torch.randint(w - k + 1, (batch_size, n, 1), generator=generator)
        local = torch.arange(k * k)
        cells = (rows + local // k) * w + cols + local % k  # (B, n, k*k) patch indices of each window
        order = torch.rand(batch_size, n, k * k, generator=generator).argsort(dim=-1)
        picked = cells.gather(-1, order)
        return picked[..., self.hidden:].sort(dim=-1).values, picked[..., : self.hidden].sort(dim=-1).values


class SARJEPAConfig(PredictorShape):
    """SAR-JEPA (Li et al., 2024): local masks (windows of ``window`` patches, ``n_windows`` per
    image, ``mask_ratio`` hidden in each: the reference's 7, 4 and 0.8), the gradient operator and
    its radii in pixels (the reference's 5, 9, 13, 17 at 224 px), and the predictor's size."""

    position_axes: ClassVar[int] = 2
    name: Literal["sarjepa"] = "sarjepa"
    window: int = Field(7, ge=2)
    n_windows: int = Field(4, ge=1)
    mask_ratio: Fraction = 0.8
    scales: list[int] = Field(default_factory=lambda: [5, 9, 13, 17], min_length=1)
    operator: Literal["ratio", "difference"] = "ratio"
    predictor_dim: int = Field(512, ge=4)
    predictor_depth: int = Field(8, ge=1)
    predictor_heads: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "SARJEPAConfig":
        if min(self.scales) < 1:
            raise ValueError(f"scales are radii in pixels, at least 1, got {self.scales}")
        return self


@register("sarjepa")
class SARJEPA(Method):
    description = "SAR-JEPA (Li et al. 2024): predict multi-scale gradient(-by-ratio) features of locally masked patches"
    config = SARJEPAConfig
    modality = "image"
    recipes = ("crop", "mae", "light")
    backbones = ("timm",)
    vit = True
    masked = True
    n_views = 1
    unused_parameters = True

    def __init__(
        self,
        backbone,
        window: int = 7,
        n_windows: int = 4,
        mask_ratio: float = 0.8,
        scales: list[int] = (5, 9, 13, 17),
        operator: str = "ratio",
        predictor_dim: int = 512,
        predictor_depth: int = 8,
        predictor_heads: int = 16,
    ):
        require_vit(backbone, "sarjepa")
        super().__init__(backbone)
        size = min(g * backbone.patch_size for g in backbone.grid)
        if max(scales) >= size:
            raise ValueError(f"scales {list(scales)}: a radius must be below the image size {size}")
        self.patch, self.scales, self.operator = backbone.patch_size, tuple(scales), operator
        out = len(self.scales) * self.patch**2
        self.predictor = MaskedPredictor(backbone.embed_dim, backbone.grid, predictor_dim, predictor_depth, predictor_heads, out)
        self.mask_maker = LocalWindowMasks(backbone.grid, window, n_windows, mask_ratio)

    def masks(self):
        def make(batch_size: int) -> dict:
            context, hidden = self.mask_maker(batch_size)
            return {"context": context, "hidden": hidden}

        return make

    def forward(self, batch):
        (x,) = batch["views"]
        context, hidden = batch["context"].flatten(0, 1), batch["hidden"].flatten(0, 1)  # (B * n, K): one sequence per window
        n = batch["context"].shape[1]
        with torch.no_grad():
            target = patch_targets(gradient_features(x, self.scales, self.operator), self.patch)
        z = self.backbone.tokens(x.repeat_interleave(n, dim=0), keep=context)
        prediction = self.predictor(z, context, hidden).float()
        return {"loss": sarjepa_loss(prediction, select(target.repeat_interleave(n, dim=0), hidden))}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.tokens(x).mean(dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the encoder's mean patch token ``(B, D)``."""
        return self.backbone.tokens(x).mean(dim=1)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the encoder on the visible patches of one random window of ``x``."""
        context, _ = self.mask_maker(len(x))
        return self.backbone.tokens(x, keep=context[:, 0].to(x.device)).mean(dim=1)
