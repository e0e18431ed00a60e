"""InterCLR: intra- and inter-image invariance (Xie, Zhan, Liu, Ong & Loy, "Delving into
Inter-Image Invariance for Unsupervised Visual Representations", IJCV 2022).

https://arxiv.org/abs/2008.11702 — sec. 3; reference open-mmlab/mmselfsup
(``mmselfsup/models/algorithms/interclr_moco.py``, its ``InterCLRMemory`` and the
``interclr-moco_resnet50`` config). MoCo v2 (a query encoder, its momentum copy as the key encoder,
a queue of keys) gives the intra-image loss; a memory bank of every training image's feature with
online k-means pseudo-labels gives the inter-image loss:

    q = norm(g(f(x1))), k = norm(g'(f'(x2)))                       # query, momentum key
    intra = CE([q.k, q.queue] / tau, 0)                             # MoCo v2
    l = labels[i]                                                   # image i's pseudo-label
    p = bank[random j with labels[j] = l]                           # an image of the same cluster
    N = `negatives` drawn from the `semihard_pool` bank entries most similar to q, other labels only
    inter = CE([q.p - margin, q.N] / tau, 0)                        # margin -0.5: the relaxed positive
    loss = intra_weight intra + inter_weight inter
    bank[i] <- norm((1 - m) bank[i] + m k);  labels[i] <- argmax_c centroids_c . bank[i]      # online labels, after the step

The centroids are the means of their clusters' bank entries, recomputed every
``centroid_interval`` steps; the bank and labels start from k-means of the initial network's
features of the training set (``Method.prepare``; a streamed dataset's bank starts random and fills
as its images are seen), and are clustered again at the start of every ``recluster_epochs``-th
epoch (5 rounds of k-means from the current centroids, an emptied cluster restarted in the
largest: the reference's hook re-clusters and splits large clusters into the small ones it
dissolves; without it, online labels drift into a few clusters). Every worker updates its copy of the bank, queue and centroids with the
keys of every worker (gathered), so the copies stay equal without broadcasting them.

Left out: the reference's minimum cluster size (clusters under 20 images dissolved), the key
encoder's shuffled BatchNorm, and the reference's resampling of negatives that share the
query's label (here they are masked out of the softmax).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from selfsup.gather import gather_with_grad
from selfsup.methods.base import Method, register
from selfsup.methods.ema import ema_update
from selfsup.metrics.clusters import CLUSTER_ENTROPY, cluster_entropy, kmeans
from selfsup.models.heads import Projected
from selfsup.sections import Fraction, Section, Widths


def intra_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE of unit queries ``q`` ``(n, D)`` with their keys ``k`` ``(n, D)`` against the
    queue ``(K, D)``: ``CE([q.k, q.queue] / tau, 0)``."""
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def inter_loss(q: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, valid: torch.Tensor, temperature: float,
               margin: float) -> torch.Tensor:
    """InterCLR's inter-image loss of unit queries ``q`` ``(n, D)``, a same-cluster bank feature each
    ``positive`` ``(n, D)`` and sampled bank features ``negatives`` ``(n, M, D)`` (``valid`` ``(n, M)``:
    those of another cluster): ``CE([q.p - margin, q.N] / tau, 0)`` over the valid negatives."""
    pos = (q * positive).sum(dim=1, keepdim=True) - margin
    neg = torch.bmm(negatives, q.unsqueeze(2)).squeeze(2).masked_fill(~valid, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class InterCLRConfig(Section):
    """InterCLR (Xie et al., 2022): MoCo v2's temperature, queue, projector and key-encoder EMA, the
    two losses' weights, the inter-image margin, the semi-hard negatives (how many, drawn from how
    many nearest bank entries), the k-means clusters, the bank's update rate and the centroids'
    refresh interval in steps (the reference: 0.2, 65536, 2048-128, 0.999, 0.75 / 0.25, -0.5,
    16384 of 128000, 10000 clusters, 1.0, 10), and the epochs between re-clusterings of the bank."""

    name: Literal["interclr"] = "interclr"
    temperature: float = Field(0.2, gt=0.0)
    queue: int = Field(65536, ge=1)
    projector: Widths = Field(default_factory=lambda: [2048, 128])
    base_momentum: Fraction = 0.999
    intra_weight: float = Field(0.75, ge=0.0)
    inter_weight: float = Field(0.25, ge=0.0)
    margin: float = -0.5
    negatives: int = Field(16384, ge=1)
    semihard_pool: int = Field(128000, ge=1)
    clusters: int = Field(10000, ge=2)
    bank_momentum: Fraction = 1.0
    centroid_interval: int = Field(10, ge=1)
    recluster_epochs: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "InterCLRConfig":
        if self.negatives > self.semihard_pool:
            raise ValueError(f"method.negatives {self.negatives} are drawn from the method.semihard_pool nearest bank entries: at most {self.semihard_pool}")
        return self


@register("interclr")
class InterCLR(Method):
    description = "InterCLR (Xie et al. 2022): MoCo v2's intra-image loss + an inter-image loss over a memory bank's online k-means clusters"
    family = "contrastive"
    config = InterCLRConfig
    modality = "image"
    recipes = ("byol", "simclr", "light")
    own_metrics = (CLUSTER_ENTROPY,)
    broadcast_buffers = False

    def __init__(self, backbone, temperature: float = 0.2, queue: int = 65536, projector: list[int] = (2048, 128), base_momentum: float = 0.999,
                 intra_weight: float = 0.75, inter_weight: float = 0.25, margin: float = -0.5, negatives: int = 16384, semihard_pool: int = 128000,
                 clusters: int = 10000, bank_momentum: float = 1.0, centroid_interval: int = 10, recluster_epochs: int = 1):
        super().__init__(backbone)
        d = projector[-1]
        self.head = nn.Sequential(nn.Linear(backbone.embed_dim, projector[0]), nn.ReLU(inplace=True), nn.Linear(projector[0], d))  # MoCo v2's neck
        self.key_encoder = Projected(copy.deepcopy(backbone), copy.deepcopy(self.head)).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue, d), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank", torch.zeros(0, d))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(clusters, d))
        self.register_buffer("label_change", torch.zeros(()))  # the share relabelled by the last step's update (logged the step after)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.temperature, self.base_momentum, self.weights, self.margin = temperature, base_momentum, (intra_weight, inter_weight), margin
        self.negatives, self.semihard_pool, self.clusters = negatives, semihard_pool, clusters
        self.bank_momentum, self.centroid_interval, self.recluster_epochs, self.steps = bank_momentum, centroid_interval, recluster_epochs, 0

    @torch.no_grad()
    def prepare(self, train_x, groups) -> None:
        """The memory bank: every training image's key feature from the initial network, k-means of
        them into ``clusters`` (20 rounds, seed 0) for the labels and centroids. For a streamed
        dataset (``train_x`` not a tensor) the features start as random unit vectors dealt into the
        clusters in turn (k-means of noise means nothing, and at ImageNet's size would take hours
        on the CPU): the first epoch fills the bank, the second's re-clustering labels it."""
        n = len(train_x)
        if torch.is_tensor(train_x):
            was = self.key_encoder.training
            self.key_encoder.eval()
            self.bank = F.normalize(torch.cat([self.key_encoder(chunk.float()) for chunk in train_x.split(256)]).float(), dim=1)
            self.key_encoder.train(was)
            centroids, self.labels = kmeans(self.bank, self.clusters)
            self.centroids = F.normalize(centroids, dim=1)
        else:
            self.bank = F.normalize(torch.randn(n, self.queue.shape[1], generator=torch.Generator().manual_seed(0)), dim=1)
            self.labels = torch.arange(n) % self.clusters
            self.refresh_centroids()

    def forward(self, batch):
        if not len(self.bank):
            raise RuntimeError("InterCLR's memory bank is empty: call prepare(train_x) before training (the worker does)")
        x1, x2 = batch["views"]
        index = batch["index"]
        q = F.normalize(self.project(x1).float(), dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_encoder(x2).float(), dim=1)
        intra = intra_loss(q, k, self.queue.clone(), self.temperature)
        positive, negatives, valid = self._sample(q.detach(), self.labels[index], batch["positive_draw"], batch["negative_draw"])
        inter = inter_loss(q, positive, negatives, valid, self.temperature, self.margin)
        self.pending = (gather_with_grad(index), gather_with_grad(k))  # the memory moves after the step (after_step)
        intra_w, inter_w = self.weights
        return {"loss": intra_w * intra + inter_w * inter, "intra": intra.detach(), "inter": inter.detach(), "label_change": self.label_change.clone()}

    @torch.no_grad()
    def masks(self):
        """The sampling's uniform draws, made at collate time (a compiled step then samples as the
        eager one does): ``{"positive_draw": (B,), "negative_draw": (B, negatives)}``."""
        return lambda batch_size: {"positive_draw": torch.rand(batch_size), "negative_draw": torch.rand(batch_size, self.negatives)}

    def _sample(self, q: torch.Tensor, labels: torch.Tensor, positive_draw: torch.Tensor,
                negative_draw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each query's positive (a random bank entry of its cluster) ``(n, D)``, its negatives
        (``negatives`` of its ``semihard_pool`` most similar bank entries) ``(n, M, D)``, and which
        of those belong to another cluster ``(n, M)``."""
        order = self.labels.argsort()
        counts = torch.zeros(self.clusters, dtype=torch.long, device=q.device).index_add_(0, self.labels, torch.ones_like(self.labels))
        starts = counts.cumsum(0) - counts
        pick = starts[labels] + (positive_draw.to(q.device) * counts[labels]).long().clamp(max=counts[labels] - 1)
        positive = self.bank[order[pick]]
        pool = q @ self.bank.T
        nearest = pool.topk(min(self.semihard_pool, len(self.bank)), dim=1, sorted=False).indices
        drawn = nearest.gather(1, (negative_draw.to(q.device) * nearest.shape[1]).long().clamp(max=nearest.shape[1] - 1))
        return positive, self.bank[drawn], self.labels[drawn] != labels[:, None]

    @torch.no_grad()
    def _update(self, index: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Enqueue the global batch's keys; move their bank entries towards them and relabel them
        by the nearest centroid. Returns the share of relabelled images."""
        n, size = len(keys), len(self.queue)
        slots = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue[slots] = keys
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
        moved = F.normalize((1 - self.bank_momentum) * self.bank[index] + self.bank_momentum * keys, dim=1)
        self.bank[index] = moved
        relabelled = (moved @ self.centroids.T).argmax(dim=1)
        changed = (relabelled != self.labels[index]).float().mean()
        self.labels[index] = relabelled
        return changed

    @torch.no_grad()
    def refresh_centroids(self) -> None:
        """Every cluster's centroid: the normalised mean of its bank entries (an empty one kept)."""
        sums = torch.zeros_like(self.centroids).index_add_(0, self.labels, self.bank)
        filled = sums.norm(dim=1) > 0
        self.centroids[filled] = F.normalize(sums[filled], dim=1)

    @torch.no_grad()
    def set_epoch(self, epoch: int) -> None:
        """Every ``recluster_epochs``-th epoch after the first: k-means of the bank again, from the
        current centroids (5 rounds), for new labels and centroids."""
        if epoch > 1 and (epoch - 1) % self.recluster_epochs == 0 and len(self.bank):
            centroids, self.labels = kmeans(self.bank, self.clusters, iterations=5, seed=epoch, init=self.centroids)
            self.centroids = F.normalize(centroids, dim=1)

    def after_step(self, progress: float) -> None:
        """The key encoder's EMA; then the step's keys into the queue and the bank (after the
        backward pass: a compiler may recompute the loss's bank rows from the buffer in it, so the
        buffer must not move before), and every ``centroid_interval`` steps the centroids."""
        if self.pending is not None:
            self.label_change.copy_(self._update(*self.pending))
            self.pending = None
        ema_update(self.key_encoder.backbone, self.backbone, self.base_momentum)
        ema_update(self.key_encoder.head, self.head, self.base_momentum)
        self.steps += 1
        if self.steps % self.centroid_interval == 0:
            self.refresh_centroids()

    @torch.no_grad()
    def label_free_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``label_free/cluster_entropy`` of the memory bank's pseudo-labels (every training image)."""
        return {CLUSTER_ENTROPY: cluster_entropy(self.labels, self.clusters)}
