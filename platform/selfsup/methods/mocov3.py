"""MoCo v3 (Chen, Xie & He, ICCV 2021): momentum contrast without a queue.

https://arxiv.org/abs/2104.02057 — Algorithm 1. The base encoder (backbone, projector,
predictor) gives queries ``q``; a momentum encoder (backbone, projector; an EMA of the base,
no gradient) gives keys ``k``. Each query must pick its own key among the keys of the whole
global batch (gathered across workers); the loss is symmetrised over the two views.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import Method, PredictorSection, register
from selfsup.gather import gather_with_grad, world
from selfsup.models.heads import Projected
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Widths
from selfsup.methods.ema import cosine_momentum, ema_update


def moco_v3_loss(q: torch.Tensor, k_all: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """``ctr(q, k) = CE(q k^T / tau, positives) * 2 tau`` as in the paper's Algorithm 1.

    ``q``: local queries ``(n, D)``; ``k_all``: keys of the global batch ``(N, D)`` in which the
    key of query ``i`` is row ``offset + i``. Both are L2-normalised first.
    """
    q, k = F.normalize(q, dim=1), F.normalize(k_all, dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


class MoCoV3Config(PredictorSection):
    """MoCo v3 (Chen et al., 2021): contrastive temperature, heads, momentum-encoder EMA."""

    name: Literal["mocov3"] = "mocov3"
    temperature: float = Field(0.2, gt=0.0)
    base_momentum: float = Field(0.99, ge=0.0, le=1.0)
    projector: Widths = Field(default_factory=lambda: [512, 128])
    predictor: Widths = Field(default_factory=lambda: [512, 128])


@register("mocov3")
class MoCoV3(Method):
    description = "MoCo v3 (Chen et al. 2021): query/momentum-key contrast over the global batch"
    family = "contrastive"
    config = MoCoV3Config

    def __init__(
        self,
        backbone,
        projector: list[int] = (512, 128),
        predictor: list[int] = (512, 128),
        temperature: float = 0.2,
        base_momentum: float = 0.99,
    ):
        super().__init__(backbone)
        self.head = make_projector(backbone.embed_dim, list(projector))
        self.predictor = make_projector(projector[-1], list(predictor))
        self.momentum_encoder = Projected(copy.deepcopy(backbone), copy.deepcopy(self.head)).requires_grad_(False)
        self.temperature, self.base_momentum = temperature, base_momentum

    def forward(self, batch):
        x1, x2 = batch["views"]
        q1 = self.predictor(self.project(x1)).float()
        q2 = self.predictor(self.project(x2)).float()
        with torch.no_grad():
            k1 = gather_with_grad(self.momentum_encoder(x1).float())
            k2 = gather_with_grad(self.momentum_encoder(x2).float())
        offset = world()[0] * q1.shape[0]
        loss = moco_v3_loss(q1, k2, self.temperature, offset) + moco_v3_loss(q2, k1, self.temperature, offset)
        return {"loss": loss}

    def after_step(self, progress: float) -> None:
        momentum = cosine_momentum(self.base_momentum, progress)
        ema_update(self.momentum_encoder.backbone, self.backbone, momentum)
        ema_update(self.momentum_encoder.head, self.head, momentum)
