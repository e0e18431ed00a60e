"""SimCLR: contrastive learning with the NT-Xent loss (Chen, Kornblith, Norouzi & Hinton, ICML 2020).

https://arxiv.org/abs/2002.05709 — Algorithm 1. Two views of each image pass through backbone and
projection head; each view must pick out its partner among all ``2N - 1`` other views of the
global batch. Candidates (negatives) are gathered across workers with gradients, anchors stay
local, so a W-worker run computes the same loss and gradient as one worker with the global batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import Method, register
from selfsup.gather import gather_with_grad, world
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Section, Widths


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """NT-Xent averaged over the ``2n`` local anchors.

    ``z1, z2``: local projections ``(n, D)`` of the two views. ``z1_all, z2_all``: the global batch
    ``(N, D)`` (default: the local one), in which the local rows start at ``offset``. With
    ``sim(u, v) = u.v / (|u||v|)``, anchor ``i`` and its partner ``j``:
    ``l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau)``,
    ``k`` running over all ``2N`` views.
    """
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    n, big_n = z1.shape[0], z1_all.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)
    candidates = F.normalize(torch.cat([z1_all, z2_all]), dim=1)
    logits = anchors @ candidates.T / temperature
    idx = torch.arange(n, device=z1.device) + offset
    self_idx = torch.cat([idx, idx + big_n])
    partner = torch.cat([idx + big_n, idx])
    logits[torch.arange(2 * n, device=z1.device), self_idx] = float("-inf")
    return F.cross_entropy(logits, partner)


class SimCLRConfig(Section):
    """SimCLR (Chen et al., 2020) NT-Xent temperature and projection head."""

    name: Literal["simclr"] = "simclr"
    temperature: float = Field(0.2, gt=0.0)
    projector: Widths = Field(default_factory=lambda: [256, 128])


@register("simclr")
class SimCLR(Method):
    description = "SimCLR (Chen et al. 2020): NT-Xent contrastive loss, negatives from all workers"
    family = "contrastive"
    config = SimCLRConfig
    recipes = ("simclr", "byol", "light")

    def __init__(self, backbone, projector: list[int] = (256, 128), temperature: float = 0.2):
        super().__init__(backbone)
        self.head = make_projector(backbone.embed_dim, list(projector))
        self.temperature = temperature

    def forward(self, batch):
        x1, x2 = batch["views"]
        z1, z2 = self.project(x1).float(), self.project(x2).float()
        rank, _ = world()
        loss = nt_xent_loss(z1, z2, self.temperature, gather_with_grad(z1), gather_with_grad(z2), rank * z1.shape[0])
        return {"loss": loss}
