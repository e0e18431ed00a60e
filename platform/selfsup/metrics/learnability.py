"""Cluster learnability, and CLID (Lu, Liu, Baratin, Laroche, Courville & Sordoni, TMLR 2023,
"Using representation expressiveness and learnability to evaluate self-supervised learning
methods", arXiv 2206.01251).

Cluster learnability (CL) asks how easily a simple learner picks up the structure the embedding
itself proposes: k-means splits the embeddings ``(N, D)`` into ``K`` pseudo-classes, and CL is the
mean validation accuracy of a ``k``-nearest-neighbour classifier (Euclidean, majority vote) trained
on the other folds to predict them, over ``F`` folds of a seeded shuffle (the TMLR version's
definition, which replaced the first version's prequential learning speed). CLID pairs it with the
TwoNN intrinsic dimension (``dimension.two_nn``, expressiveness): a good representation is both
learnable and expressive. The paper's exact way of combining the two was not readable here (its
abstract says they are combined into a single predictor); selfsup combines them as the report's
rules combine metrics, by each trial's mean rank under the two (``report.rules``: ``clid``).

``K = 10``, ``k = 10``, ``F = 5`` are this project's choices (the paper's were not readable either).
"""

from __future__ import annotations

import torch

from selfsup.metrics.clusters import kmeans

CLUSTERS, NEIGHBOURS, FOLDS = 10, 10, 5


def knn_cv_accuracy(z: torch.Tensor, labels: torch.Tensor, neighbours: int = NEIGHBOURS, folds: int = FOLDS, seed: int = 0) -> float:
    """Mean validation accuracy over ``folds`` folds of a ``neighbours``-NN majority vote
    (Euclidean; ties to the smaller label) predicting ``labels`` ``(N,)`` from ``z`` ``(N, D)``."""
    z = torch.as_tensor(z).detach().to(torch.float64)
    n = len(z)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k_labels = int(labels.max()) + 1
    accuracies = []
    for held in order.chunk(folds):
        train = order[~torch.isin(order, held)]
        k = min(neighbours, len(train))
        nearest = torch.cdist(z[held], z[train]).topk(k, dim=1, largest=False).indices
        votes = torch.zeros(len(held), k_labels, dtype=torch.float64).scatter_add_(1, labels[train][nearest], torch.ones(len(held), k, dtype=torch.float64))
        accuracies.append(float((votes.argmax(dim=1) == labels[held]).double().mean()))
    return sum(accuracies) / len(accuracies)


def cluster_learnability(z: torch.Tensor, clusters: int = CLUSTERS, neighbours: int = NEIGHBOURS, folds: int = FOLDS, seed: int = 0) -> float:
    """CL of ``z`` ``(N, D)``: :func:`knn_cv_accuracy` of its own k-means pseudo-labels."""
    _, labels = kmeans(torch.as_tensor(z).float(), min(clusters, len(z)), seed=seed)
    return knn_cv_accuracy(z, labels.cpu(), neighbours, folds, seed)
