"""Augmentation consistency: whether a sample's other views are its view's nearest neighbours.

Embeddings ``(n, q, D)`` of ``q`` augmented views of each of ``n`` samples (the panel's LiDAR views,
so no extra forward pass). Each of the ``n q`` views looks up its ``q - 1`` nearest neighbours by
cosine similarity among the other ``n q - 1`` views; the consistency is the share of those
neighbours, over all views, that are views of the same sample:

    consistency = 1 / (n q (q - 1)) sum_{i,j} |kNN_{q-1}(e_ij) ∩ {e_ik : k != j}|

1 when every sample's views sit together apart from the others', ``(q - 1) / (n q - 1)`` by chance
(views placed at random). It says nothing of how many directions the samples spread over (a
2-dimensional embedding can score 1), so it is read beside a spread measure (RankMe, LiDAR). It is
the retrieval view of what LiDAR measures with covariances, and of the instance discrimination
that contrastive methods train for.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augmentation_consistency(z: torch.Tensor) -> float:
    """Share of each view's ``q - 1`` nearest views (cosine) that belong to its own sample; ``z`` is
    ``(n, q, D)`` with ``n >= 2`` samples of ``q >= 2`` views each."""
    if z.ndim != 3 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"augmentation consistency needs embeddings (n >= 2 samples, q >= 2 views, D), got {tuple(z.shape)}")
    n, q, _ = z.shape
    e = F.normalize(torch.as_tensor(z).detach().to(torch.float64).reshape(n * q, -1), dim=1)
    sims = e @ e.T
    sims.fill_diagonal_(-math.inf)
    nearest = sims.topk(q - 1, dim=1).indices
    sample = torch.arange(n).repeat_interleave(q)
    return float((sample[nearest] == sample[:, None]).double().mean())
