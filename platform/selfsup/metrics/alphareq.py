"""alpha-ReQ: the power-law decay of the embedding's eigenspectrum (Agrawal et al., NeurIPS 2022).

https://arxiv.org/abs/2202.05808 (and the authors' ``reptrix`` package). The eigenvalues
``lambda_1 >= lambda_2 >= ...`` of the covariance of embeddings ``Z`` ``(N, D)`` are fitted by
``lambda_k ~ c k^(-alpha)``: a weighted least-squares line through ``(log k, log lambda_k)`` with
weights ``1 / k`` over the ranks ``k`` in ``fit`` (the first few eigenvalues, which carry the
largest, data-specific directions, are skipped as in the reference). ``alpha`` near 1 is where the
paper finds the best linear probes: a much smaller alpha is a flat, noise-like spectrum (every
direction equally strong), a much larger one a spectrum dominated by a few directions (towards
collapse). Invariant to scaling ``Z``.
"""

from __future__ import annotations

import torch

FIT = (2, 100)
"""Ranks (1-based, inclusive) the power law is fitted on, cut to the eigenvalues that are not zero."""


def eigenspectrum(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the covariance of ``z`` ``(N, D)``, largest first, in float64."""
    z = z.detach().to(torch.float64)
    sigma = torch.linalg.svdvals(z - z.mean(dim=0))
    return sigma**2 / max(len(z) - 1, 1)


def alpha_req(z: torch.Tensor, fit: tuple[int, int] = FIT) -> float:
    """The decay exponent ``alpha`` of ``z``'s eigenspectrum (NaN if fewer than 3 ranks can be fitted)."""
    lam = eigenspectrum(z)
    usable = int((lam > lam[0] * 1e-12).sum()) if len(lam) and lam[0] > 0 else 0
    hi = min(fit[1], usable)
    if hi - fit[0] + 1 < 3:
        return float("nan")
    k = torch.arange(fit[0], hi + 1, dtype=torch.float64)
    y = torch.log(lam[fit[0] - 1 : hi])
    x = torch.stack([-torch.log(k), torch.ones_like(k)], dim=1)
    w = 1.0 / k
    coef = torch.linalg.solve(x.T @ (x * w[:, None]), x.T @ (w * y))
    return float(coef[0])
