"""DEPICT: deep embedded regularized clustering (Dizaji, Herandi, Deng, Cai & Huang, ICCV 2017).

https://arxiv.org/abs/1704.06327 — sec. 3, eq. 5-12; reference herandy/DEPICT (Theano,
``functions.py``: ``build_depict`` and ``train_depict``). A convolutional autoencoder whose embedding
feeds a softmax clustering layer. Every image passes the encoder twice: clean, and corrupted (the
input and every layer's output through dropout, the reference's noisy pathway). With ``f`` the
encoder, ``W`` the clustering layer and ``g`` the decoder:

    p_i  = softmax(W f(x_i))                          # clean pathway, no gradient: the targets' source
    p~_i = softmax(W f~(x_i))                         # noisy pathway: what is trained
    q_ik = (p_ik / sqrt(sum_i' p_i'k)) / sum_k' (p_ik' / sqrt(sum_i' p_i'k'))    # eq. 9: balanced targets
    L = 1/N sum_i KL(q_i || p~_i) + recon_weight * sum_l 1/|z_l| ||z_l - z^_l||^2   # eq. 11-12

``KL(q || p~)`` carries DEPICT's uniform prior on the cluster sizes (the ``sqrt`` in eq. 9 is what
penalises large clusters, so the clusters stay balanced). The reconstruction term is the
reference's ladder: the decoder, fed the noisy embedding, rebuilds the clean pathway's output of
every encoder layer ``z_l`` (the input image among them; targets detached, as the reference's clean
pathway gives no reconstruction gradient), each layer's error averaged over its values.

The encoder is the small conv net (``model.backbone: cnn``): its conv stages are the layers, its
pooled output the embedding (the reference flattens its last conv map into a fully connected
embedding). The targets ``q`` come from the global batch (gathered from every worker) at each step;
the reference recomputes them over the whole dataset once an epoch. Left out: the reference's
autoencoder pretraining and k-means initialisation of ``W`` (here the clustering and the
reconstruction train together from the start).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.gather import gather_with_grad, world
from selfsup.methods.base import Method, register
from selfsup.metrics.clusters import CLUSTER_ENTROPY, cluster_entropy
from selfsup.sections import Fraction, Section


def balanced_targets(p: torch.Tensor) -> torch.Tensor:
    """DEPICT's eq. 9 of cluster probabilities ``p`` ``(N, K)``: ``q_ik ∝ p_ik / sqrt(sum_i p_ik)``,
    each row summing to 1 (no gradient)."""
    p = p.detach().float()
    q = p / p.sum(dim=0, keepdim=True).sqrt()
    return q / q.sum(dim=1, keepdim=True)


def depict_loss(noisy_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1/N sum_i KL(q_i || softmax(noisy_logits_i))`` over ``(N, K)``."""
    log_p = F.log_softmax(noisy_logits.float(), dim=1)
    return (targets * (targets.clamp_min(1e-12).log() - log_p)).sum(dim=1).mean()


def ladder_loss(reconstructions: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """``sum_l mean((z_l - z^_l)^2)``: each layer's reconstruction error averaged over its values."""
    return sum(F.mse_loss(r.float(), t.detach().float()) for r, t in zip(reconstructions, targets))


class DEPICTConfig(Section):
    """DEPICT (Dizaji et al., 2017): the clusters, the noisy pathway's dropout and the weight of
    the layer-wise reconstruction."""

    name: Literal["depict"] = "depict"
    clusters: int = Field(10, ge=2)
    noise: Fraction = 0.2
    recon_weight: float = Field(1.0, ge=0.0)


class Decoder(nn.Module):
    """The encoder's stages mirrored: the embedding ``(B, E)`` to the last stage's map, then each stage
    back to the one before it (upsampling to its size, conv-BN-ReLU; a plain conv onto the image)."""

    def __init__(self, shapes: list[tuple[int, int, int]], embed_dim: int):
        super().__init__()
        self.shapes = shapes
        self.first = nn.Linear(embed_dim, shapes[-1][0] * shapes[-1][1] * shapes[-1][2])
        stages = []
        for out, into in zip(shapes[:0:-1], shapes[-2::-1]):
            conv = nn.Conv2d(out[0], into[0], 3, padding=1)
            last = len(stages) == len(shapes) - 2
            stages.append(nn.Sequential(nn.Upsample(size=into[1:]), conv, *([] if last else [nn.BatchNorm2d(into[0]), nn.ReLU()])))
        self.stages = nn.ModuleList(stages)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Reconstructions of every layer's output, the image first (the order of the targets)."""
        h = self.first(z).view(len(z), *self.shapes[-1])
        out = [h]
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out[::-1]


@register("depict")
class DEPICT(Method):
    description = "DEPICT (Dizaji et al. 2017): a conv autoencoder's softmax clusters trained on balanced targets (KL) with a layer-wise reconstruction"
    family = "clustering"
    config = DEPICTConfig
    modality = "image"
    recipes = ("none", "light")
    backbones = ("cnn",)
    n_views = 1
    own_metrics = (CLUSTER_ENTROPY,)

    def __init__(self, backbone, clusters: int = 10, noise: float = 0.2, recon_weight: float = 1.0):
        super().__init__(backbone)
        self.head = nn.Linear(backbone.embed_dim, clusters)
        self.clusters, self.noise, self.recon_weight = clusters, noise, recon_weight
        with torch.no_grad():
            was = backbone.training
            _, layers = self.encode(torch.zeros(2, *backbone.in_shape), 0.0)
            backbone.train(was)
        self.decoder = Decoder([tuple(t.shape[1:]) for t in layers], backbone.embed_dim)

    def encode(self, x: torch.Tensor, noise: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Embedding ``(B, E)`` and every layer's output (the input first), each through dropout ``noise``."""
        h = F.dropout(x, noise, self.training)
        layers = [h]
        for stage in self.backbone.features:
            h = F.dropout(stage(h), noise, self.training)
            layers.append(h)
        return h.mean(dim=(2, 3)), layers

    def forward(self, batch):
        (x,) = batch["views"]
        with torch.no_grad():
            clean, layers = self.encode(x, 0.0)
            p = F.softmax(self.head(clean).float(), dim=1)
        noisy, _ = self.encode(x, self.noise)
        rank, _ = world()
        targets = balanced_targets(gather_with_grad(p))[rank * len(x):(rank + 1) * len(x)]  # the sums run over the global batch
        cluster = depict_loss(self.head(noisy), targets)
        recon = ladder_loss(self.decoder(noisy), [x, *layers[1:]])
        return {"loss": cluster + self.recon_weight * recon, "cluster": cluster.detach(), "reconstruction": recon.detach()}

    @torch.no_grad()
    def label_free_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``label_free/cluster_entropy`` of the clean pathway's clusters of ``x``."""
        assigned = torch.cat([self.head(self.backbone(chunk)).argmax(dim=1) for chunk in x.split(256)])
        return {CLUSTER_ENTROPY: cluster_entropy(assigned, self.clusters)}
