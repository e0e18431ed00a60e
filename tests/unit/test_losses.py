"""Losses against direct, loop-by-loop implementations of the papers' formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.data.batch_views import transformed_view
from selfsup.methods.barlowtwins import barlow_twins_loss
from selfsup.methods.byol import byol_loss
from selfsup.methods.dino import dino_loss, koleo_loss
from selfsup.methods.ijepa import ijepa_loss
from selfsup.methods.mae import mae_loss
from selfsup.models.tokens import patchify
from selfsup.methods.mocov3 import moco_v3_loss
from selfsup.methods.simclr import nt_xent_loss
from selfsup.methods.sarjepa import LocalWindowMasks, gradient_features, half_window_sums, patch_targets
from selfsup.methods.seqjepa import relative_actions, ridge_r2, seqjepa_loss
from selfsup.methods.sjepa import sjepa_loss
from selfsup.methods.timedrl import TimeDRL, instance_norm, timedrl_loss
from selfsup.methods.twotower import ComplementaryMasks, column_codes, mutual_information, two_tower_loss
from selfsup.methods.vicreg import off_diagonal, vicreg_loss
from selfsup.models.tokens import sincos_pos_embed
from selfsup.models.transformers import FeatureTransformer, ViT1d


def vicreg_direct(z1, z2, lam, mu, nu, eps=1e-4):
    n, d = z1.shape
    inv = sum(((z1[i] - z2[i]) ** 2).sum() for i in range(n)) / (n * d)

    def v(z):
        return sum(max(0.0, 1 - math.sqrt(z[:, j].var(unbiased=True) + eps)) for j in range(d)) / d

    def c(z):
        zc = z - z.mean(0)
        cov = sum(torch.outer(zc[i], zc[i]) for i in range(n)) / (n - 1)
        return sum(cov[a, b] ** 2 for a in range(d) for b in range(d) if a != b) / d

    return lam * inv + mu * (v(z1) + v(z2)) / 2 + nu * (c(z1) + c(z2))


def test_off_diagonal():
    m = torch.arange(9.0).view(3, 3)
    assert off_diagonal(m).tolist() == [1, 2, 3, 5, 6, 7]


def test_vicreg_matches_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g) * 0.5, torch.randn(6, 4, generator=g) * 0.5
    out = vicreg_loss(z1.double(), z2.double(), 25.0, 25.0, 1.0)
    assert out["loss"].item() == pytest.approx(float(vicreg_direct(z1.double(), z2.double(), 25.0, 25.0, 1.0)), rel=1e-10)


def test_vicreg_hand_computed():
    # z1 = z2: no invariance term. Columns +-1 -> var = 4/3 -> std > 1, no variance term;
    # column 2 = column 1 -> covariance entries 4/3 off the diagonal: c = 2 * (4/3)^2 / 2 per view.
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    out = vicreg_loss(z, z, 25.0, 25.0, 1.0, eps=0.0)
    assert out["invariance"].item() == 0.0
    assert out["variance"].item() == 0.0
    assert out["covariance"].item() == pytest.approx(2 * (2 * (4 / 3) ** 2 / 2))


def test_vicreg_collapse_is_penalised():
    z = torch.zeros(8, 4)
    out = vicreg_loss(z, z, 25.0, 25.0, 1.0, eps=0.0)
    assert out["variance"].item() == pytest.approx(1.0)  # relu(1 - 0), averaged over both views


def nt_xent_direct(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[j]) / tau)
        den = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(num / den)
    return total / (2 * n)


def test_nt_xent_matches_formula():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert nt_xent_loss(z1.double(), z2.double(), 0.5).item() == pytest.approx(nt_xent_direct(z1.double(), z2.double(), 0.5), rel=1e-10)


def test_nt_xent_hand_computed():
    # two orthogonal pairs, each view equal to its partner: sims 1 (partner), 0, 0 (others)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.e / (math.e + 2))  # tau = 1
    assert nt_xent_loss(z1, z1.clone(), 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_sharded_equals_global():
    """Local anchors against the global batch, averaged over shards, is the global loss."""
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    whole = nt_xent_loss(z1, z2, 0.2)
    shards = [nt_xent_loss(z1[s : s + 4], z2[s : s + 4], 0.2, z1, z2, offset=s) for s in (0, 4)]
    assert (sum(shards) / 2).item() == pytest.approx(whole.item(), rel=1e-6)


def barlow_direct(z1, z2, lambd, eps=1e-5):
    n, d = z1.shape

    def std(z):
        mu = z.mean(0)
        var = ((z - mu) ** 2).mean(0)
        return (z - mu) / torch.sqrt(var + eps)

    a, b = std(z1), std(z2)
    c = [[sum(a[k, i] * b[k, j] for k in range(n)) / n for j in range(d)] for i in range(d)]
    return sum((1 - c[i][i]) ** 2 for i in range(d)) + lambd * sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)


def test_barlow_twins_matches_formula():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(7, 4, generator=g).double(), torch.randn(7, 4, generator=g).double()
    assert barlow_twins_loss(z1, z2, 0.0051)["loss"].item() == pytest.approx(float(barlow_direct(z1, z2, 0.0051)), rel=1e-9)


def test_barlow_twins_identity_correlation_is_zero_loss():
    # identical views with uncorrelated, standardised columns: C = I
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert barlow_twins_loss(z, z, 0.5, eps=0.0)["loss"].item() == pytest.approx(0.0, abs=1e-12)
    # second view the negative of the first: C = -I, on-diagonal (1 - (-1))^2 = 4 per dimension
    assert barlow_twins_loss(z, -z, 0.5, eps=0.0)["loss"].item() == pytest.approx(8.0)


def test_byol_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    z = torch.tensor([[5.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # cos = 1, 0, -1
    assert byol_loss(p, z).item() == pytest.approx((0 + 2 + 4) / 3)


def moco_direct(q, k, tau):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    total = 0.0
    for i in range(len(q)):
        den = sum(math.exp(float(q[i] @ k[j]) / tau) for j in range(len(k)))
        total += -math.log(math.exp(float(q[i] @ k[i]) / tau) / den)
    return total / len(q) * 2 * tau


def test_moco_v3_matches_formula_and_shards():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(6, 3, generator=g).double(), torch.randn(6, 3, generator=g).double()
    whole = moco_v3_loss(q, k, 0.2)
    assert whole.item() == pytest.approx(moco_direct(q, k, 0.2), rel=1e-10)
    shards = [moco_v3_loss(q[s : s + 3], k, 0.2, offset=s) for s in (0, 3)]
    assert (sum(shards) / 2).item() == pytest.approx(whole.item(), rel=1e-10)


def test_dino_with_fixed_center_hand_computed():
    # two global crops and one local crop, K = 2 prototypes, batch 1: every logit is hand-picked
    t1, t2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    s = [torch.tensor([[0.2, 0.0]]), torch.tensor([[0.0, 0.1]]), torch.tensor([[0.3, 0.3]])]
    center = torch.tensor([[0.5, 0.5]])
    p1 = torch.softmax(torch.tensor([0.5 / 0.5, -0.5 / 0.5]), 0)  # (t1 - c) / tau_t with tau_t = 0.5
    p2 = torch.softmax(torch.tensor([-0.5 / 0.5, 0.5 / 0.5]), 0)
    log_q = [torch.log_softmax(x[0] / 0.1, 0) for x in s]
    pairs = [(p1, log_q[1]), (p1, log_q[2]), (p2, log_q[0]), (p2, log_q[2])]  # teacher crop != student crop
    expected = sum(-(p * q).sum() for p, q in pairs) / 4
    got = dino_loss(s, [t1, t2], center, student_temp=0.1, teacher_temp=0.5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_dino_gradient_reaches_student_only():
    s = [torch.randn(4, 8, requires_grad=True) for _ in range(3)]
    t = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    dino_loss(s, t, torch.zeros(1, 8), 0.1, 0.04).backward()
    assert all(x.grad is not None for x in s) and all(x.grad is None for x in t)


def test_koleo_hand_computed():
    # unit vectors at 0, 90 and 180 degrees: nearest-neighbour distances sqrt(2), sqrt(2), sqrt(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    assert koleo_loss(x).item() == pytest.approx(-math.log(math.sqrt(2)), rel=1e-5)
    # two close points and one far: distances d, d and sqrt(2)-ish
    y = torch.tensor([[1.0, 0.0], [math.cos(0.1), math.sin(0.1)], [0.0, -1.0]])
    d = 2 * math.sin(0.05)
    assert koleo_loss(y).item() == pytest.approx(-(2 * math.log(d) + math.log(math.sqrt(2))) / 3, rel=1e-4)


def test_ijepa_loss_is_mean_squared_distance_per_block():
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(2, 3, 4, generator=g), torch.randn(2, 5, 4, generator=g)]
    targets = [torch.randn(2, 3, 4, generator=g), torch.randn(2, 5, 4, generator=g)]
    direct = sum(
        sum(((p[b, j] - t[b, j]) ** 2).sum() for b in range(2) for j in range(p.shape[1])) / (2 * p.shape[1] * 4)
        for p, t in zip(preds, targets)
    ) / 2
    assert ijepa_loss(preds, targets).item() == pytest.approx(direct.item(), rel=1e-6)


def test_patchify_layout():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # C=2, 4x4, p=2
    patches = patchify(x, (2, 2))
    assert patches.shape == (1, 4, 8)
    # patch 1 is the top-right 2x2 block; pixels (row, col, channel)
    assert patches[0, 1].tolist() == [2, 18, 3, 19, 6, 22, 7, 23]


def test_mae_loss_normalised_pixels_hand_computed():
    target = torch.tensor([[[1.0, 3.0]]])  # one hidden patch of two pixels: mean 2, unbiased var 2
    pred = torch.tensor([[[0.0, 0.0]]])
    z = 1 / math.sqrt(2 + 1e-6)
    assert mae_loss(pred, target, norm_pix=True).item() == pytest.approx(z**2, rel=1e-6)
    assert mae_loss(pred, target, norm_pix=False).item() == pytest.approx(5.0)


def test_sincos_position_embedding():
    pos = sincos_pos_embed(8, (2, 3))
    assert pos.shape == (6, 8)
    # patch (row 1, col 2): first half encodes row 1, second half column 2, omega = [1, 1/100]
    expected = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01), math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)]
    assert pos[5].tolist() == pytest.approx(expected, rel=1e-6)


def test_sjepa_loss_is_mean_absolute_error():
    pred = torch.tensor([[[1.0, -2.0], [0.5, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert sjepa_loss(pred, target).item() == pytest.approx((1 + 2 + 0.5 + 1) / 4)


def test_sincos_1d_position_embedding():
    pos = sincos_pos_embed(4, (3,))  # omega = [1, 1/100]
    assert pos.shape == (3, 4)
    assert pos[2].tolist() == pytest.approx([math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)], rel=1e-6)


def test_feature_tokenizer_embeds_numbers_and_categories():
    """A numerical column gives ``x w + b``; a one-hot categorical column the embedding row of its
    category plus its bias (T-JEPA / FT-Transformer tokenizer)."""
    net = FeatureTransformer((1, 3), dim=4, depth=1, heads=1, registers=1)
    x = torch.tensor([[2.0, 0.0, 1.0, 0.0]])  # numerical 2.0, category 1 of 3
    tokens = net.tokenize(x)
    assert tokens.shape == (1, 2, 4)
    assert torch.allclose(tokens[0, 0], 2.0 * net.weight[0] + net.bias[0])
    assert torch.allclose(tokens[0, 1], net.weight[2] + net.bias[1])
    assert net.tokens(x).shape == (1, 2, 4) and net.tokens(x, keep=torch.tensor([[1]])).shape == (1, 1, 4)


def test_vit1d_patches_time_across_all_channels():
    net = ViT1d(channels=3, length=100, patch=25, dim=8, depth=1, heads=2, registers=2)
    x = torch.randn(2, 3, 100)
    assert net.grid == (4,) and net.tokens(x).shape == (2, 4, 8) and net(x).shape == (2, 8)
    first = net.patch_embed(x[:, :, :25])[:, :, 0]  # one token from the first 25 samples of all 3 leads
    assert torch.allclose(net.patch_embed(x).transpose(1, 2)[:, 0], first, atol=1e-6)
    with pytest.raises(ValueError, match="patch_size 30 does not divide the signal length 100"):
        ViT1d(3, 100, 30, 8, 1, 2)


def test_timedrl_loss_hand_computed():
    """predictive: MSE of each pass's reconstruction, averaged; contrastive: -(cos(sg(i1), p2) +
    cos(sg(i2), p1)) / 2; loss = predictive + w contrastive; nothing flows into the embeddings
    through the stop-gradient side."""
    target = torch.zeros(1, 2, 2)
    r1, r2 = torch.ones(1, 2, 2), torch.full((1, 2, 2), 2.0)  # MSE 1 and 4
    i1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    i2 = torch.tensor([[0.0, 1.0]], requires_grad=True)
    p1 = torch.tensor([[1.0, 1.0]], requires_grad=True)  # cos(i2, p1) = 1/sqrt(2)
    p2 = torch.tensor([[3.0, 0.0]], requires_grad=True)  # cos(i1, p2) = 1
    out = timedrl_loss(target, (r1, r2), (i1, i2), (p1, p2), contrastive_weight=0.5)
    assert out["predictive"].item() == pytest.approx(2.5)
    assert out["contrastive"].item() == pytest.approx(-(1 + 1 / math.sqrt(2)) / 2)
    assert out["loss"].item() == pytest.approx(2.5 - 0.5 * (1 + 1 / math.sqrt(2)) / 2)
    out["loss"].backward()
    assert i1.grad is None and i2.grad is None and p1.grad is not None  # the embeddings are the stop-gradient side


def test_timedrl_patches_as_the_reference_and_instance_norm():
    """The reference's ``Patching`` (``layers/Embed.py``): ``ReplicationPad1d((0, stride))`` then
    ``unfold(patch_len, stride)``, channel-mixed ``B C T_p P -> B T_p (C P)``. T = 6, patch 3, stride
    2: the end gets two repeats of the last sample, (6 + 2 - 3) // 2 + 1 = 3 overlapping patches."""
    from selfsup.models.transformers import ViT1d

    x = torch.arange(2 * 2 * 6, dtype=torch.float32).reshape(2, 2, 6)  # (B, C, T): channel 0 of sample 0 is 0..5
    net = ViT1d(2, 6, 3, 8, 1, 2, stride=2)
    p = net.patches(x)
    assert net.grid == (3,) and p.shape == (2, 3, 6)
    assert p[0, 0].tolist() == [0.0, 1.0, 2.0, 6.0, 7.0, 8.0]  # samples 0-2 of channel 0, then of channel 1
    assert p[0, 2].tolist() == [4.0, 5.0, 5.0, 10.0, 11.0, 11.0]  # the last patch reaches into the padding: the last value repeated
    disjoint = ViT1d(2, 6, 3, 8, 1, 2, stride=3)
    assert disjoint.grid == (3,) and disjoint.patches(x)[0, 2].tolist() == [5.0, 5.0, 5.0, 11.0, 11.0, 11.0]  # one more patch
    assert net.tokens(x).shape == (2, 3, 8)
    n = instance_norm(torch.randn(4, 3, 50) * 5 + 2)
    assert torch.allclose(n.mean(dim=-1), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(n.std(dim=-1, unbiased=False), torch.ones(4, 3), atol=1e-3)


def test_two_tower_loss_hand_computed():
    """Eq. (1) with tau = 1 and orthogonal rows: each row's own pair has cosine 1, the other 0, so
    the loss is -log(e / (e + 1)); the other rows of the global batch are the negatives."""
    z = torch.eye(2)
    assert two_tower_loss(z, 2 * z, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    everyone = torch.cat([z, torch.tensor([[1.0, 0.0]])])  # a third row elsewhere, like row 0
    row0 = -1 + math.log(math.exp(1) + math.exp(0) + math.exp(1))  # row 0 against rows 0, 1, 2
    row1 = -1 + math.log(math.exp(0) + math.exp(1) + math.exp(0))
    assert two_tower_loss(z, z, 1.0, everyone, offset=0).item() == pytest.approx((row0 + row1) / 2)


def test_mutual_information_of_columns():
    a = np.array([0, 0, 1, 1] * 25)
    b = np.array([0, 1, 0, 1] * 25)  # independent of a
    mi = mutual_information(np.stack([a, a.copy(), b], axis=1))
    assert mi[0, 1] == pytest.approx(math.log(2)) and mi[0, 0] == pytest.approx(math.log(2))  # a copy: its entropy
    assert mi[0, 2] == pytest.approx(0.0, abs=1e-12) and np.allclose(mi, mi.T)
    # a one-hot block is one column (its category), a numerical column its quantile bin
    x = np.array([[1, 0, 0, 0.1], [0, 1, 0, 5.0], [0, 0, 1, 9.0], [1, 0, 0, 0.2]])
    codes = column_codes(x, (3, 1), bins=2)
    assert codes[:, 0].tolist() == [0, 1, 2, 0] and codes[:, 1].tolist() == [0, 1, 1, 0]


def test_correlated_masks_hide_a_correlated_group_and_complement():
    mi = torch.zeros(6, 6)
    mi[:3, :3] = mi[3:, 3:] = 1.0  # two groups of columns that predict each other
    hidden = ComplementaryMasks(mi, correlated=1.0)(200, torch.Generator().manual_seed(0))["hidden"]
    assert (hidden.sum(dim=1) == 3).all()
    assert all(row.tolist() in ([True] * 3 + [False] * 3, [False] * 3 + [True] * 3) for row in hidden)
    rfm = ComplementaryMasks(mi, correlated=0.0)(200, torch.Generator().manual_seed(0))["hidden"]
    assert (rfm.sum(dim=1) == 3).all() and len({tuple(r.tolist()) for r in rfm}) > 2  # any half, not only the groups


def test_sarjepa_gradient_by_ratio_hand_computed():
    """The half-window sums around a pixel (the centre row/column in both halves) and the
    gradient by ratio: zero on a constant image; across a vertical step 1 | 3 the log of the
    ratio of the left and right sums."""
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    top, bottom, left, right = (t[0, 0, 2, 2].item() for t in half_window_sums(x, 1))
    assert (top, bottom, left, right) == (6 + 7 + 8 + 11 + 12 + 13, 11 + 12 + 13 + 16 + 17 + 18, 6 + 11 + 16 + 7 + 12 + 17, 7 + 12 + 17 + 8 + 13 + 18)
    flat = gradient_features(torch.full((1, 3, 8, 8), 0.5), (1, 2))
    assert flat.shape == (1, 2, 8, 8) and torch.allclose(flat, torch.zeros_like(flat), atol=1e-6)
    step = torch.ones(1, 1, 8, 8)
    step[..., 4:] = 3.0
    g = gradient_features(step, (1,), eps=0.0)
    assert g[0, 0, 4, 3].item() == pytest.approx(abs(math.log((3 * 1 + 3 * 1) / (3 * 1 + 3 * 3))))  # columns 2-3 vs 3-4
    assert g[0, 0, 4, 0].item() == pytest.approx(0.0, abs=1e-6)  # far from the edge
    d = gradient_features(step, (1,), operator="difference")
    assert d[0, 0, 4, 3].item() == pytest.approx(abs((6 - 12) / 6))


def test_sarjepa_targets_and_local_windows():
    feats = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)  # 2 scales, 4x4 pixels
    t = patch_targets(feats, 2)
    assert t.shape == (1, 4, 8) and t[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]  # patch (0, 1): scale 0 then 1
    # the reference hides int(window^2 * mask_ratio) patches per window: 0.75 * 9 = 6.75 -> 6 (rounding gave 7)
    cells, hidden = LocalWindowMasks((6, 6), window=3, n_windows=2, mask_ratio=0.75)(50, torch.Generator().manual_seed(0))
    assert cells.shape == hidden.shape == (50, 2, 9) and (hidden.sum(-1) == 6).all()
    rows, cols = cells // 6, cells % 6
    assert ((rows.amax(-1) - rows.amin(-1)) == 2).all() and ((cols.amax(-1) - cols.amin(-1)) == 2).all()  # one 3x3 window
    assert all(len(set(w.tolist())) == 9 for w in cells.flatten(0, 1)) and (cells.diff(dim=-1) > 0).all()
    with pytest.raises(ValueError, match="hides 0 of a window's 9 patches"):
        LocalWindowMasks((6, 6), window=3, n_windows=2, mask_ratio=0.1)


def test_sarjepa_encoder_sees_the_whole_window_with_mask_tokens():
    """As the reference's ``forward_encoder``: the encoder takes every patch of a window, the hidden
    ones' embeddings replaced by the mask token, so its k^2 output tokens do not depend on the hidden
    patches' pixels but do on the visible ones'; the loss is the mean squared error of the decoder's
    outputs at the hidden patches only (``forward_loss``: per-patch mean, averaged over the hidden)."""
    from selfsup.methods.sarjepa import SARJEPA
    from selfsup.models.backbones import build_backbone

    torch.manual_seed(0)
    vit = dict(depth=1, embed_dim=16, num_heads=2, class_token=False, global_pool="avg", fc_norm=False)
    backbone = build_backbone("timm", (1, 8, 8), 0, 0, 0, timm_name="vit_tiny_patch16_224", patch_size=2, timm_kwargs=vit)
    method = SARJEPA(backbone, window=2, n_windows=1, mask_ratio=0.5, scales=[1], operator="difference", predictor_dim=8, predictor_depth=1, predictor_heads=2)
    window = torch.tensor([[[0, 1, 4, 5]]])  # the top-left 2x2 patches of the 4x4 grid
    hidden = torch.tensor([[[False, True, True, False]]])  # patches 1 and 4 hidden
    x = torch.rand(1, 1, 8, 8)
    changed_hidden, changed_visible = x.clone(), x.clone()
    changed_hidden[..., 0:2, 2:4] += 1.0  # patch 1's pixels
    changed_visible[..., 0:2, 0:2] += 1.0  # patch 0's pixels
    with torch.no_grad():
        z = method.encode_windows(x, window, hidden)
        assert z.shape == (1, 4, 16)
        assert torch.allclose(z, method.encode_windows(changed_hidden, window, hidden))
        assert not torch.allclose(z, method.encode_windows(changed_visible, window, hidden))
        prediction = method.decoder(z)
        target = patch_targets(gradient_features(x, (1,), "difference"), 2)[:, [1, 4]]
        expected = ((prediction[0, [1, 2]] - target[0]) ** 2).mean(dim=-1).mean()
        assert method({"views": [x], "window": window, "hidden": hidden})["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_seqjepa_loss_actions_and_equivariance_probe():
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert seqjepa_loss(t, 3 * t).item() == pytest.approx(0.0, abs=1e-7)
    assert seqjepa_loss(t, t.flip(1)).item() == pytest.approx(1.0)  # orthogonal pairs
    # parameters of views 1..4 (M = 3 observed), normalised over the views as the reference's
    # engine.py does: ||(0, 1, 3, 6)|| = sqrt(46); the second parameter (0, 0, 0, 2) becomes (0, 0, 0, 1)
    a = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [6.0, 2.0]]])
    steps, to_next = relative_actions(a)
    r = math.sqrt(46)
    assert torch.allclose(steps[0], torch.tensor([[1 / r, 0.0], [2 / r, 0.0], [0.0, 0.0]]))
    assert torch.allclose(to_next[0], torch.tensor([3 / r, 1.0]))
    assert torch.allclose(relative_actions(5 * a)[1], to_next)  # the scale of the parameters is gone
    g = torch.Generator().manual_seed(0)
    y = torch.randn(400, 3, generator=g)
    x = torch.cat([y @ torch.randn(3, 8, generator=g), torch.randn(400, 4, generator=g)], dim=1) + 0.01 * torch.randn(400, 12, generator=g)
    assert ridge_r2(x, y) > 0.99
    assert ridge_r2(torch.randn(400, 12, generator=g), y) < 0.1


def test_transformed_view_returns_the_parameters_that_made_it():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    views, params = transformed_view(x, 8, jitter=0.0)
    assert views.shape == (5, 1, 8, 8) and params.shape == (5, 6)
    theta = torch.zeros(5, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = params[:, :4].unbind(1)
    grid = F.affine_grid(theta, [5, 1, 8, 8], align_corners=False)
    assert torch.allclose(views, F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp(0, 1))
    assert torch.equal(params[:, 4:], torch.ones(5, 2))  # no jitter: factors 1


def test_timedrl_reconstructs_the_input_patches_as_the_reference():
    """The reference's training loop (``exp/exp_classification.py``) compares each pass's
    reconstruction with ``patching(batch_x)``, the batch as the loader gives it; the encoder sees the
    instance-normalised signal. With a zero head the predictive loss is then the mean square of the
    input's padded patches; ``target: normalised`` takes those of the normalised signal."""
    from selfsup.models.transformers import ViT1d

    torch.manual_seed(0)
    x = torch.randn(4, 2, 12) * 3 + 5
    for target in ("input", "normalised"):
        method = TimeDRL(ViT1d(2, 12, 4, 8, 1, 2, stride=2), contrastive_weight=0.0, dropout=0.0, target=target)
        torch.nn.init.zeros_(method.reconstruct[1].weight)
        torch.nn.init.zeros_(method.reconstruct[1].bias)
        expected = method.backbone.patches(x if target == "input" else instance_norm(x)).pow(2).mean()
        assert method({"views": [x]})["predictive"].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="method 'timedrl' needs model.patch_stride"):
        TimeDRL(ViT1d(2, 12, 4, 8, 1, 2))
