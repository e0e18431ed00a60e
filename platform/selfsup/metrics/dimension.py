"""Intrinsic dimension of embeddings ``(N, D)``: how many directions the samples actually vary in,
whatever the width ``D`` they are written in.

**TwoNN** (Facco, d'Errico, Rodriguez & Laio, Sci. Rep. 2017, "Estimating the intrinsic dimension of
datasets by a minimal neighborhood information"). For each point ``i`` with distances ``r1 <= r2`` to
its two nearest neighbours, ``mu_i = r2 / r1``; on a locally uniform ``d``-dimensional sample the
``mu_i`` are Pareto distributed, ``F(mu) = 1 - mu^(-d)``, so ``-log(1 - F(mu)) = d log mu``. The
estimate is the slope of that line through the origin, fitted by least squares to the empirical
distribution (the ``i``-th smallest ``mu`` at ``F = i / N``) after the 10% largest ``mu`` are
discarded (the paper's choice, and scikit-dimension's ``skdim.id.TwoNN`` default):

    d = sum_i x_i y_i / sum_i x_i^2,   x_i = log mu_(i),  y_i = -log(1 - i / N),  i <= floor(0.9 N)

Points with a duplicate (``r1 = 0``) are left out. Lu et al. (arXiv 2206.01251) read TwoNN as a
representation's *expressiveness*, the ID half of CLID.

**MST dimension** (``dim_MST``, the estimator of IdEst, Mordacq, Kalogeiton & Oudot, arXiv
2606.03338): the total edge length ``L(n)`` of the Euclidean minimum spanning tree of ``n`` points
drawn from a ``d``-dimensional measure grows as ``n^((d - 1) / d)`` (Steele 1988); with ``m`` the
slope of ``log L(n)`` against ``log n`` over subsamples of growing size, ``dim_MST = 1 / (1 - m)``
(the persistent-homology dimension ``dim_PH0`` of Schweinhart 2020 and Adams et al. 2020, the MST's
edges being the 0-dimensional persistence intervals). IdEst reports that a *lower* ``dim_MST`` goes
with a better linear probe across SSL models. The IdEst paper's body was not readable here (its
abstract names the estimator), so the subsample grid is this project's choice: six sizes spaced
evenly from ``N / 4`` to ``N``, each length the mean of three draws (the whole set once).

Cost: both build the ``(N, N)`` distance matrix, ``O(N^2 D)``, and the MST dimension 16 spanning trees of
up to ``N`` points, ``O(N^2)`` each; the per-epoch panel reads the first :data:`PANEL_POINTS` of its
evaluation subset (``eval.subset_size``), about 0.1 s for TwoNN and 0.4 s for the MST dimension of
1,024 512-wide embeddings on one CPU core.
"""

from __future__ import annotations

import math

import numpy as np
import torch

TWONN_DISCARD = 0.1
"""Share of the largest ``mu`` left out of TwoNN's fit (Facco et al. 2017)."""
PANEL_POINTS = 1024
"""At most this many embeddings (the first ones) enter an estimate in the per-epoch panel."""


def distances(z: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(N, N)`` between the rows of ``z`` ``(N, D)``, in float64."""
    z = torch.as_tensor(z).detach().to(torch.float64)
    return torch.cdist(z, z)


def two_nn(z: torch.Tensor, discard: float = TWONN_DISCARD) -> float:
    """TwoNN intrinsic dimension of ``z`` ``(N, D)`` (NaN with fewer than 3 distinct points)."""
    d = distances(z)
    d.fill_diagonal_(math.inf)
    r = d.topk(2, dim=1, largest=False).values
    r = r[r[:, 0] > 0]
    if len(r) < 3:
        return math.nan
    mu = (r[:, 1] / r[:, 0]).sort().values
    n = len(mu)
    keep = int(math.floor(n * (1 - discard)))
    x = mu[:keep].log()
    y = -torch.log1p(-torch.arange(1, keep + 1, dtype=torch.float64) / n)
    return float((x * y).sum() / (x * x).sum()) if float((x * x).sum()) > 0 else math.nan


def mst_length(z: torch.Tensor) -> float:
    """Total edge length of the Euclidean minimum spanning tree of the rows of ``z`` ``(N, D)``."""
    return tree_length(distances(z).numpy())


def tree_length(d: np.ndarray) -> float:
    """Total edge length of the minimum spanning tree of distances ``d`` ``(N, N)`` (Prim's
    algorithm on the dense matrix, ``O(N^2)``)."""
    n = len(d)
    if n < 2:
        return 0.0
    joined = np.zeros(n, bool)
    joined[0] = True
    reach = d[0].copy()  # each point's shortest edge to the tree so far
    reach[0] = np.inf
    total = 0.0
    for _ in range(n - 1):
        j = int(reach.argmin())
        total += reach[j]
        joined[j] = True
        np.minimum(reach, d[j], out=reach)
        reach[joined] = np.inf
    return float(total)


def dimension_from_lengths(sizes, lengths) -> float:
    """``1 / (1 - m)``, ``m`` the least-squares slope of ``log lengths`` against ``log sizes`` (NaN
    for ``m >= 1``: lengths growing as fast as the count of points fit no dimension)."""
    m = float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(lengths, float)), 1)[0])
    return 1.0 / (1.0 - m) if m < 1 else math.nan


def mst_dimension(z: torch.Tensor, steps: int = 6, draws: int = 3, seed: int = 0) -> float:
    """``dim_MST`` of ``z`` ``(N, D)``: MST lengths of ``draws`` random subsamples at each of
    ``steps`` sizes from ``N / 4`` to ``N`` (the whole set once), and the slope of their logs."""
    n = len(z)
    if n < 16:
        return math.nan
    d = distances(z).numpy()
    rng = np.random.default_rng(seed)
    sizes = sorted({int(s) for s in np.linspace(n // 4, n, steps)})
    lengths = []
    for size in sizes:
        picks = [rng.permutation(n)[:size] for _ in range(1 if size == n else draws)]
        lengths.append(np.mean([tree_length(d[np.ix_(p, p)]) for p in picks]))
    if min(lengths) <= 0:
        return math.nan
    return dimension_from_lengths(sizes, lengths)
