"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, ICLR 2022).

https://arxiv.org/abs/2105.04906 — pseudo-code in Algorithm 1; reference implementation
https://github.com/facebookresearch/vicreg. Two views pass through backbone and expander; the loss
pulls the pair together (invariance), keeps each dimension's standard deviation above 1
(variance) and decorrelates dimensions (covariance). Variance and covariance are statistics of the
*global* batch: embeddings are gathered across workers with gradients before computing them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import Method, register
from selfsup.gather import gather_with_grad
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Section, Widths


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """Off-diagonal entries of a square matrix ``(D, D)`` as a flat ``(D * (D - 1),)`` tensor."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``v(Z) = 1/D sum_j max(0, 1 - sqrt(Var(z^j) + eps))`` over ``(N, D)``."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """``c(Z) = 1/D sum_{i != j} C(Z)_{ij}^2`` with ``C(Z) = 1/(N-1) sum_i (z_i - zbar)(z_i - zbar)^T`` over ``(N, D)``."""
    z = z - z.mean(dim=0)
    return off_diagonal(z.T @ z / (z.shape[0] - 1)).pow(2).sum() / z.shape[1]


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> dict[str, torch.Tensor]:
    """VICReg loss of two batches of embeddings ``(N, D)`` (the global batch).

    ``s(Z, Z') = 1/N sum_i ||z_i - z'_i||^2 / D``  (mean squared error),
    ``v(Z)`` and ``c(Z)`` as :func:`variance_term` and :func:`covariance_term`,
    ``loss = lambda s + mu (v(Z) + v(Z')) / 2 + nu (c(Z) + c(Z'))``.
    """
    invariance = F.mse_loss(z1, z2)
    variance = variance_term(z1, eps) / 2 + variance_term(z2, eps) / 2
    covariance = covariance_term(z1) + covariance_term(z2)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}


class VICRegConfig(Section):
    """VICReg (Bardes et al., 2022) loss weights and expander."""

    name: Literal["vicreg"] = "vicreg"
    sim_coeff: float = Field(25.0, ge=0.0)
    std_coeff: float = Field(25.0, ge=0.0)
    cov_coeff: float = Field(1.0, ge=0.0)
    projector: Widths = Field(default_factory=lambda: [512, 512])


@register("vicreg")
class VICReg(Method):
    description = "VICReg (Bardes et al. 2022): variance-invariance-covariance regularization"
    family = "redundancy_reduction"
    config = VICRegConfig

    def __init__(self, backbone, projector: list[int] = (512, 512), sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
        super().__init__(backbone)
        self.head = make_projector(backbone.embed_dim, list(projector))  # the paper's expander
        self.coeffs = dict(sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff)

    def forward(self, batch):
        x1, x2 = batch["views"]
        z1 = gather_with_grad(self.project(x1).float())
        z2 = gather_with_grad(self.project(x2).float())
        return vicreg_loss(z1, z2, **self.coeffs)
