"""Label-based probes on frozen features: linear (logistic regression) and k-nearest-neighbours.

Both train on the train split's features and report accuracy on the test split, as in the
standard linear and kNN evaluation protocols (e.g. Wu et al. 2018 for weighted kNN);
:func:`cross_validated` scores either on every labelled sample instead (stratified k-fold over the
two splits pooled), for datasets whose test split is too small to tell close runs apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of L2-regularised logistic regression on standardised features ``(N, D)``."""
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(scaler.transform(x_train), y_train)
    return float(clf.score(scaler.transform(x_test), y_test))


def knn_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, k: int = 20, tau: float = 0.07
) -> float:
    """Test accuracy of a cosine-similarity kNN vote weighted by ``exp(sim / tau)``."""
    train = F.normalize(torch.as_tensor(x_train, dtype=torch.float32), dim=1)
    test = F.normalize(torch.as_tensor(x_test, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(y_train, dtype=torch.int64)
    k = min(k, len(train))
    sims, idx = (test @ train.T).topk(k, dim=1)
    votes = torch.zeros(len(test), int(labels.max()) + 1)
    votes.scatter_add_(1, labels[idx], torch.exp(sims / tau))
    return float((votes.argmax(dim=1).numpy() == np.asarray(y_test)).mean())


def cross_validated(probe, x: np.ndarray, y: np.ndarray, folds: int, seed: int = 0) -> float:
    """Accuracy of ``probe(x_train, y_train, x_test, y_test)`` over every sample of ``x`` ``(N, D)``:
    stratified ``folds``-fold, each sample predicted once by the probe fitted on the other folds
    (the fold-size-weighted mean of the folds' accuracies). Its binomial standard error is that of
    an ``N``-sample test set, ``sqrt(folds / (folds - 1))`` times smaller than a ``1/folds`` split's."""
    from sklearn.model_selection import StratifiedKFold

    classes, counts = np.unique(y, return_counts=True)
    folds = max(2, min(folds, int(counts.min())))
    correct = 0.0
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        correct += probe(x[tr], y[tr], x[te], y[te]) * len(te)
    return correct / len(y)
