"""A clustering method's label-free view of its own clusters: how evenly the samples spread over
them. Cluster collapse (every sample in one cluster, or a few) is the failure mode of DEPICT, GEDI,
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
