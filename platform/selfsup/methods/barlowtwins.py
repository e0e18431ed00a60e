"""Barlow Twins: redundancy reduction (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021).

https://arxiv.org/abs/2103.03230 — Algorithm 1. Two views pass through backbone and projector;
the cross-correlation matrix of their batch-standardised projections is pulled towards the
identity. The batch statistics are those of the *global* batch: projections are gathered across
workers with gradients before standardising.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from selfsup.methods.base import Method, register
from selfsup.gather import gather_with_grad
from selfsup.methods.vicreg import off_diagonal
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Section, Widths


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """Barlow Twins loss of two batches ``(N, D)``.

    Each dimension is standardised over the batch (``(z - mean) / sqrt(var + eps)``, biased
    variance, as the paper's affine-free BatchNorm), ``C = z1n^T z2n / N`` ``(D, D)``, and
    ``loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.
    """
    n = z1.shape[0]
    z1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)
    z2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)
    c = z1.T @ z2 / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return {"loss": on_diag + lambd * off_diag, "on_diag": on_diag, "off_diag": off_diag}


class BarlowTwinsConfig(Section):
    """Barlow Twins (Zbontar et al., 2021): off-diagonal weight lambda and projector."""

    name: Literal["barlowtwins"] = "barlowtwins"
    lambd: float = Field(0.0051, ge=0.0)
    projector: Widths = Field(default_factory=lambda: [512, 512])


@register("barlowtwins")
class BarlowTwins(Method):
    description = "Barlow Twins (Zbontar et al. 2021): cross-correlation of two views pulled to the identity"
    family = "redundancy_reduction"
    config = BarlowTwinsConfig

    def __init__(self, backbone, projector: list[int] = (512, 512), lambd: float = 0.0051):
        super().__init__(backbone)
        self.head = make_projector(backbone.embed_dim, list(projector))
        self.lambd = lambd

    def forward(self, batch):
        x1, x2 = batch["views"]
        z1 = gather_with_grad(self.project(x1).float())
        z2 = gather_with_grad(self.project(x2).float())
        return barlow_twins_loss(z1, z2, self.lambd)
