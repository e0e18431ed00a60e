"""Joint image-volume intra-inter contrastive clustering (Nguyen et al., "Joint Self-Supervised
Image-Volume Representation Learning with Intra-Inter Contrastive Clustering", AAAI 2023,
https://arxiv.org/abs/2212.01893; reference duyhominhnguyen/Self-supervised-Image-Volume-Intra-Inter-Contrastive).

A volume's slices are images: a 2-D encoder embeds each slice, a transformer across the slices
mixes them, and their mean is the volume's embedding (the reference's ``ResNet_Trans``,
``utils/models.py``; here the volume modality's ``slice_cnn`` backbone, whose ``slices`` and ``mix``
are the two halves). Two views of a volume (the ``slices`` recipe: in-plane crops, flips and
intensity, the depth whole, so slice ``k`` of both views is the same slice) are trained with three
terms:

    s_a, s_b = slices(view_a), slices(view_b)                          # (B, D, E) each
    intra:  SwAV between slice k of a and slice k of b:  swapped(C2 p(s_a), C2 p(s_b))   # 2-D clustering
    inter:  v = normalize(mean_D mix(s));  SwAV between the volumes: swapped(C3 v_a, C3 v_b)
    masked: r of the D slices replaced by a learned token, predicted back:  mse(dec(mix(s~))[m], s[m])
    loss = inter + w_2d * intra + w_mask * masked

``swapped`` is SwAV's swapped prediction (Caron et al. 2020, https://arxiv.org/abs/2006.09882,
eq. 1-3; reference ``main_swav.py``): codes ``q = sinkhorn(scores)`` (3 Sinkhorn-Knopp iterations
at ``epsilon`` 0.05, summed over every worker's batch) of each view predict the other's softmax at
temperature 0.1; the prototypes ``C`` are unit rows, renormalised after every step. The 3-D term is
``ssl_swav_3D.py``'s (no projector before the prototypes, as there); the 2-D term is the 2-D SwAV
stage's (a projector before the prototypes, as VISSL's SwAV); the masked term is
``mask_swav_3D.py``'s ``EncoderDecoderModel``: a learned mask token in place of the masked slices'
embeddings, the slice transformer, a linear decoder, mean squared error (here on the masked slices
only, as BERT's; the reference averages over all of them and divides by their count).

The reference trains in stages (2-D SwAV on slices; the mask prediction with the 2-D encoder
frozen; then the 3-D SwAV of the whole); here the three terms train together, the masked term on
detached slice features (as the frozen 2-D encoder of its stage: it trains the slice transformer,
token and decoder, never the slices' features to be predictable). Left out: the reference's
deformable 1-D attention across slices (plain self-attention here), its multi-scale ResNet-50 slice
features (the slice CNN's pooled output here), SwAV's queue and the first iterations' frozen
prototypes, and LARC.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import Method, register
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Section, Widths


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, count: torch.Tensor | None = None) -> torch.Tensor:
    """SwAV's codes ``(B, K)`` of prototype scores ``(B, K)``: ``Q = exp(scores / epsilon)``, then
    alternately every prototype's row scaled to total ``1/K`` and every sample's column to ``1/B``
    (sums over every worker's samples), finally each sample's codes summing to 1
    (``distributed_sinkhorn`` of the reference; DINOv2/v3's teacher centring with ``epsilon`` the
    teacher temperature). ``count``: the samples of every worker together, when the workers hold
    different numbers (DINOv3's masked patches); otherwise this worker's times the world size."""
    q = torch.exp(scores.float() / epsilon).t()  # (K, B)
    distributed = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    k, b = q.shape[0], q.shape[1] * world if count is None else count
    total = q.sum()
    if distributed:
        dist.all_reduce(total)
    q = q / total
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(rows)
        q = q / rows / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def swapped_prediction_loss(scores_a: torch.Tensor, scores_b: torch.Tensor, temperature: float = 0.1, epsilon: float = 0.05,
                            iterations: int = 3) -> torch.Tensor:
    """SwAV's loss of two views' prototype scores ``(N, K)`` (cosines): each view's codes predict the
    other's ``softmax(scores / temperature)``, ``-1/2 [mean sum q_a log p_b + mean sum q_b log p_a]``."""
    q_a, q_b = sinkhorn(scores_a, epsilon, iterations), sinkhorn(scores_b, epsilon, iterations)
    log_p_a, log_p_b = F.log_softmax(scores_a.float() / temperature, dim=1), F.log_softmax(scores_b.float() / temperature, dim=1)
    return -0.5 * ((q_a * log_p_b).sum(dim=1).mean() + (q_b * log_p_a).sum(dim=1).mean())


def masked_slice_loss(predicted: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``(B, D, E)`` vs ``(B, D, E)`` over the masked slices ``masked`` ``(B, M)`` (indices)."""
    index = masked[:, :, None].expand(-1, -1, target.shape[2])
    return F.mse_loss(predicted.gather(1, index).float(), target.gather(1, index).float())


class IICCConfig(Section):
    """Joint image-volume intra-inter contrastive clustering (Nguyen et al., 2023): the prototypes
    of the 3-D and 2-D clustering (the reference's 3,000 for both; fewer suit small data), SwAV's
    temperature and Sinkhorn settings, the 2-D projector, the share of slices masked and the
    terms' weights."""

    name: Literal["iicc"] = "iicc"
    prototypes: int = Field(300, ge=2)
    slice_prototypes: int = Field(300, ge=2)
    temperature: float = Field(0.1, gt=0.0)
    epsilon: float = Field(0.05, gt=0.0)
    sinkhorn_iterations: int = Field(3, ge=1)
    slice_projector: Widths = Field(default_factory=lambda: [512, 128])
    mask_ratio: float = Field(0.3, gt=0.0, lt=1.0)
    slice_weight: float = Field(1.0, ge=0.0)
    mask_weight: float = Field(1.0, ge=0.0)


@register("iicc")
class IICC(Method):
    description = "Joint image-volume intra-inter contrastive clustering (Nguyen et al. 2023): SwAV on slices and volumes, masked slices"
    family = "clustering"
    config = IICCConfig
    modality = "volume"
    recipes = ("slices", "none")
    backbones = ("slice_cnn",)

    def __init__(self, backbone, prototypes: int = 300, slice_prototypes: int = 300, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, slice_projector: list[int] = (512, 128), mask_ratio: float = 0.3, slice_weight: float = 1.0,
                 mask_weight: float = 1.0):
        super().__init__(backbone)
        e = backbone.embed_dim
        self.head = make_projector(e, list(slice_projector))
        self.slice_prototypes = nn.Linear(slice_projector[-1], slice_prototypes, bias=False)
        self.prototypes = nn.Linear(e, prototypes, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(e))
        self.decoder = nn.Linear(e, e)
        nn.init.normal_(self.mask_token, std=0.02)
        self.masked_slices = max(1, round(mask_ratio * backbone.depth))
        self.swav = dict(temperature=temperature, epsilon=epsilon, iterations=sinkhorn_iterations)
        self.slice_weight, self.mask_weight = slice_weight, mask_weight
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Unit rows for both prototype sets (SwAV renormalises them before every step)."""
        for layer in (self.prototypes, self.slice_prototypes):
            layer.weight.copy_(F.normalize(layer.weight, dim=1))

    def masks(self):
        """Per volume, the ``round(mask_ratio * D)`` slices whose embeddings are masked (indices ``(B, M)``)."""
        depth, m = self.backbone.depth, self.masked_slices

        def draw(batch_size: int) -> dict:
            return {"masked_slices": torch.rand(batch_size, depth).argsort(dim=1)[:, :m]}

        return draw

    def forward(self, batch):
        a, b = batch["views"]
        n = a.shape[0]
        s = self.backbone.slices(torch.cat([a, b]))  # (2B, D, E)
        p = F.normalize(self.head(s.flatten(0, 1)), dim=1)
        slice_scores = self.slice_prototypes(p).view(2, n * s.shape[1], -1)
        intra = swapped_prediction_loss(slice_scores[0], slice_scores[1], **self.swav)
        v = F.normalize(self.backbone.mix(s).mean(dim=1), dim=1)
        scores = self.prototypes(v)
        inter = swapped_prediction_loss(scores[:n], scores[n:], **self.swav)
        target = s.detach()
        masked = batch["masked_slices"].repeat(2, 1)
        token = self.mask_token.to(target.dtype).expand(masked.shape[0], masked.shape[1], -1)
        filled = target.scatter(1, masked[:, :, None].expand(-1, -1, target.shape[2]), token)
        predicted = self.decoder(self.backbone.mix(filled))
        masked_loss = masked_slice_loss(predicted, target, masked)
        loss = inter + self.slice_weight * intra + self.mask_weight * masked_loss
        return {"loss": loss, "inter": inter, "intra": intra, "masked": masked_loss}

    def after_step(self, progress: float) -> None:
        self.normalize_prototypes()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The unit volume embedding ``(B, E)`` the 3-D prototypes score."""
        return F.normalize(self.backbone(x), dim=1)
