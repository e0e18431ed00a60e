"""SAR-JEPA: a joint-embedding predictive architecture whose targets are hand-made gradient
features, for synthetic aperture radar and other images (Li, Yang, Liu et al., 2024, "Predicting
Gradient is Better: Exploring Self-Supervised Learning for SAR ATR with a Joint-Embedding
Predictive Architecture", ISPRS J.).

https://arxiv.org/abs/2311.15153 — sec. 3 and the reference code (waterdisappear/SAR-JEPA,
``Pretraining/models_lomar.py``). Masks are local: per image, ``n_windows`` windows of
``window x window`` patches, each hiding ``int(mask_ratio * window^2)`` of its patches (after
LoMaR, Chen et al. 2022). As in the reference, the encoder sees every patch of a window, the hidden
ones' embeddings replaced by a learned mask token, and a decoder maps each of the window's tokens
to its prediction. What it predicts is not a learned target encoder's output but a fixed
operator's: multi-scale gradients of the image, which for speckled SAR images are gradients *by
ratio* (ROEWA-like):

    s_top, s_bottom, s_left, s_right = sums of the image over the half-windows of radius r
    g_r = sqrt(log(s_left / s_right)^2 + log(s_top / s_bottom)^2)     # "ratio", per pixel
    target(patch) = [g_r1(patch pixels), ..., g_rS(patch pixels)]   # S scales (5, 9, 13, 17)
    e = patch_embed(x); e[hidden] = mask_token                       # every patch of the window
    loss = mean over hidden patches of |decoder(encoder(e[window] + pos))[hidden] - target|^2

Positions: the reference's ViT has relative position encodings in its attention (iRPE); here
the backbone is timm's ViT with its absolute positions, added after the mask token, so that a
hidden patch's token still says where it is. ``operator: difference`` uses the plain difference
of half-window means (an image gradient for optical images) instead of the log-ratio. Images
with several channels use their channel mean. The representation (``embed``) is the mean of the
encoder's patch tokens ``(B, D)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from selfsup.methods.base import Method, register
from selfsup.models.backbones import require_vit
from selfsup.models.tokens import run_blocks, select
from selfsup.sections import Fraction, Section


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


def sarjepa_loss(prediction: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The reference's ``forward_loss``: the squared error between predicted and operator features
    ``(B, K, S p p)``, averaged over each patch's features, then over the ``hidden`` patches
    ``(B, K)`` (bool) only."""
    per_patch = ((prediction - target.detach()) ** 2).mean(dim=-1)
    return (per_patch * hidden).sum() / hidden.sum()


class LocalWindowMasks:
    """LoMaR-style local masks on a patch grid ``(H, W)``: per sample, ``n_windows`` windows of
    ``window x window`` patches at uniform positions, each hiding ``int(mask_ratio * window^2)``
    random patches (truncated, as the reference's ``generate_window_patches``; at least one hidden
    and one visible). ``masks(batch_size) -> (window (B, n, k^2), hidden (B, n, k^2))``: each
    window's patch indices (row-major, sorted) and which of them are hidden.

    The reference draws one set of window positions per batch (distinct rows and columns,
    ``torch.randperm``); here each sample draws its own, so that a batch's windows cover more of
    the images (the same distribution for one sample)."""

    def __init__(self, grid: tuple[int, int], window: int, n_windows: int, mask_ratio: float):
        if window > min(grid):
            raise ValueError(f"window {window} does not fit the {grid[0]}x{grid[1]} patch grid")
        self.grid, self.window, self.n_windows = grid, window, n_windows
        self.hidden = int(mask_ratio * window * window)
        if not 1 <= self.hidden < window * window:
            raise ValueError(f"mask_ratio {mask_ratio} hides {self.hidden} of a window's {window * window} patches: at least one must be hidden and one visible")

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        (h, w), k, n = self.grid, self.window, self.n_windows
        rows = torch.randint(h - k + 1, (batch_size, n, 1), generator=generator)
        cols = torch.randint(w - k + 1, (batch_size, n, 1), generator=generator)
        local = torch.arange(k * k)
        cells = (rows + local // k) * w + cols + local % k  # (B, n, k*k): sorted, row-major
        rank = torch.rand(batch_size, n, k * k, generator=generator).argsort(dim=-1).argsort(dim=-1)
        return cells, rank < self.hidden


class WindowDecoder(nn.Module):
    """The reference's decoder (``encoder_pred``, ``decoder_blocks``, ``decoder_norm``,
    ``decoder_pred``): ``(B, K, in_dim) -> (B, K, out_dim)``, one output per token of the window."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, out_dim: int):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.embed = nn.Linear(in_dim, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)
        self.grad_checkpointing = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(run_blocks(self.blocks, self.embed(z), self.grad_checkpointing)))


class SARJEPAConfig(Section):
    """SAR-JEPA (Li et al., 2024): local masks (windows of ``window`` patches, ``n_windows`` per
    image, ``mask_ratio`` hidden in each: the reference's 7, 4 and 0.8), the gradient operator and
    its radii in pixels (the reference's 5, 9, 13, 17 at 224 px), and the decoder's size (its 512
    wide, 8 blocks, 16 heads)."""

    name: Literal["sarjepa"] = "sarjepa"
    window: int = Field(7, ge=2)
    n_windows: int = Field(4, ge=1)
    mask_ratio: Fraction = 0.8
    scales: list[int] = Field(default_factory=lambda: [5, 9, 13, 17], min_length=1)
    operator: Literal["ratio", "difference"] = "ratio"
    predictor_dim: int = Field(512, ge=1)
    predictor_depth: int = Field(8, ge=1)
    predictor_heads: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "SARJEPAConfig":
        if min(self.scales) < 1:
            raise ValueError(f"scales are radii in pixels, at least 1, got {self.scales}")
        if self.predictor_dim % self.predictor_heads:
            raise ValueError(f"predictor_dim {self.predictor_dim} must be divisible by predictor_heads {self.predictor_heads}")
        if not 1 <= int(self.mask_ratio * self.window**2) < self.window**2:
            raise ValueError(f"mask_ratio {self.mask_ratio} must hide at least one of a window's {self.window**2} patches and leave one")
        return self


@register("sarjepa")
class SARJEPA(Method):
    description = "SAR-JEPA (Li et al. 2024): predict multi-scale gradient(-by-ratio) features of locally masked patches"
    family = "jepa"
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
        self.mask_token = nn.Parameter(torch.zeros(1, 1, backbone.embed_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder = WindowDecoder(backbone.embed_dim, predictor_dim, predictor_depth, predictor_heads, len(self.scales) * self.patch**2)
        self.mask_maker = LocalWindowMasks(backbone.grid, window, n_windows, mask_ratio)

    def masks(self):
        def make(batch_size: int) -> dict:
            window, hidden = self.mask_maker(batch_size)
            return {"window": window, "hidden": hidden}

        return make

    def encode_windows(self, x: torch.Tensor, window: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens ``(B * n, k^2, D)`` of each window ``(B, n, k^2)`` of ``x``, its
        ``hidden`` patches' embeddings replaced by the mask token (then positions added)."""
        b, n, _ = window.shape
        cells, hide = window.flatten(0, 1), hidden.flatten(0, 1)
        grid = torch.zeros(b * n, self.backbone.grid[0] * self.backbone.grid[1], dtype=torch.bool, device=x.device)
        grid.scatter_(1, cells, hide)
        return self.backbone.tokens(x.repeat_interleave(n, dim=0), keep=cells, hide=grid, mask_token=self.mask_token)

    def forward(self, batch):
        (x,) = batch["views"]
        window, hidden = batch["window"], batch["hidden"]
        with torch.no_grad():
            target = patch_targets(gradient_features(x, self.scales, self.operator), self.patch)
        prediction = self.decoder(self.encode_windows(x, window, hidden)).float()
        target = select(target.repeat_interleave(window.shape[1], dim=0), window.flatten(0, 1))
        return {"loss": sarjepa_loss(prediction, target, hidden.flatten(0, 1))}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.tokens(x).mean(dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the encoder's mean patch token ``(B, D)``."""
        return self.backbone.tokens(x).mean(dim=1)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the encoder on one random window of ``x`` with its hidden patches
        masked, the mean of its visible patches' tokens."""
        window, hidden = (m[:, :1].to(x.device) for m in self.mask_maker(len(x)))
        tokens, seen = self.encode_windows(x, window, hidden), ~hidden[:, 0]
        return (tokens * seen[..., None]).sum(dim=1) / seen.sum(dim=1, keepdim=True)
