"""MAE: Masked Autoencoders Are Scalable Vision Learners (He et al., CVPR 2022).

https://arxiv.org/abs/2111.06377 — sec. 3. A uniformly random ``mask_ratio`` of the patches is
hidden (the ``random`` masks of the data's token grid, made at collate time:
``selfsup.data.masks.RandomPatchMasks`` on images; on video clips ``TubeMasks``, VideoMAE's tube
masking, Tong et al. 2022, https://arxiv.org/abs/2203.12602, which hides the same patches in every
frame and works best at ``mask_ratio`` 0.9); the ViT encoder sees only the visible patches; a
light decoder (mask tokens + fixed sine-cosine positions, a few transformer blocks) predicts the
pixels of every hidden patch (a tubelet's ``t x p x p`` pixels on video):

    z = encoder(x, keep=visible)                  # (B, N_vis, D)
    x_hat = decoder(z, visible, masked)           # (B, N_mask, p*p*C)
    target = patchify(x)[masked], normalised per patch (mean 0, variance 1) if norm_pix_loss
    loss = mean over hidden patches of mean_k (x_hat_k - target_k)^2

The representation (``embed``) is the encoder's pooled output on the whole image (clip). VideoMAE
normalises a tubelet's target per channel; here, as in MAE, over the whole tubelet.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from selfsup.data.masks import mask_maker
from selfsup.methods.base import Method, masked_view, register
from selfsup.models.backbones import require_vit
from selfsup.models.predictor import MaskedPredictor
from selfsup.models.tokens import select
from selfsup.sections import Section


def mae_loss(pred: torch.Tensor, patches: torch.Tensor, norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Mean squared error ``(B, M, P)`` between predicted and target pixels of the hidden patches;
    with ``norm_pix`` each target patch is first normalised by its own mean and variance
    (``(t - mean) / sqrt(var + eps)``, unbiased variance as in the reference code)."""
    if norm_pix:
        mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
        patches = (patches - mean) / (var + eps) ** 0.5
    return ((pred - patches) ** 2).mean()


class MAEConfig(Section):
    """MAE (He et al., 2022): mask ratio, decoder size, normalised-pixel targets."""

    name: Literal["mae"] = "mae"
    mask_ratio: float = Field(0.75, gt=0.0, lt=1.0)
    decoder_dim: int = Field(512, ge=4)
    decoder_depth: int = Field(8, ge=1)
    decoder_heads: int = Field(16, ge=1)
    norm_pix_loss: bool = True

    @model_validator(mode="after")
    def _check(self) -> "MAEConfig":
        if self.decoder_dim % 4 or self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} must be divisible by 4 and by decoder_heads {self.decoder_heads}")
        return self


@register("mae")
class MAE(Method):
    description = "MAE (He et al. 2022): ViT encoder on visible patches, light decoder reconstructs hidden pixels"
    family = "masked_modelling"
    config = MAEConfig
    modality = ("image", "video")
    recipes = ("mae", "crop", "light")
    vit = True
    masked = True
    n_views = 1
    unused_parameters = True

    def __init__(
        self,
        backbone,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
    ):
        require_vit(backbone, "mae")
        super().__init__(backbone)
        self.decoder = MaskedPredictor(backbone.embed_dim, backbone.grid, decoder_dim, decoder_depth, decoder_heads, backbone.patch_dim)
        self.mask_maker = mask_maker("random", backbone.grid, mask_ratio)
        self.norm_pix_loss = norm_pix_loss

    def masks(self):
        def make(batch_size: int) -> dict:
            visible, masked = self.mask_maker(batch_size)
            return {"visible": visible, "masked": masked}

        return make

    def forward(self, batch):
        (x,) = batch["views"]
        visible, masked = batch["visible"], batch["masked"]
        z = self.backbone.tokens(x, keep=visible)
        pred = self.decoder(z, visible, masked).float()
        loss = mae_loss(pred, select(self.backbone.patchify(x.float()), masked), self.norm_pix_loss)
        return {"loss": loss}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the encoder's pooled output ``(B, D)``."""
        return self.backbone(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the encoder on a random context of ``x`` (the method's own masks)."""
        return masked_view(self.backbone, self.mask_maker, x)
