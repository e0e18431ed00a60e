"""DSE, the Dense representation Structure Estimator (Dai, Xu, Wen, Liu & Huang, NeurIPS 2025,
arXiv 2510.17299): how well the *patch* (token) features of a ViT or a masked method separate into
k-means pseudo-classes, plus how many directions they spread over. Image-level metrics (RankMe,
LiDAR, alpha-ReQ) can rise while dense features degrade late in training; DSE tracks the latter.

Patch features ``(B, N, D)`` of ``B`` samples, ``N`` tokens each, L2-normalised (the reference's
``--normalize``), every term divided by ``a``, the mean distance of a token to the mean token:

- ``M_inter``: over groups of ``group`` (8) samples, k-means of the group's tokens into
  ``global_clusters`` (24) clusters; the mean distance of a token to the nearest centroid *other
  than its own* (separation between pseudo-classes);
- ``M_intra``: the mean spread of a pseudo-class, ``sum(singular values of its centred tokens) /
  sqrt(max(n_c - 1, D))``, averaged over the group clusters above and, half-weighted beside them,
  over ``local_clusters`` (3) k-means clusters of each sample's own tokens;
- ``M_dim``: the effective rank (RankMe: ``exp`` of the entropy of the normalised singular values,
  over ``min(B, D)``) of ``B`` tokens, one per sample at a shuffled token position, averaged over
  positions.

    DSE = M_inter - (M_intra,group + M_intra,sample) / 2 + M_dim

as the reference's ``estimator.py`` (``compute_DSE``) computes it with its weight ``lambda = 1`` (its
README re-weights the terms by their standard deviations across a model's checkpoints, which one
epoch's panel does not have). k-means here is ``clusters.kmeans`` (Forgy start, 20 Lloyd rounds)
where the reference starts with k-means++ and stops early: both find a local optimum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.metrics.clusters import kmeans
from selfsup.metrics.rankme import rankme

GROUP, GLOBAL_CLUSTERS, LOCAL_CLUSTERS = 8, 24, 3


def spread(points: torch.Tensor) -> float:
    """``sum(singular values of the centred points) / sqrt(max(n - 1, D))`` of ``(n, D)``."""
    n, d = points.shape
    return float(torch.linalg.svdvals(points - points.mean(dim=0)).sum() / math.sqrt(max(n - 1, d)))


def effective_rank(points: torch.Tensor) -> float:
    """RankMe of ``(n, D)`` over ``min(n, D)``, with the reference's ``eps = 1e-12``."""
    return rankme(points, eps=1e-12) / min(points.shape)


def cluster_spreads(points: torch.Tensor, labels: torch.Tensor, k: int) -> list[float]:
    return [spread(points[labels == c]) for c in range(k) if int((labels == c).sum()) > 1]


def dse(tokens: torch.Tensor, group: int = GROUP, global_clusters: int = GLOBAL_CLUSTERS, local_clusters: int = LOCAL_CLUSTERS,
        seed: int = 0) -> float:
    """DSE of patch features ``tokens`` ``(B, N, D)`` (higher: better dense structure)."""
    b, n, d = tokens.shape
    z = F.normalize(torch.as_tensor(tokens).detach().to(torch.float64), dim=-1)
    scale = float((z - z.mean(dim=(0, 1))).norm(dim=-1).mean())
    if b < 2 or n < local_clusters or scale == 0:
        return math.nan
    per_sample = []
    for i in range(b):
        _, labels = kmeans(z[i], local_clusters, seed=seed)
        spreads = cluster_spreads(z[i], labels, local_clusters)
        per_sample.append(sum(spreads) / len(spreads) if spreads else 1.0)
    separation, group_spreads = [], []
    for start in range(0, b, group):
        pooled = z[start:start + group].reshape(-1, d)
        k = min(global_clusters, len(pooled))
        centroids, labels = kmeans(pooled, k, seed=seed)
        group_spreads += cluster_spreads(pooled, labels, k)
        to_centroids = torch.cdist(pooled, centroids.to(pooled.dtype))
        to_centroids[torch.arange(len(pooled)), labels] = math.inf
        separation.append(float(to_centroids.min(dim=1).values.mean()) if k > 1 else 0.0)
    g = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([z[i, torch.randperm(n, generator=g)] for i in range(b)], dim=1)  # (N, B, D)
    m_dim = sum(effective_rank(s) for s in shuffled) / n
    m_inter = sum(separation) / len(separation) / scale
    m_intra_group = (sum(group_spreads) / len(group_spreads) if group_spreads else 1.0) / scale
    m_intra_sample = sum(per_sample) / b / scale
    return m_inter + m_dim - (m_intra_group + m_intra_sample) / 2
