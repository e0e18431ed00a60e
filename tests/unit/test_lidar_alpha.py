"""LiDAR and alpha-ReQ on hand-computable embeddings."""

import math

import pytest
import torch

from selfsup.metrics.alphareq import alpha_req, eigenspectrum
from selfsup.metrics.lidar import DELTA, EPS, lidar


def smooth_rank(lams):
    total = sum(lams)
    p = [v / total + EPS for v in lams]
    return math.exp(-sum(x * math.log(x) for x in p))


def test_lidar_ignores_directions_that_only_augmentation_moves():
    # two samples apart along x; each one's two views differ only along y
    z = torch.tensor([[[1.0, 1.0], [1.0, -1.0]], [[-1.0, 1.0], [-1.0, -1.0]]])
    # S_b = diag(2, 0); S_w = diag(0, 2) + delta I; S = diag(2 / delta, 0)
    assert lidar(z) == pytest.approx(smooth_rank([2 / DELTA, 0.0]), rel=1e-9)
    assert lidar(z) == pytest.approx(1.0, abs=1e-5)


def test_lidar_of_invariant_views_is_the_rank_of_the_class_means():
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    z = means[:, None].expand(4, 3, 2)  # three identical views per sample
    # S_b = diag(2/3, 2/3), S_w = delta I: two equal eigenvalues
    assert lidar(z) == pytest.approx(smooth_rank([1.0, 1.0]), rel=1e-9)
    assert lidar(z) == pytest.approx(2.0, rel=1e-5)


def test_lidar_weighs_each_direction_by_its_invariance():
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    a, c = 1.0, 10.0  # views move a sample by +-a along x and +-c along y
    offsets = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, c], [0.0, -c]])
    z = means[:, None] + offsets[None]
    # S_b = diag(2/3, 2/3); S_w = diag(8a^2, 8c^2) / 12 + delta I
    lams = [(2 / 3) / (8 * a**2 / 12 + DELTA), (2 / 3) / (8 * c**2 / 12 + DELTA)]
    assert lidar(z) == pytest.approx(smooth_rank(lams), rel=1e-9)
    assert 1.0 < lidar(z) < 1.1  # RankMe of the same points would be 2: y is wide, but not invariant


def test_lidar_needs_grouped_views():
    with pytest.raises(ValueError, match="n >= 2 samples, q >= 2 views"):
        lidar(torch.randn(10, 4))


def power_law_embedding(alpha, n=400, d=64):
    """Embeddings whose covariance eigenvalues are exactly ``k^-alpha``, k = 1..d."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(dim=0))  # orthonormal, zero-mean columns
    k = torch.arange(1, d + 1, dtype=torch.float64)
    return q * torch.sqrt((n - 1) * k**-alpha)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_a_power_law(alpha):
    z = power_law_embedding(alpha)
    lam = eigenspectrum(z)
    assert torch.allclose(lam[:64], torch.arange(1, 65, dtype=torch.float64) ** -alpha, rtol=1e-9)
    assert alpha_req(z) == pytest.approx(alpha, rel=1e-9)
    assert alpha_req(7.0 * z) == pytest.approx(alpha, rel=1e-9)  # scale-invariant


def test_alpha_req_of_a_collapsed_embedding_is_nan():
    assert math.isnan(alpha_req(torch.ones(50, 8)))
    assert math.isnan(alpha_req(torch.randn(50, 1) * torch.ones(1, 8)))  # rank one: nothing to fit


def test_lidar_views_stay_grouped_by_sample_and_repeat_every_epoch():
    from selfsup.metrics.panel import lidar_views

    x = torch.arange(5, dtype=torch.float32)[:, None] * 100  # sample i is 100 * i
    view = lambda b: b + torch.rand_like(b)  # noqa: E731  (a view moves a sample by less than 1)
    v = lidar_views(view, x, q=4)
    assert v.shape == (20, 1)
    grouped = v.reshape(5, 4)
    assert torch.all((grouped - x).abs() < 1)  # rows i*q .. i*q+q-1 are views of sample i
    assert len(set(grouped[0].tolist())) == 4  # different views of one sample
    assert torch.equal(v, lidar_views(view, x, q=4))  # the same fixed views every epoch


def test_masked_methods_also_log_lidar_under_augmentations(tmp_path):
    """T-JEPA's LiDAR views are its own random contexts; ``label_free/lidar_aug`` measures the same
    backbone under SCARF corruptions (the table augmentation). Two-view methods get no second LiDAR."""
    from selfsup.config import load_experiment
    from selfsup.metrics.panel import evaluate
    from selfsup.train.worker import build, lidar_aug_view, lidar_view, load_data

    path = tmp_path / "tjepa.yaml"
    path.write_text("data: {name: table, path: breast_cancer, views: none}\n"
                    "model: {backbone: ft_transformer, embed_dim: 32, depth: 1, heads: 4}\n"
                    "method: {name: tjepa, predictor_dim: 32, predictor_depth: 1, predictor_heads: 4}\n")
    cfg = load_experiment(path)
    data = load_data(cfg)
    method = build(cfg, data.shape, data.groups)
    x = data.train.x[:64]
    out = evaluate(method, x, "cpu", lidar_x=x, view=lidar_view(cfg, data), lidar_q=4, aug_view=lidar_aug_view(cfg, data))
    assert math.isfinite(out["label_free/lidar"]) and math.isfinite(out["label_free/lidar_aug"])
    assert out["label_free/lidar"] != out["label_free/lidar_aug"]
    two_view = load_experiment(path, ["method={name: simclr}", "data.views=scarf", "model.backbone=mlp"])
    assert lidar_aug_view(two_view, data) is None
