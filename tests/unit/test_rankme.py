import numpy as np
import pytest
import torch

from selfsup.metrics.rankme import EPS, rankme


def direct(z: np.ndarray) -> float:
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = s / s.sum() + EPS
    return float(np.exp(-(p * np.log(p)).sum()))


def test_identity_has_full_rank():
    assert rankme(torch.eye(16)) == pytest.approx(16.0, rel=1e-4)


def test_rank_one_is_about_one():
    u, v = torch.randn(200, 1), torch.randn(1, 32)
    assert rankme(u @ v) == pytest.approx(1.0, abs=1e-3)


def test_scale_invariant():
    z = torch.randn(300, 24)
    assert rankme(z) == pytest.approx(rankme(1000.0 * z), rel=1e-9)


def test_known_spectrum():
    # singular values 3, 1 -> p = (0.75, 0.25): RankMe = exp(H) = 0.75^-0.75 * 0.25^-0.25
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert rankme(z) == pytest.approx(0.75**-0.75 * 0.25**-0.25, rel=1e-5)


def test_matches_definition_on_random_data():
    z = np.random.default_rng(0).normal(size=(128, 20)) @ np.diag(np.linspace(0.1, 3, 20))
    assert rankme(torch.from_numpy(z).float()) == pytest.approx(direct(z), rel=1e-5)
