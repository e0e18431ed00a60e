"""GEDI: self-supervised clustering unified with an energy-based generative model (Sansone &
Manhaeve, "Unifying Self-Supervised Clustering and Energy-Based Models", TMLR 2025).

https://arxiv.org/abs/2401.00873 — sec. 4 and Algorithm 1 (reference emsansone/GEDI); the objective
of its precursor, "The Triad of Failure Modes and a Possible Way Out" (Sansone, arXiv 2309.15420).
One network gives cluster logits ``l(x) = h(g(f(x))) / tau`` (backbone ``f``, projector ``g``,
cluster layer ``h`` onto ``clusters``); read as an energy-based model (JEM, Grathwohl et al. 2020),
``E(x) = -logsumexp_y l(x)_y`` is its energy and ``p(y|x) = softmax(l(x))`` its clustering. The
lower bound on the data log-likelihood that GEDI maximises has three terms, each against one
failure mode:

    gen   = mean E(x) - mean E(x~) + a (mean E(x)^2 + mean E(x~)^2)   # generative: x~ by SGLD from E; against representation collapse
    inv   = -1/2 mean [sum_y p(y|x1) log p(y|x2) + sum_y p(y|x2) log p(y|x1)]    # two views agree: permutation collapse
    prior = -sum_y 1/C log mean_i p(y|x_i) - log C       # KL(uniform || batch marginal): cluster collapse
    loss  = gen_weight gen + inv_weight inv + prior_weight prior

The SGLD negatives (JEM's sampler): ``sgld_steps`` steps of ``x~ <- x~ - sgld_step dE/dx~ +
sgld_noise eps`` from a replay buffer of earlier negatives, restarted from uniform noise with
probability ``reinit`` (0.05); the draws are made at collate time with the batch. JEM's
WideResNet has no BatchNorm; a backbone that has some computes the energies of the generative term
(data and samples alike) with its running statistics, so that the sampler's images never enter
them, and the two views' clusterings with the batch's. The prior term is taken over the global
batch.

The defaults (temperature 0.5, weights 0.1 / 1 / 10) are this implementation's, chosen on digits:
the reference code and the paper's hyperparameter tables were not readable when it was written, and
at temperature 0.1 with equal weights the energy gap diverged within three epochs (the data's
energy pushed down and the samples' up without bound, a known EBM instability). The squared
energies' penalty ``a`` (``energy_reg``, 0.1) is Du & Mordatch's (2019, IGEBM) stabiliser, added
here for the same reason: without it the 10-epoch digits example diverged at epoch 4 even at
temperature 0.5. Left out: the paper's neuro-symbolic experiments.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.gather import gather_with_grad
from selfsup.methods.base import Method, register
from selfsup.metrics.clusters import CLUSTER_ENTROPY, cluster_entropy
from selfsup.models.eager import eager
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Fraction, Section, Widths


def energy(logits: torch.Tensor) -> torch.Tensor:
    """JEM's energy ``-logsumexp_y logits_y`` ``(B,)`` of cluster logits ``(B, C)``."""
    return -torch.logsumexp(logits.float(), dim=1)


def invariance_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``-1/2 mean_i [sum_y p_a log p_b + sum_y p_b log p_a]`` of two views' cluster logits ``(B, C)``."""
    log_a, log_b = F.log_softmax(logits_a.float(), dim=1), F.log_softmax(logits_b.float(), dim=1)
    return -0.5 * ((log_a.exp() * log_b).sum(dim=1).mean() + (log_b.exp() * log_a).sum(dim=1).mean())


def prior_loss(logits: torch.Tensor) -> torch.Tensor:
    """``KL(U || mean_i p(y|x_i)) = -1/C sum_y log mean_i p(y|x_i) - log C`` over logits ``(N, C)``:
    0 when the clusters are used equally, large when a few take every sample."""
    c = logits.shape[1]
    marginal = F.softmax(logits.float(), dim=1).mean(dim=0)
    return -marginal.clamp_min(1e-12).log().mean() - math.log(c)


class GEDIConfig(Section):
    """GEDI (Sansone & Manhaeve, 2025): the clusters and the logits' temperature, the projector,
    the three terms' weights, JEM's sampler (steps, step size, noise, restart share, replay
    buffer size) and the squared energies' penalty."""

    name: Literal["gedi"] = "gedi"
    clusters: int = Field(10, ge=2)
    temperature: float = Field(0.5, gt=0.0)
    projector: Widths = Field(default_factory=lambda: [512, 128])
    gen_weight: float = Field(0.1, ge=0.0)
    inv_weight: float = Field(1.0, ge=0.0)
    prior_weight: float = Field(10.0, ge=0.0)
    sgld_steps: int = Field(20, ge=1)
    sgld_step: float = Field(1.0, gt=0.0)
    sgld_noise: float = Field(0.01, ge=0.0)
    reinit: Fraction = 0.05
    buffer: int = Field(10000, ge=1)
    energy_reg: float = Field(0.1, ge=0.0)


@register("gedi")
class GEDI(Method):
    description = "GEDI (Sansone & Manhaeve 2025): cluster logits as an energy-based model; SGLD generative term + view invariance + uniform cluster prior"
    family = "clustering"
    config = GEDIConfig
    modality = "image"
    recipes = ("light", "simclr", "byol")
    own_metrics = (CLUSTER_ENTROPY,)

    def __init__(self, backbone, clusters: int = 10, temperature: float = 0.5, projector: list[int] = (512, 128), gen_weight: float = 0.1,
                 inv_weight: float = 1.0, prior_weight: float = 10.0, sgld_steps: int = 20, sgld_step: float = 1.0, sgld_noise: float = 0.01,
                 reinit: float = 0.05, buffer: int = 10000, energy_reg: float = 0.1):
        super().__init__(backbone)
        self.head = nn.Sequential(make_projector(backbone.embed_dim, list(projector)), nn.Linear(projector[-1], clusters))
        self.clusters, self.temperature = clusters, temperature
        self.weights = (gen_weight, inv_weight, prior_weight)
        self.sgld = (sgld_steps, sgld_step, sgld_noise)
        self.reinit, self.energy_reg = reinit, energy_reg
        self.register_buffer("replay", torch.rand(buffer, *backbone.in_shape))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).float() / self.temperature

    def masks(self):
        """The sampler's draws for a batch, made at collate time: which replay images start the
        chains ``"sgld_start" (B,)``, which chains restart from noise ``"sgld_fresh" (B,)`` and that
        noise ``"sgld_init" (B, ...)``, and every step's Gaussian noise ``"sgld_eps" (K, B, ...)``."""
        size, shape, steps = len(self.replay), tuple(self.replay.shape[1:]), self.sgld[0]

        def draw(batch_size: int) -> dict:
            return {"sgld_start": torch.randint(size, (batch_size,)), "sgld_fresh": torch.rand(batch_size) < self.reinit,
                    "sgld_init": torch.rand(batch_size, *shape), "sgld_eps": torch.randn(steps, batch_size, *shape)}

        return draw

    @contextmanager
    def running_statistics(self):
        """BatchNorm layers normalise by their running statistics, and leave them unchanged, inside."""
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        for m in norms:
            m.train(False)
        try:
            yield
        finally:
            for m in norms:
                m.train(True)

    @eager
    def sample(self, batch: dict) -> torch.Tensor:
        """JEM's SGLD negatives ``(B, ...)`` (detached), written back into the replay buffer. Eager
        under ``torch.compile``: its gradients with respect to the images are a loop of their own."""
        steps, step, noise = self.sgld
        start = batch["sgld_start"]
        x = torch.where(batch["sgld_fresh"].view(-1, *[1] * (self.replay.dim() - 1)), batch["sgld_init"], self.replay[start])
        for k in range(steps):
            x = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(energy(self.logits(x)).sum(), x)
            x = x - step * grad + noise * batch["sgld_eps"][k]
        x = x.detach()
        with torch.no_grad():
            self.replay[start] = x
        return x

    def forward(self, batch):
        x1, x2 = batch["views"]
        l1, l2 = self.logits(x1), self.logits(x2)  # first: the passes below must see the running statistics these update
        with self.running_statistics():
            with torch.enable_grad():
                negatives = self.sample(batch)
            e_data, e_model = energy(self.logits(x1)), energy(self.logits(negatives))
            gen = e_data.mean() - e_model.mean() + self.energy_reg * (e_data.pow(2).mean() + e_model.pow(2).mean())
        inv = invariance_loss(l1, l2)
        prior = prior_loss(gather_with_grad(torch.cat([l1, l2])))
        gen_w, inv_w, prior_w = self.weights
        return {"loss": gen_w * gen + inv_w * inv + prior_w * prior, "generative": gen.detach(), "invariance": inv.detach(), "prior": prior.detach()}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The cluster logits ``(B, C)``."""
        return self.logits(x)

    @torch.no_grad()
    def label_free_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``label_free/cluster_entropy`` of the clusters ``argmax_y p(y|x)`` of the evaluation samples."""
        assigned = torch.cat([self.logits(chunk).argmax(dim=1) for chunk in x.split(256)])
        return {CLUSTER_ENTROPY: cluster_entropy(assigned, self.clusters)}
