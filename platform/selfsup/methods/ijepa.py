"""I-JEPA: Joint-Embedding Predictive Architecture for images (Assran et al., CVPR 2023).

https://arxiv.org/abs/2301.08243 — sec. 3 and Figure 3. Per image, one context block and ``M``
target blocks of patches (the ``blocks`` masks of the data's token grid, made at collate time:
``selfsup.data.masks.MultiBlockMasks`` on images; on video clips ``SpatioTemporalBlocks``, the
same blocks extended through the whole clip as V-JEPA's, Bardes et al. 2024,
https://arxiv.org/abs/2404.08471, with a video ViT whose predictor positions are 3-D, so
``predictor_dim`` must divide by 8 there):

    s_y = LayerNorm(target_encoder(x))            # all patches, EMA weights, no gradient
    s_x = context_encoder(x, keep=context)        # only the context patches enter the ViT
    for each target block B_i:                  # one predictor call over all M blocks, batch M * B
        s_hat = predictor(s_x, context, B_i)      # mask tokens at B_i's positions
        loss += mean_{j in B_i} ||s_hat_j - s_y_j||^2 / M

The squared L2 distance is averaged over patches and feature dimensions (the reference code
uses the smooth-L1 of the same quantities). The target encoder follows the context encoder by an
EMA whose rate rises linearly from ``base_momentum`` (0.996) to 1, as in the paper. The
representation (``embed``) is the average-pooled output of the target encoder, the encoder the
paper evaluates.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from selfsup.data.masks import mask_maker
from selfsup.methods.base import Method, PredictorShape, masked_view, register
from selfsup.models.backbones import require_vit
from selfsup.models.predictor import MaskedPredictor
from selfsup.models.tokens import select
from selfsup.sections import Fraction, Range, check_shares
from selfsup.methods.ema import ema_update, linear_momentum


def ijepa_loss(predictions: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the ``M`` target blocks of the mean squared error ``(B, K, D)`` between predicted
    and target patch embeddings (targets detached)."""
    return sum(F.mse_loss(p, t.detach()) for p, t in zip(predictions, targets)) / len(predictions)


class ContextAndTargets:
    """Collate-time masks as the batch entries ``context`` ``(B, Kc)`` and ``targets`` (a list of
    ``(B, Kt)``), from a mask maker returning ``(context, targets)`` (I-JEPA, T-JEPA)."""

    def __init__(self, mask_maker):
        self.mask_maker = mask_maker

    def __call__(self, batch_size: int) -> dict:
        context, targets = self.mask_maker(batch_size)
        return {"context": context, "targets": targets}


class IJEPAConfig(PredictorShape):
    """I-JEPA (Assran et al., 2023): predictor size, target EMA and the multi-block masks
    (scales are fractions of the patch grid; ``min_keep`` patches stay in every context)."""

    position_axes: ClassVar[int] = 2
    name: Literal["ijepa"] = "ijepa"
    predictor_dim: int = Field(384, ge=4)
    predictor_depth: int = Field(12, ge=1)
    predictor_heads: int = Field(12, ge=1)
    base_momentum: Fraction = 0.996
    n_pred: int = Field(4, ge=1)
    enc_scale: Range = (0.85, 1.0)
    pred_scale: Range = (0.15, 0.2)
    aspect_ratio: Range = (0.75, 1.5)
    min_keep: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "IJEPAConfig":
        check_shares(self, "enc_scale", "pred_scale")
        if self.aspect_ratio[0] > self.aspect_ratio[1]:
            raise ValueError(f"aspect_ratio must satisfy low <= high, got {self.aspect_ratio}")
        return self


@register("ijepa")
class IJEPA(Method):
    description = "I-JEPA (Assran et al. 2023): predict target-block embeddings of an EMA encoder from a context block"
    family = "jepa"
    config = IJEPAConfig
    modality = ("image", "video")
    recipes = ("crop", "mae", "light")
    vit = True
    masked = True
    n_views = 1
    encoder = "target"
    unused_parameters = True

    def __init__(
        self,
        backbone,
        predictor_dim: int = 384,
        predictor_depth: int = 12,
        predictor_heads: int = 12,
        base_momentum: float = 0.996,
        n_pred: int = 4,
        enc_scale: tuple[float, float] = (0.85, 1.0),
        pred_scale: tuple[float, float] = (0.15, 0.2),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        min_keep: int = 10,
    ):
        require_vit(backbone, "ijepa")
        super().__init__(backbone)
        self.predictor = MaskedPredictor(backbone.embed_dim, backbone.grid, predictor_dim, predictor_depth, predictor_heads, backbone.embed_dim)
        self.target = copy.deepcopy(backbone).requires_grad_(False)
        self.base_momentum = base_momentum
        self.mask_maker = mask_maker("blocks", backbone.grid, tuple(enc_scale), tuple(pred_scale), tuple(aspect_ratio), n_pred, min_keep)

    def masks(self):
        return ContextAndTargets(self.mask_maker)

    def forward(self, batch):
        (x,) = batch["views"]
        context, blocks = batch["context"], batch["targets"]
        with torch.no_grad():
            s_y = self.target.tokens(x).float()
            s_y = F.layer_norm(s_y, s_y.shape[-1:])
        s_x = self.backbone.tokens(x, keep=context)
        m = len(blocks)  # the blocks share one length (MultiBlockMasks): predict them as one batch
        predictions = self.predictor(s_x.repeat(m, 1, 1), context.repeat(m, 1), torch.cat(blocks)).float().chunk(m)
        loss = ijepa_loss(predictions, [select(s_y, block) for block in blocks])
        return {"loss": loss}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the average-pooled patch tokens of the context encoder ``(B, D)``."""
        return self.backbone.tokens(x).mean(dim=1)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.tokens(x).mean(dim=1)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the target encoder on a random context of ``x`` (the method's own masks)."""
        return masked_view(self.target, self.mask_maker, x)

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.backbone, linear_momentum(self.base_momentum, progress))
