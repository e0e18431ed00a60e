"""LiDAR: the smooth rank of the linear-discriminant matrix of augmented views (Thilak et al., ICLR 2024).

https://arxiv.org/abs/2312.04000, sec. 3. Every sample ``i`` of ``n`` is a surrogate class whose
``q`` augmented views ``e_ij`` (embeddings ``(n, q, D)``, the views of one sample kept together) give

    mu_i  = mean_j e_ij,   mu = mean_i mu_i
    S_b   = 1/(n - 1) sum_i (mu_i - mu)(mu_i - mu)^T                       # between surrogate classes
    S_w   = 1/(n (q - 1)) sum_ij (e_ij - mu_i)(e_ij - mu_i)^T + delta I    # within, delta-regularised
    S     = S_w^(-1/2) S_b S_w^(-1/2)
    LiDAR = exp(-sum_k p_k log p_k),  p_k = lambda_k / ||lambda||_1 + eps  # lambda: eigenvalues of S

RankMe counts the directions the embedding spreads over; LiDAR counts those that separate samples
*relative to how much augmentation moves them*, so a direction that is wide but not invariant no
longer counts. The paper uses ``delta = 1e-4`` and ``eps = 1e-7``; like RankMe, LiDAR lies in
``[1, min(n - 1, D)]``.
"""

from __future__ import annotations

import torch

DELTA, EPS = 1e-4, 1e-7


def lidar(z: torch.Tensor, delta: float = DELTA, eps: float = EPS) -> float:
    """LiDAR of ``z`` ``(n, q, D)``: ``n`` samples, ``q >= 2`` views each, computed in float64."""
    if z.ndim != 3 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"LiDAR needs embeddings (n >= 2 samples, q >= 2 views, D), got {tuple(z.shape)}")
    z = z.detach().to(torch.float64)
    n, q, d = z.shape
    class_means = z.mean(dim=1)
    between = class_means - class_means.mean(dim=0)
    s_b = between.T @ between / (n - 1)
    within = (z - class_means[:, None]).reshape(n * q, d)
    s_w = within.T @ within / (n * (q - 1)) + delta * torch.eye(d, dtype=torch.float64)
    w_vals, w_vecs = torch.linalg.eigh(s_w)
    inv_sqrt = w_vecs @ torch.diag(w_vals.rsqrt()) @ w_vecs.T
    lam = torch.linalg.eigvalsh(inv_sqrt @ s_b @ inv_sqrt).clamp(min=0)
    p = lam / lam.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
