"""G-SimCLR: SimCLR with batches guided by pseudo-labels (Chakraborty, Gosthipaty & Paul, ICDM
Workshops 2020).

https://arxiv.org/abs/2009.12007 — sec. III; reference ariG23498/G-SimCLR (TensorFlow notebooks:
``CIFAR10/Autoencoder.ipynb``, ``CIFAR10/SimCLR_Pseudo_Labels/SimCLR_Pseudo_Labels_Training.ipynb``).
NT-Xent treats every other image of a batch as a negative, including images of the same category;
G-SimCLR keeps those out of the batch:

    before training (Method.prepare):
        a denoising autoencoder learns to rebuild x from x + noise           # on the unlabelled training set
        pseudo-labels = k-means(encoder(x), k = clusters)
    training: every batch holds images of different pseudo-labels           # selfsup.data.views.DistinctGroups
        loss = NT-Xent(g(f(x1)), g(f(x2)), tau)                             # SimCLR's, unchanged (the class is SimCLR's)

The autoencoder here: the small conv net (conv-BN-ReLU, stride 2, pooled) onto a ``dae_latent``-wide
code and a two-layer MLP decoder back to the image, Gaussian noise of ``dae_noise``, mean squared
error, ``dae_epochs`` epochs of Adam (seeded: every worker computes the same labels); the
reference's is a deeper conv autoencoder whose code is a conv feature map. The pseudo-labels are
fixed for the run, and a batch may hold at most ``clusters`` images (so ``train.batch_size`` must
not exceed ``method.clusters``). ``label_free/cluster_entropy``: how evenly the training images
spread over the pseudo-labels (a collapsed clustering leaves few batches to make).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import register
from selfsup.methods.simclr import SimCLR
from selfsup.metrics.clusters import CLUSTER_ENTROPY, cluster_entropy, kmeans
from selfsup.models.backbones import SmallCNN
from selfsup.sections import Section, Widths


def denoising_autoencoder(shape: tuple[int, ...], latent: int) -> tuple[nn.Module, nn.Module]:
    """Encoder ``(B, C, H, W) -> (B, latent)`` and decoder ``(B, latent) -> (B, C, H, W)`` (sigmoid: pixels in [0, 1])."""
    encoder = SmallCNN(shape[0], latent, width=16, depth=3)
    values = shape[0] * shape[1] * shape[2]
    decoder = nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, values), nn.Sigmoid(), nn.Unflatten(1, tuple(shape)))
    return encoder, decoder


def pseudo_labels(x: torch.Tensor, clusters: int, latent: int = 64, noise: float = 0.1, epochs: int = 10, seed: int = 0) -> torch.Tensor:
    """G-SimCLR's pseudo-labels ``(N,)`` of images ``x`` ``(N, C, H, W)``: a denoising autoencoder
    trained ``epochs`` epochs (Adam 1e-3, batches of 256) to rebuild ``x`` from ``x + N(0, noise^2)``,
    then k-means of its codes into ``clusters``. Seeded: the same on every worker."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, decoder = denoising_autoencoder(tuple(x.shape[1:]), latent)
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
        with torch.enable_grad():
            for _ in range(epochs):
                for batch in x[torch.randperm(len(x))].float().split(256):
                    loss = F.mse_loss(decoder(encoder(batch + noise * torch.randn_like(batch))), batch)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        encoder.eval()
        with torch.no_grad():
            codes = torch.cat([encoder(batch.float()) for batch in x.split(1024)])
        return kmeans(codes, clusters, seed=seed)[1]


class GSimCLRConfig(Section):
    """G-SimCLR (Chakraborty et al., 2020): SimCLR's temperature and projection head, the k-means
    clusters of the pseudo-labels (at least the batch size), and the denoising autoencoder's code
    width, noise and epochs."""

    name: Literal["gsimclr"] = "gsimclr"
    temperature: float = Field(0.2, gt=0.0)
    projector: Widths = Field(default_factory=lambda: [256, 128])
    clusters: int = Field(256, ge=2)
    dae_latent: int = Field(64, ge=1)
    dae_noise: float = Field(0.1, ge=0.0)
    dae_epochs: int = Field(10, ge=1)


@register("gsimclr")
class GSimCLR(SimCLR):
    description = "G-SimCLR (Chakraborty et al. 2020): SimCLR on batches of distinct pseudo-labels (k-means of a denoising autoencoder's codes)"
    config = GSimCLRConfig
    modality = "image"
    recipes = ("simclr", "byol", "light")
    in_memory = True
    own_metrics = (CLUSTER_ENTROPY,)

    def __init__(self, backbone, temperature: float = 0.2, projector: list[int] = (256, 128), clusters: int = 256, dae_latent: int = 64,
                 dae_noise: float = 0.1, dae_epochs: int = 10):
        super().__init__(backbone, projector, temperature)
        self.clusters = clusters
        self.dae = dict(latent=dae_latent, noise=dae_noise, epochs=dae_epochs)
        self.register_buffer("pseudo_labels", torch.zeros(0, dtype=torch.long))

    def prepare(self, train_x, groups) -> None:
        """The pseudo-labels of the training images (:func:`pseudo_labels`)."""
        if not torch.is_tensor(train_x):
            raise ValueError("method 'gsimclr' trains its autoencoder on the training set held in memory: set data.stream: false")
        self.pseudo_labels = pseudo_labels(train_x, self.clusters, **self.dae)

    def batch_groups(self) -> torch.Tensor:
        return self.pseudo_labels

    @torch.no_grad()
    def label_free_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``label_free/cluster_entropy`` of the pseudo-labels of the training images."""
        return {CLUSTER_ENTROPY: cluster_entropy(self.pseudo_labels, self.clusters)}
