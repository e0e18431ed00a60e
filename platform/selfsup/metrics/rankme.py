"""RankMe: the effective rank of embeddings (Garrido, Balestriero, Najman & LeCun, ICML 2023).

https://arxiv.org/abs/2210.02885, eq. (1). For embeddings ``Z`` of shape ``(N, D)`` with singular
values ``sigma_k``: ``p_k = sigma_k / ||sigma||_1 + eps`` and ``RankMe(Z) = exp(-sum_k p_k log p_k)``,
with ``eps = 1e-7``. It lies in ``[1, min(N, D)]``: about 1 for a collapsed (rank-one) embedding,
``D`` for an isotropic one, and is invariant to scaling ``Z``.
"""

from __future__ import annotations

import torch

EPS = 1e-7


def rankme(z: torch.Tensor, eps: float = EPS) -> float:
    """RankMe of ``z`` ``(N, D)``, computed in float64 whatever the input dtype."""
    sigma = torch.linalg.svdvals(z.detach().to(torch.float64))
    p = sigma / sigma.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
