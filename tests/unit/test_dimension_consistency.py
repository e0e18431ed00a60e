"""Intrinsic dimension (TwoNN, MST) and augmentation consistency on hand-computable embeddings."""

import math

import numpy as np
import pytest
import torch

from selfsup.metrics.consistency import augmentation_consistency
from selfsup.metrics.dimension import dimension_from_lengths, mst_dimension, mst_length, two_nn


def test_two_nn_by_hand():
    # Points 0, 1, 3, 7 on a line: (r1, r2) = (1, 3), (1, 2), (2, 3), (4, 6), so mu = 3, 2, 1.5, 1.5.
    # Sorted mu 1.5, 1.5, 2, 3 at F = 1/4 .. 4/4; the largest 10% (floor(3.6) = 3 kept) leaves the first three.
    z = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    x = np.log([1.5, 1.5, 2.0])
    y = -np.log(1 - np.array([1, 2, 3]) / 4)
    assert two_nn(z) == pytest.approx(float((x * y).sum() / (x * x).sum()))


def test_two_nn_finds_the_dimension_of_a_cube_written_in_more_coordinates():
    g = torch.Generator().manual_seed(0)
    cube = torch.rand(2000, 3, generator=g, dtype=torch.float64)
    embedded = cube @ torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))[0][:3]  # a rotation into 10-D
    assert two_nn(embedded) == pytest.approx(3.0, abs=0.3)
    assert two_nn(torch.rand(2000, 6, generator=g)) > two_nn(embedded) + 1.5
    assert math.isnan(two_nn(torch.zeros(5, 4)))  # every point a duplicate: no ratio to read


def test_mst_length_and_the_dimension_read_from_its_growth_by_hand():
    assert mst_length(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])) == pytest.approx(3.0)  # a unit square's corners
    assert mst_length(torch.tensor([[0.0], [1.0], [3.0], [7.0]])) == pytest.approx(7.0)
    sizes = [100, 200, 400, 800]
    assert dimension_from_lengths(sizes, [5 * s ** 0.5 for s in sizes]) == pytest.approx(2.0)  # L ~ n^((d-1)/d), d = 2
    assert dimension_from_lengths(sizes, [s ** (2 / 3) for s in sizes]) == pytest.approx(3.0)
    assert dimension_from_lengths(sizes, [7.0] * 4) == pytest.approx(1.0)  # a segment: its MST's length does not grow


def test_mst_dimension_of_a_square_and_a_curve_in_higher_dimensions():
    g = torch.Generator().manual_seed(1)
    square = torch.cat([torch.rand(1500, 2, generator=g), torch.zeros(1500, 6)], dim=1)
    t = torch.rand(1500, generator=g) * 2 * math.pi
    circle = torch.stack([t.cos(), t.sin(), (2 * t).cos(), (2 * t).sin()], dim=1)
    assert mst_dimension(square) == pytest.approx(2.0, abs=0.35)
    assert mst_dimension(circle) == pytest.approx(1.0, abs=0.25)
    assert math.isnan(mst_dimension(torch.rand(10, 3)))  # too few points for a slope


def angles(*degrees):
    return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees])


def test_augmentation_consistency_by_hand():
    # Sample A's views at 0 and 10 degrees, B's at 30 and 120: A0 -> A1, A1 -> A0 (10 < 20 degrees),
    # B0 -> A1 (20 degrees, closer than B1's 90), B1 -> B0 (90 < 110): 3 of 4 nearest views are their own sample's.
    z = angles(0, 10, 30, 120).reshape(2, 2, 2)
    assert augmentation_consistency(z) == pytest.approx(0.75)
    # three views per sample, each looking up two: every view's two nearest are its own sample's
    assert augmentation_consistency(angles(0, 5, 10, 90, 95, 100).reshape(2, 3, 2)) == 1.0
    g = torch.Generator().manual_seed(0)
    chance = augmentation_consistency(torch.randn(200, 4, 16, generator=g))
    assert chance == pytest.approx(3 / (800 - 1), abs=0.01)
    with pytest.raises(ValueError, match="n >= 2 samples, q >= 2 views"):
        augmentation_consistency(torch.zeros(5, 1, 3))


def test_the_panel_logs_both_dimensions_and_the_views_consistency(tmp_path):
    """Every epoch's panel: the intrinsic dimensions of the backbone embedding, the consistency of the
    LiDAR views, and for a token encoder (T-JEPA's FT-Transformer) the DSE of its tokens, all finite
    untrained and selectable by name; a CNN has no tokens, so no DSE."""
    from selfsup.config import load_experiment
    from selfsup.metrics.panel import evaluate
    from selfsup.report.rules import AUG_CONSISTENCY, CL, DSE, METRIC_RULES, MST_ID, TWONN
    from selfsup.train.worker import build, lidar_view, load_data

    path = tmp_path / "vicreg.yaml"
    path.write_text("data: {views: light}\nmodel: {backbone: cnn, embed_dim: 32, width: 8, depth: 2}\nmethod: {name: vicreg, projector: [64, 64]}\n")
    cfg = load_experiment(path)
    data = load_data(cfg)
    x = data.train.x[:128]
    out = evaluate(build(cfg, data.shape, data.groups), x, "cpu", lidar_x=x[:32], view=lidar_view(cfg, data), lidar_q=4)
    assert 1 < out[TWONN] < 32 and 1 < out[MST_ID] and 3 / (128 - 1) < out[AUG_CONSISTENCY] <= 1 and DSE not in out
    assert 0.1 < out[CL] <= 1
    assert {METRIC_RULES[n].metric for n in ("twonn_id", "mst_id", "aug_consistency", "dse", "cluster_learnability")} == {
        TWONN, MST_ID, AUG_CONSISTENCY, DSE, CL}
    assert METRIC_RULES["clid"].metrics == (CL, TWONN)

    path.write_text("data: {name: table, path: breast_cancer, views: none}\n"
                    "model: {backbone: ft_transformer, embed_dim: 32, depth: 1, heads: 4}\n"
                    "method: {name: tjepa, predictor_dim: 32, predictor_depth: 1, predictor_heads: 4}\n")
    cfg = load_experiment(path)
    data = load_data(cfg)
    out = evaluate(build(cfg, data.shape, data.groups), data.train.x[:64], "cpu")
    assert math.isfinite(out[DSE]) and math.isfinite(out[TWONN])


def test_dse_terms_and_a_whole_case_by_hand():
    from selfsup.metrics.dense import dse, effective_rank, spread

    # (1, 0) and (-1, 0): centred the same, singular values (sqrt 2, 0), over sqrt(max(2 - 1, 2))
    assert spread(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)) == pytest.approx(1.0)
    assert effective_rank(torch.eye(2, dtype=torch.float64)) == pytest.approx(1.0)  # exp(log 2) / 2
    assert effective_rank(torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)) == pytest.approx(0.5, abs=1e-9)
    # Sample 0's four tokens all (1, 0), sample 1's all (0, 1). Mean token (0.5, 0.5), each token
    # sqrt(0.5) from it; clusters (global 2, local 1) are the samples, none spread; a token is sqrt 2
    # from the other centroid; any token position holds one of each, effective rank 2 / 2.
    # DSE = sqrt(2) / sqrt(0.5) + 1 - (0 + 0) / 2 = 3.
    tokens = torch.tensor([[[1.0, 0.0]] * 4, [[0.0, 1.0]] * 4])
    assert dse(tokens, group=2, global_clusters=2, local_clusters=1) == pytest.approx(3.0)


def test_dse_prefers_tokens_that_fall_into_classes():
    from selfsup.metrics.dense import dse

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 16, generator=g)
    parts = torch.randint(6, (16, 49), generator=g)  # 16 images of 49 patches, each patch showing one of 6 parts
    structured = centres[parts] + 0.1 * torch.randn(16, 49, 16, generator=g)
    assert dse(structured, global_clusters=6) > dse(torch.randn(16, 49, 16, generator=g), global_clusters=6) + 0.3


def test_cluster_learnability_by_hand():
    from selfsup.metrics.learnability import cluster_learnability, knn_cv_accuracy

    # 0, 1, 2, 6.2 labelled 0 and 10, 11, 12 labelled 1; leaving each out (7 folds), its nearest
    # neighbour's label is its own except for 6.2, nearer 10 (3.8) than 2 (4.2): 6 of 7.
    z = torch.tensor([[0.0], [1.0], [2.0], [6.2], [10.0], [11.0], [12.0]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    assert knn_cv_accuracy(z, labels, neighbours=1, folds=7) == pytest.approx(6 / 7)
    # three neighbours: 6.2's are 2, 10 and 11 -> label 1, still wrong; 2's are 1, 0 and 6.2 -> right
    assert knn_cv_accuracy(z, labels, neighbours=3, folds=7) == pytest.approx(6 / 7)
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(100, 8, generator=g) + 8 * torch.eye(8)[i] for i in range(4)])
    assert cluster_learnability(blobs, clusters=4) > 0.98
    assert cluster_learnability(torch.randn(400, 8, generator=g), clusters=4) < cluster_learnability(blobs, clusters=4) - 0.05


def test_clid_picks_by_mean_rank_of_learnability_and_dimension_and_mst_by_its_lowest():
    from types import SimpleNamespace

    from selfsup.report.rules import CL, METRIC_RULES, MST_ID, PROBE, TWONN, judge

    def trial(name, cl, twonn, mst, probe):
        return SimpleNamespace(name=name, metrics={CL: cl, TWONN: twonn, MST_ID: mst, PROBE: probe})

    # CL ranks a < b < c (1, 2, 3), TwoNN c < a < b (1 = c, 2 = a, 3 = b): mean ranks a 1.5, b 2.5, c 2.0
    trials = [trial("a", 0.5, 8.0, 30.0, 0.90), trial("b", 0.6, 9.0, 20.0, 0.95), trial("c", 0.7, 5.0, 25.0, 0.92)]
    v = judge(METRIC_RULES["clid"], trials)
    assert v.pick.name == "b" and v.regret == pytest.approx(0.0)
    assert [t.name for t in v.ranked] == ["b", "c", "a"]
    assert judge(METRIC_RULES["mst_id"], trials).pick.name == "b"  # the lowest MST dimension


def test_cross_validated_probe_scores_every_sample_once():
    """Each of the N samples is predicted once by a probe fitted on the other folds: a probe that is
    right on exactly the test rows whose feature is positive scores the share of positive rows."""
    from selfsup.metrics.probes import cross_validated, linear_probe

    x = np.arange(-30, 30, dtype=np.float64)[:, None]
    y = np.tile([0, 1, 2], 20)
    seen = []

    def probe(x_tr, y_tr, x_te, y_te):
        seen.extend(x_te[:, 0].tolist())
        assert not set(x_te[:, 0]) & set(x_tr[:, 0])
        return float((x_te[:, 0] >= 0).mean())

    assert cross_validated(probe, x, y, 5) == pytest.approx(0.5)
    assert sorted(seen) == list(range(-30, 30))
    # separable classes: every sample right; folds capped by the smallest class (2 samples here)
    xs = np.concatenate([np.random.default_rng(0).normal(size=(20, 2)), [[50.0, 50.0], [51.0, 50.0]]])
    ys = np.array([0] * 20 + [1, 1])
    assert cross_validated(linear_probe, xs, ys, 5) == 1.0
