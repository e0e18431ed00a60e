"""Clusters of embeddings: k-means (the pseudo-labels of InterCLR's memory bank and G-SimCLR's
batches), and a clustering method's label-free view of its own clusters: how evenly the samples
spread over them. Cluster collapse (every sample in one cluster, or a few) is the failure mode of DEPICT, GEDI,
InterCLR's online k-means and G-SimCLR's pseudo-labels; a sweep that logs this sees it happen.

For hard assignments ``c_i in {0..K-1}`` of ``N`` samples with cluster shares ``f_k = |{i: c_i = k}| / N``:
``cluster_entropy = -sum_k f_k log f_k / log K``, in ``[0, 1]``: 0 when every sample is in one
cluster, 1 when the ``K`` clusters are equally full.
"""

from __future__ import annotations

import math

import torch

CLUSTER_ENTROPY = "label_free/cluster_entropy"


def cluster_entropy(assignments: torch.Tensor, k: int) -> float:
    """Normalised entropy of the cluster sizes of ``assignments`` ``(N,)`` (integers in ``[0, k)``)."""
    if k < 2:
        return 0.0
    f = torch.bincount(assignments.flatten().long().cpu(), minlength=k).double() / assignments.numel()
    f = f[f > 0]
    return max(0.0, float(-(f * f.log()).sum() / math.log(k)))


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """The nearest centroid (Euclidean) ``(N,)`` of each row of ``x`` ``(N, D)``, ``chunk`` rows at a time."""
    c2 = (centroids.float() ** 2).sum(dim=1)
    return torch.cat([(c2 - 2 * part.float() @ centroids.float().T).argmin(dim=1) for part in x.split(chunk)])


def kmeans(x: torch.Tensor, k: int, iterations: int = 20, seed: int = 0, init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of ``x`` ``(N, D)`` into ``k`` clusters: centroids ``(k, D)`` started at
    ``init`` or at ``k`` distinct rows drawn with ``seed`` (Forgy, as faiss starts), then
    ``iterations`` rounds of assigning each row to its nearest centroid and moving each centroid to
    its rows' mean. A cluster left empty restarts at a row of the largest cluster (faiss splits its
    largest clusters the same way). Returns ``(centroids, labels (N,))``."""
    x = x.float()
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means of {len(x)} samples into {k} clusters: k must be between 1 and the number of samples")
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(len(x), generator=g)[:k].to(x.device)].clone() if init is None else init.float().clone()
    labels = assign(x, centroids)
    for _ in range(iterations):
        counts = torch.bincount(labels, minlength=k)
        for empty in (counts == 0).nonzero()[:, 0].tolist():
            members = (labels == counts.argmax()).nonzero()[:, 0]
            row = members[torch.randint(len(members), (1,), generator=g).item()]
            labels[row], counts = empty, torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        centroids = sums / counts[:, None].clamp_min(1).to(x.dtype)
        labels = assign(x, centroids)
    return centroids, labels
