"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020).

https://arxiv.org/abs/2006.07733 — sec. 3.1 and Algorithm 1. The online network (backbone,
projector, predictor) predicts the target network's projection of the other view; the target
(backbone, projector) gets no gradient and follows the online weights by an exponential moving
average whose rate rises from ``base_momentum`` to 1 on a cosine schedule.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import Method, PredictorSection, register
from selfsup.models.heads import Projected
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Widths
from selfsup.methods.ema import cosine_momentum, ema_update


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(p_i, z_i)`` averaged over the batch ``(N, D)``; ``z`` (the target) is detached."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()



class BYOLConfig(PredictorSection):
    """BYOL (Grill et al., 2020): heads and target EMA base rate."""

    name: Literal["byol"] = "byol"
    base_momentum: float = Field(0.99, ge=0.0, le=1.0)
    projector: Widths = Field(default_factory=lambda: [512, 128])
    predictor: Widths = Field(default_factory=lambda: [512, 128])


@register("byol")
class BYOL(Method):
    description = "BYOL (Grill et al. 2020): online predictor regresses an EMA target, no negatives"
    family = "distillation"
    config = BYOLConfig

    def __init__(self, backbone, projector: list[int] = (512, 128), predictor: list[int] = (512, 128), base_momentum: float = 0.99):
        super().__init__(backbone)
        self.head = make_projector(backbone.embed_dim, list(projector))
        self.predictor = make_projector(projector[-1], list(predictor))
        self.target = Projected(copy.deepcopy(backbone), copy.deepcopy(self.head)).requires_grad_(False)
        self.base_momentum = base_momentum

    def forward(self, batch):
        x1, x2 = batch["views"]
        p1 = self.predictor(self.project(x1)).float()
        p2 = self.predictor(self.project(x2)).float()
        with torch.no_grad():
            z1, z2 = self.target(x1).float(), self.target(x2).float()
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return {"loss": loss}

    def after_step(self, progress: float) -> None:
        momentum = cosine_momentum(self.base_momentum, progress)
        ema_update(self.target.backbone, self.backbone, momentum)
        ema_update(self.target.head, self.head, momentum)
