"""The image methods of the second round (DINOv3, G-SimCLR, ScatSimCLR, SIE, InterCLR, cMIM, DEPICT,
GEDI): each loss against its paper's formula written out on inputs small enough to follow by
hand, and each method learning on scikit-learn's digits in seconds (a probe far above chance, no
collapse; the clustering methods' clusters spread)."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.data.datasets import digits
from selfsup.data.views import ViewCollate, build_views
from selfsup.methods import build_method
from selfsup.methods.depict import balanced_targets, depict_loss, ladder_loss
from selfsup.metrics.clusters import cluster_entropy
from selfsup.metrics.panel import evaluate
from selfsup.models.backbones import build_backbone
from selfsup.train.engine import Engine, build_optimizer


def train(name, params, backbone, recipe="light", epochs=6, lr=3e-3, data=None):
    """Panel before and after ``epochs`` of ``name`` on digits, and the mean loss of every epoch."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = data or digits()
    method = build_method(name, build_backbone(in_shape=d.shape, **backbone), **params)
    method.prepare(d.train.x, d.groups)
    probe = (d.train.x, d.train.y, d.test.x, d.test.y)
    before = evaluate(method, d.train.x[:512], "cpu", probe)
    views = build_views(recipe, d.shape, method.n_views)
    loader = DataLoader(TensorDataset(d.train.x), batch_size=128, shuffle=True, drop_last=True, collate_fn=ViewCollate(views, method.masks()))
    engine = Engine(method, method, build_optimizer(method, lr=lr, weight_decay=1e-4), total_steps=epochs * len(loader), warmup_steps=len(loader))
    losses = [sum(float(engine.train_step(b)["loss"]) for b in loader) / len(loader) for _ in range(epochs)]
    return method, before, evaluate(method, d.train.x[:512], "cpu", probe), losses


CNN = dict(name="cnn", embed_dim=64, width=16, depth=2)


def test_cluster_entropy_by_hand():
    assert cluster_entropy(torch.tensor([0, 0, 1, 1]), 2) == pytest.approx(1.0)
    assert cluster_entropy(torch.tensor([3, 3, 3, 3]), 4) == pytest.approx(0.0)
    assert cluster_entropy(torch.tensor([0, 0, 0, 1]), 4) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4))


def test_depict_targets_and_loss_by_hand():
    p = torch.tensor([[0.8, 0.2], [0.6, 0.4]])
    col = [0.8 + 0.6, 0.2 + 0.4]
    row0 = [0.8 / math.sqrt(col[0]), 0.2 / math.sqrt(col[1])]
    row1 = [0.6 / math.sqrt(col[0]), 0.4 / math.sqrt(col[1])]
    expected = torch.tensor([[v / sum(row0) for v in row0], [v / sum(row1) for v in row1]])
    q = balanced_targets(p)
    assert torch.allclose(q, expected, atol=1e-6)
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    kl = 0.0
    for i in range(2):
        p_noisy = [math.exp(v) / sum(math.exp(u) for u in logits[i].tolist()) for v in logits[i].tolist()]
        kl += sum(float(q[i, k]) * math.log(float(q[i, k]) / p_noisy[k]) for k in range(2))
    assert float(depict_loss(logits, q)) == pytest.approx(kl / 2, rel=1e-5)
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    assert float(ladder_loss([a, 2 * a], [b, b])) == pytest.approx(1.0 + 4.0)


def test_depict_learns_balanced_clusters_on_digits():
    """DEPICT's noisy pathway learns clusters of digits that stay balanced (entropy of the cluster
    sizes near 1) and the embedding probes far above chance (0.1) with its rank spread."""
    method, before, after, losses = train("depict", dict(clusters=10, noise=0.1), CNN, recipe="none", epochs=6)
    assert losses[-1] < losses[0]
    assert after["probe/linear_acc"] > before["probe/linear_acc"] + 0.01 and after["label_free/rankme"] > 12
    assert after["label_free/cluster_entropy"] > 0.8 > before["label_free/cluster_entropy"] + 0.5
