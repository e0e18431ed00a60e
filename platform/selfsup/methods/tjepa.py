"""T-JEPA: augmentation-free JEPA for tabular data (Thimonier et al., 2024).

https://arxiv.org/abs/2410.05016 — sec. 3 and the reference code (jose-melo/t-jepa). A row is a
sequence of column tokens (``selfsup.models.transformers.FeatureTransformer``: numerical and
categorical embeddings plus [REG] regularization tokens). Per row, a context subset of the columns
and ``n_pred`` target subsets of the other columns (``selfsup.data.masks.FeatureMasks``, made at
collate time):

    s_y = target_encoder(x)                       # all columns, EMA weights, no gradient
    s_x = context_encoder(x, keep=context)        # only the context columns (and [REG]) enter
    for each target subset T_i:
        s_hat = predictor(s_x, context, T_i)      # mask tokens at T_i's column positions
        loss += mean_{j in T_i} ||s_hat_j - s_y_j||^2 / n_pred

The loss is I-JEPA's (``ijepa_loss``: squared L2 averaged over subsets, columns and dims; the
reference uses ``MSELoss``). The encoders end in a LayerNorm, as the reference's do, so the targets
are not normalised again. The target encoder follows by an EMA whose rate rises linearly from
``base_momentum`` (0.996) to 1. The representation (``embed``) is the mean of the target encoder's
column tokens ``(B, D)`` (the reference probes the flattened tokens ``(B, F * D)``; the mean keeps
the metric panel's dimension independent of the number of columns).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, model_validator

from selfsup.data.masks import FeatureMasks
from selfsup.methods.base import Method, PredictorShape, masked_view, register
from selfsup.methods.ijepa import ContextAndTargets, ijepa_loss
from selfsup.models.predictor import MaskedPredictor
from selfsup.models.tokens import select
from selfsup.models.transformers import FeatureTransformer
from selfsup.sections import Fraction, Range, check_shares
from selfsup.methods.ema import ema_update, linear_momentum


class TJEPAConfig(PredictorShape):
    """T-JEPA (Thimonier et al., 2024): predictor size, target EMA and the feature masks (shares are
    fractions of the table's columns; defaults from the reference code)."""

    name: Literal["tjepa"] = "tjepa"
    predictor_dim: int = Field(64, ge=2)
    predictor_depth: int = Field(2, ge=1)
    predictor_heads: int = Field(4, ge=1)
    base_momentum: Fraction = 0.996
    n_pred: int = Field(4, ge=1)
    context_share: Range = (0.2, 0.4)
    target_share: Range = (0.2, 0.4)

    @model_validator(mode="after")
    def _check(self) -> "TJEPAConfig":
        check_shares(self, "context_share", "target_share", below_one=True)
        return self


@register("tjepa")
class TJEPA(Method):
    description = "T-JEPA (Thimonier et al. 2024): predict an EMA encoder's column tokens of a table row from a subset of its columns"
    family = "jepa"
    config = TJEPAConfig
    modality = "table"
    recipes = ("none",)
    backbones = ("ft_transformer",)
    masked = True
    n_views = 1
    encoder = "target"

    def __init__(
        self,
        backbone,
        predictor_dim: int = 64,
        predictor_depth: int = 2,
        predictor_heads: int = 4,
        base_momentum: float = 0.996,
        n_pred: int = 4,
        context_share: tuple[float, float] = (0.2, 0.4),
        target_share: tuple[float, float] = (0.2, 0.4),
    ):
        if not isinstance(backbone, FeatureTransformer):
            raise ValueError("method 'tjepa' needs the feature transformer (model.backbone: ft_transformer)")
        super().__init__(backbone)
        self.predictor = MaskedPredictor(backbone.embed_dim, backbone.grid, predictor_dim, predictor_depth, predictor_heads, backbone.embed_dim)
        self.target = copy.deepcopy(backbone).requires_grad_(False)
        self.base_momentum = base_momentum
        self.mask_maker = FeatureMasks(backbone.grid[0], tuple(context_share), tuple(target_share), n_pred)

    def masks(self):
        return ContextAndTargets(self.mask_maker)

    def forward(self, batch):
        (x,) = batch["views"]
        context, subsets = batch["context"], batch["targets"]
        with torch.no_grad():
            s_y = self.target.tokens(x).float()
        s_x = self.backbone.tokens(x, keep=context)
        predictions = [self.predictor(s_x, context, subset).float() for subset in subsets]
        return {"loss": ijepa_loss(predictions, [select(s_y, subset) for subset in subsets])}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the mean column token of the context encoder ``(B, D)``."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the target encoder on a random context of ``x`` (the method's own masks)."""
        return masked_view(self.target, self.mask_maker, x)

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.backbone, linear_momentum(self.base_momentum, progress))
