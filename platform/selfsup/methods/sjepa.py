"""Signal JEPA: JEPA pre-training for multi-channel 1-D signals such as the 12-lead ECG
(Weimann & Conrad, 2024, "ECG-JEPA").

https://arxiv.org/abs/2410.13867 — sec. 3 and the reference code (kweimann/ECG-JEPA). The encoder
is a ViT over time patches of all channels (``selfsup.models.transformers.ViT1d``). Per signal, the
context keeps 15-25 % of the patches and the rest is hidden in contiguous blocks of at least
``min_block`` patches (``selfsup.data.masks.TimeBlockMasks``, made at collate time):

    h = target_encoder(x)[hidden]                  # all patches, EMA weights, no gradient
    z = context_encoder(x, keep=context)           # only the visible patches enter the ViT
    z_hat = predictor(z, context, hidden)          # mask tokens at the hidden positions
    loss = mean |z_hat - h|                        # L1, over hidden patches and dims

The target encoder follows by an EMA whose rate rises linearly from ``base_momentum`` (0.998) to
``final_momentum`` (0.9995), the reference's schedule. No augmentation: the views are the signals.
The representation (``embed``) is the mean of the target encoder's patch tokens ``(B, D)``.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, model_validator

from selfsup.data.masks import TimeBlockMasks
from selfsup.methods.base import Method, PredictorShape, masked_view, register
from selfsup.models.predictor import MaskedPredictor
from selfsup.models.tokens import select
from selfsup.models.transformers import ViT1d
from selfsup.sections import Fraction, Range, check_shares
from selfsup.methods.ema import ema_update, linear_momentum


def sjepa_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error ``(B, K, D)`` between predicted and target patch embeddings (target detached)."""
    return (prediction - target.detach()).abs().mean()


class SJEPAConfig(PredictorShape):
    """Signal JEPA (Weimann & Conrad, 2024): predictor size, target EMA from ``base_momentum`` to
    ``final_momentum``, the kept fraction of time patches and the shortest hidden block (patches)."""

    name: Literal["sjepa"] = "sjepa"
    predictor_dim: int = Field(192, ge=2)
    predictor_depth: int = Field(8, ge=1)
    predictor_heads: int = Field(6, ge=1)
    base_momentum: Fraction = 0.998
    final_momentum: Fraction = 0.9995
    keep: Range = (0.15, 0.25)
    min_block: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "SJEPAConfig":
        check_shares(self, "keep", below_one=True)
        return self


@register("sjepa")
class SignalJEPA(Method):
    description = "Signal JEPA (Weimann & Conrad 2024, ECG-JEPA): predict an EMA ViT's hidden time patches from the visible ones"
    family = "jepa"
    config = SJEPAConfig
    modality = "signal"
    recipes = ("none", "signal")
    backbones = ("vit1d",)
    masked = True
    n_views = 1
    encoder = "target"

    def __init__(
        self,
        backbone,
        predictor_dim: int = 192,
        predictor_depth: int = 8,
        predictor_heads: int = 6,
        base_momentum: float = 0.998,
        final_momentum: float = 0.9995,
        keep: tuple[float, float] = (0.15, 0.25),
        min_block: int = 10,
    ):
        if not isinstance(backbone, ViT1d):
            raise ValueError("method 'sjepa' needs the signal ViT (model.backbone: vit1d)")
        super().__init__(backbone)
        self.predictor = MaskedPredictor(backbone.embed_dim, backbone.grid, predictor_dim, predictor_depth, predictor_heads, backbone.embed_dim)
        self.target = copy.deepcopy(backbone).requires_grad_(False)
        self.base_momentum, self.final_momentum = base_momentum, final_momentum
        self.mask_maker = TimeBlockMasks(backbone.grid[0], tuple(keep), min_block)

    def masks(self):
        def make(batch_size: int) -> dict:
            context, (hidden,) = self.mask_maker(batch_size)
            return {"context": context, "hidden": hidden}

        return make

    def forward(self, batch):
        (x,) = batch["views"]
        context, hidden = batch["context"], batch["hidden"]
        with torch.no_grad():
            h = select(self.target.tokens(x), hidden).float()
        z = self.predictor(self.backbone.tokens(x, keep=context), context, hidden).float()
        return {"loss": sjepa_loss(z, h)}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the mean patch token of the context encoder ``(B, D)``."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the target encoder on a random context of ``x`` (the method's own masks)."""
        return masked_view(self.target, self.mask_maker, x)

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.backbone, linear_momentum(self.base_momentum, progress, self.final_momentum))
