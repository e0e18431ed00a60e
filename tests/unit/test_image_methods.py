"""The image methods of the second round (DINOv3, G-SimCLR, ScatSimCLR, SIE, InterCLR, cMIM, DEPICT,
GEDI): each loss against its paper's formula written out on inputs small enough to follow by
hand, and each method learning on scikit-learn's digits in seconds (a probe far above chance, no
collapse; the clustering methods' clusters spread)."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from selfsup.data.datasets import digits, resized
from selfsup.data.views import DistinctGroups, SeededBatches, SeededSamples, ViewCollate, build_views
from selfsup.methods import build_method
from selfsup.methods.dinov3 import gram_loss, masked_patch_loss
from selfsup.methods.gedi import energy, invariance_loss, prior_loss
from selfsup.methods.gsimclr import pseudo_labels
from selfsup.methods.interclr import inter_loss, intra_loss
from selfsup.methods.depict import balanced_targets, depict_loss, ladder_loss
from selfsup.methods.scatsimclr import jigsaw_tiles, max_hamming_permutations
from selfsup.methods.seqjepa import ridge_r2
from selfsup.methods.sie import HyperPredictor, sie_loss
from selfsup.data.batch_views import transformed_view
from selfsup.metrics.clusters import cluster_entropy, kmeans
from selfsup.metrics.panel import evaluate
from selfsup.models.backbones import build_backbone
from selfsup.train.engine import Engine, build_optimizer


def train(name, params, backbone, recipe="light", epochs=6, lr=3e-3, data=None, batch_size=128, **view_options):
    """Panel before and after ``epochs`` of ``name`` on digits (the epochs announced to the method as
    the worker does), and the mean loss of every epoch."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = data or digits()
    method = build_method(name, build_backbone(in_shape=d.shape, **backbone), **params)
    method.prepare(d.train.x, d.groups)
    probe = (d.train.x, d.train.y, d.test.x, d.test.y)
    before = evaluate(method, d.train.x[:512], "cpu", probe)
    views = build_views(recipe, d.shape, method.n_views, **view_options)
    collate = ViewCollate(views, method.masks())
    samples = SeededSamples(TensorDataset(d.train.x))  # read as the worker reads: with the samples' indices
    if method.batch_groups() is None:
        loader = DataLoader(samples, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate)
    else:  # as the worker draws them: no two samples of a group in a batch
        loader = DataLoader(samples, batch_sampler=SeededBatches(DistinctGroups(method.batch_groups(), batch_size), batch_size, seed=0),
                            collate_fn=collate)
    engine = Engine(method, method, build_optimizer(method, lr=lr, weight_decay=1e-4), total_steps=epochs * len(loader), warmup_steps=len(loader))
    losses = []
    for epoch in range(1, epochs + 1):
        method.set_epoch(epoch)
        getattr(loader.batch_sampler, "set_epoch", lambda _: None)(epoch)
        losses.append(sum(float(engine.train_step(b)["loss"]) for b in loader) / len(loader))
    return method, before, evaluate(method, d.train.x[:512], "cpu", probe), losses


CNN = dict(name="cnn", embed_dim=64, width=16, depth=2)
ROOT = Path(__file__).resolve().parents[2]


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


def vicreg_terms_direct(z):
    n, d = z.shape
    z = z.tolist()
    mean = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
    var = [sum((z[i][j] - mean[j]) ** 2 for i in range(n)) / (n - 1) for j in range(d)]
    v = sum(max(0.0, 1 - math.sqrt(var[j] + 1e-4)) for j in range(d)) / d
    cov = [[sum((z[i][a] - mean[a]) * (z[i][b] - mean[b]) for i in range(n)) / (n - 1) for b in range(d)] for a in range(d)]
    c = sum(cov[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
    return v, c


def test_sie_loss_by_hand():
    torch.manual_seed(0)
    u_x, u_y, e_x, e_y, e_pred = (torch.randn(4, 2, dtype=torch.float64) * 0.5 for _ in range(5))
    got = sie_loss(u_x, u_y, e_x, e_y, e_pred, sim_coeff=10.0, std_coeff=10.0, cov_coeff=1.0, equi_factor=0.45)
    inv = float(((u_x - u_y) ** 2).mean())
    equi = float(((e_pred - e_y) ** 2).mean())
    (vx, cx), (vy, cy) = vicreg_terms_direct(torch.cat([u_x, e_x], 1)), vicreg_terms_direct(torch.cat([u_y, e_y], 1))
    vp, _ = vicreg_terms_direct(e_pred)
    expected = 10 * (inv + 0.45 * equi) + 10 * (vx / 2 + vy / 2 + vp / 2) + (cx + cy)
    assert float(got["loss"]) == pytest.approx(expected, rel=1e-6)


def test_sie_predictor_is_one_linear_map_per_sample_from_the_parameters():
    torch.manual_seed(0)
    predictor = HyperPredictor(3, 4)
    e, a = torch.randn(2, 3), torch.randn(2, 4)
    got = predictor(e, a)
    for i in range(2):
        w = (predictor.hypernet.weight @ a[i]).view(3, 3)
        assert torch.allclose(got[i], w @ e[i], atol=1e-6)


def test_sie_learns_an_equivariant_part_on_digits():
    """SIE on digits (crops of 50-100%, brightness/contrast +-20%): the representation probes far
    above chance and spreads out, and the views' parameters are read better from its equivariant
    part than from its invariant part (a ridge regression on held-out views)."""
    method, before, after, losses = train("sie", dict(equi=32, projector=[128, 128], crop_scale=(0.5, 1.0), jitter=0.2), CNN, recipe="none",
                                          epochs=6)
    assert losses[-1] < 0.8 * losses[0]
    assert after["probe/linear_acc"] > 0.9 and after["label_free/rankme"] > 12 > before["label_free/rankme"]
    torch.manual_seed(1)
    with torch.no_grad():
        views, params = transformed_view(digits().train.x[:512], 8, (0.5, 1.0), jitter=0.2)
        r = method.backbone(views)
    assert ridge_r2(r[:, 32:], params) > ridge_r2(r[:, :32], params) + 0.03
    assert after["label_free/equivariance_r2"] > 0.2


VIT = dict(name="timm", embed_dim=0, width=0, depth=0, timm_name="vit_tiny_patch16_224", patch_size=4,
           timm_kwargs=dict(depth=2, embed_dim=64, num_heads=4, class_token=False, global_pool="avg", fc_norm=False))


def test_gram_loss_by_hand():
    student = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # normalised: (1, 0), (0.707, 0.707): Gram [[1, .707], [.707, 1]]
    teacher = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])  # normalised: the identity Gram
    assert float(gram_loss(student, teacher)) == pytest.approx(2 * 0.5 / 4, rel=1e-5)


def test_ibot_masked_patch_loss_by_hand():
    student = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])  # softmax at tau 1: (.5, .5), (.75, .25), (.5, .5)
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    weights = torch.tensor([0.5, 0.5, 1.0])  # patches 0, 1 of one crop, patch 2 of another
    per_image = [(math.log(2) + math.log(4 / 3)) / 2, math.log(2)]
    assert float(masked_patch_loss(student, targets, weights, 4, 1.0)) == pytest.approx(sum(per_image) / 4, rel=1e-5)


def test_dinov3_masks_and_gram_teacher_schedule():
    torch.manual_seed(0)
    method = build_method("dinov3", build_backbone(in_shape=(1, 16, 16), **VIT), hidden=32, bottleneck=16, prototypes=32, ibot_prototypes=32,
                          mask_probability=0.5, mask_ratio=(0.1, 0.5), gram_start=2, gram_refresh_epochs=3)
    m = method.masks()(8)
    counts = m["ibot_masks"].sum(dim=1)
    assert m["ibot_masks"].shape == (16, 16) and int((counts > 0).sum()) == 8  # half the 16 crops masked
    assert counts.max() <= 8 and counts[counts > 0].min() >= 1  # at most half of the 16 patches
    assert torch.equal(m["ibot_index"], m["ibot_masks"].flatten().nonzero()[:, 0])
    assert torch.allclose(m["ibot_weight"], 1.0 / counts[m["ibot_index"] // 16].float())
    taken = []
    for epoch in range(1, 10):
        with torch.no_grad():
            method.teacher.backbone.model.patch_embed.proj.weight.fill_(float(epoch))
        method.set_epoch(epoch)
        taken.append(float(method.gram_teacher.model.patch_embed.proj.weight[0, 0, 0, 0]))
        assert method.anchored == (epoch >= 3)
    assert taken[2:] == [3.0, 3.0, 3.0, 6.0, 6.0, 6.0, 9.0]  # taken at epoch 3 = gram_start + 1, then every 3


def test_dinov3_learns_on_digits():
    """DINOv3 (a 2-block ViT on digits at 16x16, 4x4 patches; 2 global crops and 2 local 8x8 ones,
    iBOT masks, the Gram teacher taken after epoch 2): every term falls or holds, the [CLS]
    representation probes far above chance and does not collapse."""
    params = dict(hidden=256, bottleneck=64, prototypes=256, ibot_prototypes=256, base_momentum=0.96, head_batch_norm=True, teacher_temp=0.04,
                  warmup_teacher_temp=0.04, gram_start=2, gram_refresh_epochs=1)
    method, before, after, losses = train("dinov3", params, VIT, recipe="dino", epochs=4, lr=1e-3, data=resized(digits(), 16), local_crops=2,
                                          local_size=8, crop_scale=(0.4, 1.0), local_scale=(0.2, 0.5), color_strength=0.5)
    assert losses[-1] < losses[0]
    assert after["probe/linear_acc"] > 0.85 and after["probe/knn_acc"] > before["probe/knn_acc"] + 0.1
    assert after["label_free/rankme"] > 10 > before["label_free/rankme"] + 5


def test_jigsaw_permutations_and_tiles():
    perms = max_hamming_permutations(10)
    assert perms.shape == (10, 9) and all(sorted(p.tolist()) == list(range(9)) for p in perms)
    distances = (perms[:, None] != perms[None]).sum(-1) + 9 * torch.eye(10, dtype=torch.long)
    assert distances.min() >= 7  # far apart: a greedy max-min Hamming set
    assert torch.equal(max_hamming_permutations(10), perms)  # the same set on every worker and run
    x = torch.arange(9.0).view(1, 1, 3, 3).repeat_interleave(2, 2).repeat_interleave(2, 3)  # 6x6, tile t filled with t
    order = torch.tensor([[8, 7, 6, 5, 4, 3, 2, 1, 0]])
    tiles = jigsaw_tiles(x, order)
    assert tiles.shape == (1, 9, 1, 6, 6)
    assert all(torch.allclose(tiles[0, t], torch.full((1, 6, 6), float(8 - t))) for t in range(9))


def test_scatsimclr_rotation_targets_and_scatnet_width():
    torch.manual_seed(0)
    backbone = build_backbone("scatnet", (1, 8, 8), 16, 4, 1)
    assert backbone.scattering is not None and backbone(torch.rand(2, 1, 8, 8)).shape == (2, 16)
    assert not any(p.requires_grad for p in backbone.scattering.parameters())
    method = build_method("scatsimclr", backbone, projector=[16, 8], pretext="rotation", pretext_widths=[8, 4], pretext_dropout=0.0)
    x = torch.rand(3, 1, 8, 8)
    logits, targets = method.pretext_logits(x, None)
    assert logits.shape == (12, 4) and targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_scatsimclr_learns_on_digits():
    """ScatSimCLR on digits (scattering J=2, L=8 on 8x8 images, a small residual adapter; the
    rotation task, the cheaper of the two: jigsaw's 9 tiles cost 9 encoder passes an image): the
    loss falls, the representation spreads out (RankMe of the fixed scattering's adapter at
    initialisation is ~4) and probes far above chance. (The scattering coefficients alone already
    probe at 0.95 on digits, so no gain over initialisation is asserted.)"""
    params = dict(temperature=0.5, projector=[128, 64], pretext="rotation", pretext_weight=0.3, pretext_widths=[64, 32], pretext_dropout=0.1)
    method, before, after, losses = train("scatsimclr", params, dict(name="scatnet", embed_dim=64, width=16, depth=1), epochs=4)
    assert losses[-1] < 0.85 * losses[0]
    assert after["probe/linear_acc"] > 0.9 and after["label_free/rankme"] > 12 > before["label_free/rankme"] + 5


def test_interclr_losses_by_hand():
    q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(intra_loss(q, k, queue, 0.5)) == pytest.approx(-math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2.0) + 1.0)), rel=1e-5)
    negatives, valid = queue.unsqueeze(0), torch.tensor([[False, True]])  # the first negative shares the query's cluster: left out
    got = inter_loss(q, k, negatives, valid, 0.5, margin=-0.5)
    assert float(got) == pytest.approx(-math.log(math.exp(2.2) / (math.exp(2.2) + 1.0)), rel=1e-5)


def test_interclr_memory_bank_sampling_and_online_labels():
    torch.manual_seed(0)
    method = build_method("interclr", build_backbone("cnn", (1, 8, 8), 16, 4, 2), queue=6, projector=[16, 8], negatives=4, semihard_pool=8,
                          clusters=3, bank_momentum=0.5)
    method.prepare(torch.rand(30, 1, 8, 8), None)
    assert method.bank.shape == (30, 8) and torch.allclose(method.bank.norm(dim=1), torch.ones(30))
    assert torch.equal(method.labels, (method.bank @ method.centroids.T).argmax(dim=1))  # k-means labels: the nearest centroid
    q = F.normalize(torch.randn(5, 8), dim=1)
    labels = method.labels[:5]
    positive, negatives, valid = method._sample(q, labels, torch.rand(5), torch.rand(5, 4))
    bank_rows = [(method.bank == p).all(dim=1).nonzero()[0, 0] for p in positive]
    assert all(method.labels[r] == labels[i] for i, r in enumerate(bank_rows))  # a positive is from the query's cluster
    nearest = (q @ method.bank.T).topk(8, dim=1).indices
    for i in range(5):
        rows = [int((method.bank == n).all(dim=1).nonzero()[0, 0]) for n in negatives[i]]
        assert set(rows) <= set(nearest[i].tolist())  # drawn from the 8 most similar
        assert valid[i].tolist() == [bool(method.labels[r] != labels[i]) for r in rows]
    old, keys = method.bank[[2, 7]].clone(), F.normalize(torch.randn(2, 8), dim=1)
    method._update(torch.tensor([2, 7]), keys)
    expected = F.normalize(0.5 * old + 0.5 * keys, dim=1)
    assert torch.allclose(method.bank[[2, 7]], expected, atol=1e-6)
    assert torch.equal(method.labels[[2, 7]], (expected @ method.centroids.T).argmax(dim=1))
    method._update(torch.tensor([0, 1, 3, 4, 5]), F.normalize(torch.randn(5, 8), dim=1))
    assert int(method.queue_ptr) == (2 + 5) % 6 and torch.allclose(method.queue[0], method.bank[5] * 0 + method.queue[0])


def test_interclr_learns_on_digits():
    """InterCLR on digits (MoCo v2 with a 512-key queue, 20 online clusters over the bank of 1,437
    images, re-clustered every epoch): the loss falls, the representation probes far above chance
    and spreads out, and its clusters stay spread (no cluster collapse)."""
    params = dict(temperature=0.2, queue=512, projector=[128, 64], base_momentum=0.99, negatives=64, semihard_pool=256, clusters=20)
    method, before, after, losses = train("interclr", params, CNN, epochs=6)
    assert losses[-1] < 0.9 * losses[0]
    assert after["probe/linear_acc"] > 0.95 and after["label_free/rankme"] > 12 > before["label_free/rankme"]
    assert after["label_free/cluster_entropy"] > 0.9


def test_kmeans_separates_blobs_and_restarts_empty_clusters():
    x = torch.cat([torch.randn(50, 2) * 0.1 + 3, torch.randn(50, 2) * 0.1 - 3])
    centroids, labels = kmeans(x, 2)
    assert len(set(labels[:50].tolist())) == 1 and len(set(labels[50:].tolist())) == 1 and labels[0] != labels[-1]
    _, labels = kmeans(x, 3, init=torch.tensor([[3.0, 3.0], [-3.0, -3.0], [100.0, 100.0]]))  # the third starts far from every row
    assert torch.bincount(labels, minlength=3).min() > 0


def test_distinct_group_batches():
    groups = torch.tensor([0] * 5 + [1] * 3 + [2] * 4 + [3] * 1)
    sampler = DistinctGroups(groups, 3)
    batches = sampler.global_batches()
    assert len(batches) == 4 == len(sampler) // 3  # 4 rounds of the 3 largest groups; one sample left over
    assert all(len(set(groups[b].tolist())) == 3 for b in batches)
    assert len({int(i) for b in batches for i in b}) == 12  # no sample twice
    sampler.set_epoch(1)
    assert [b.tolist() for b in sampler.global_batches()] != [b.tolist() for b in batches]  # reshuffled every epoch
    halves = [list(DistinctGroups(groups, 2, num_replicas=2, rank=r, seed=0)) for r in (0, 1)]
    together = DistinctGroups(groups, 2, seed=0).global_batches()
    assert [[a, b] for a, b in zip(*halves)] == [g.tolist() for g in together]  # each worker its share of every global batch
    with pytest.raises(ValueError, match="need 5 groups"):
        DistinctGroups(groups, 5)


def test_gsimclr_pseudo_labels_follow_the_digits():
    from sklearn.metrics import normalized_mutual_info_score

    d = digits()
    labels = pseudo_labels(d.train.x, 10, epochs=10)
    assert normalized_mutual_info_score(d.train.y.numpy(), labels.numpy()) > 0.5  # label-free, yet close to the classes
    assert torch.equal(pseudo_labels(d.train.x, 10, epochs=10), labels)  # the same on every worker


def test_gsimclr_learns_on_digits_from_batches_of_distinct_pseudo_labels():
    """G-SimCLR on digits: 40 pseudo-labels, batches of 32 images of different ones; the
    representation gains on initialisation and spreads out."""
    params = dict(temperature=0.2, projector=[128, 64], clusters=40, dae_epochs=5)
    method, before, after, losses = train("gsimclr", params, CNN, epochs=4, batch_size=32)
    assert losses[-1] < 0.8 * losses[0]
    assert after["probe/linear_acc"] > before["probe/linear_acc"] + 0.01 and after["label_free/rankme"] > 12 > before["label_free/rankme"]
    assert after["label_free/cluster_entropy"] > 0.8


def test_gsimclr_refuses_streamed_data_and_batches_larger_than_its_clusters(tmp_path):
    from selfsup.config import ConfigError, load_experiment
    from selfsup.train.launch import preflight

    with pytest.raises(ValueError, match="prepares on the whole training set in memory: set data.stream: false"):
        load_experiment(ROOT / "examples" / "cluster" / "gsimclr_cifar10.yaml", ["data.stream=true"])
    cfg = load_experiment(ROOT / "examples" / "digits_gsimclr.yaml", ["method.clusters=16", "method.dae_epochs=1"])
    with pytest.raises(ConfigError, match="batches of 64 samples of different groups need 64 groups; the samples fall in 16"):
        preflight(cfg, "digits_gsimclr.yaml")


def test_gedi_terms_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # p = (.25, .75), (.5, .5)
    assert torch.allclose(energy(logits), torch.tensor([-math.log(4.0), -math.log(2.0)]))
    other = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    ce = lambda p, q: -sum(a * math.log(b) for a, b in zip(p, q))  # noqa: E731
    expected = 0.5 * ((ce([0.25, 0.75], [0.5, 0.5]) + ce([0.5, 0.5], [0.25, 0.75])) / 2 + (ce([0.5, 0.5], [0.25, 0.75]) + ce([0.25, 0.75], [0.5, 0.5])) / 2)
    assert float(invariance_loss(logits, other)) == pytest.approx(expected, rel=1e-5)
    marginal = [(0.25 + 0.5) / 2, (0.75 + 0.5) / 2]
    assert float(prior_loss(logits)) == pytest.approx(-(math.log(marginal[0]) + math.log(marginal[1])) / 2 - math.log(2), rel=1e-5)
    assert float(prior_loss(torch.tensor([[5.0, 0.0], [0.0, 5.0]]))) == pytest.approx(0.0, abs=1e-6)  # balanced: no penalty


def test_gedi_sgld_descends_the_energy_and_fills_the_replay_buffer():
    torch.manual_seed(0)
    method = build_method("gedi", build_backbone("cnn", (1, 8, 8), 16, 4, 2), clusters=4, projector=[16, 8], sgld_steps=5, sgld_step=1.0,
                          sgld_noise=0.0, reinit=1.0, buffer=32)
    b = {**method.masks()(8), "sgld_start": torch.randperm(32)[:8]}
    with torch.no_grad():
        before = energy(method.logits(b["sgld_init"])).mean()
    x = method.sample(b)
    with torch.no_grad():
        assert energy(method.logits(x)).mean() < before  # gradient steps on E lower it
    assert torch.equal(method.replay[b["sgld_start"]], x)


def test_gedi_learns_spread_clusters_on_digits():
    """GEDI on digits (10 clusters; 5 SGLD steps a batch): the loss falls (the energy gap does not
    diverge), the clusters spread over the digits (the untrained network puts every image in one)
    and the representation probes far above chance and spreads out."""
    params = dict(clusters=10, projector=[128, 64], sgld_steps=5, buffer=1000)
    method, before, after, losses = train("gedi", params, CNN, epochs=6)
    assert losses[-1] < 0.7 * losses[0] and all(math.isfinite(v) for v in losses)
    assert after["probe/linear_acc"] > before["probe/linear_acc"] + 0.01 and after["label_free/rankme"] > 12 > before["label_free/rankme"]
    assert after["label_free/cluster_entropy"] > 0.8 > before["label_free/cluster_entropy"] + 0.5


def test_batches_carry_their_samples_indices_without_the_skipped_ones():
    from selfsup.data.splits import Skipped

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return Skipped(f"{i}.png", "unreadable") if i == 7 else torch.full((1,), float(i))

    batch = ViewCollate(lambda x: [x])(SeededSamples(Files()).__getitems__([3, 7, 1]))
    assert batch["index"].tolist() == [3, 1] and batch["views"][0].flatten().tolist() == [3.0, 1.0]
    assert [s.file for s in batch["skipped"]] == ["7.png"]
