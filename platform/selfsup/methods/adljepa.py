"""AD-L-JEPA: a joint-embedding predictive architecture for LiDAR point clouds (Zhu et al., "AD-L-JEPA:
Self-Supervised Spatial World Models with Joint Embedding Predictive Architecture for Autonomous
Driving with LiDAR Data", https://arxiv.org/abs/2501.04969; reference HaoranZhuExplorer/AD-L-JEPA-Release,
``pcdet/models/backbones_3d/ad_l_jepa.py``, ``tools/cfgs/kitti_models/ad_l_jepa_kitti.yaml``).

The bird's-eye-view (BEV) grid of the encoder's output is masked cell by cell; the context encoder
sees only the points of the visible cells, an EMA target encoder only those of the masked cells,
and a convolutional predictor fills the masked cells of the context's map with the target's
embeddings. Empty cells are part of the scene: a learned ``empty`` token stands for them in both
maps, so the predictor also learns where nothing is:

    keep ~ Bernoulli(1 - mask_ratio) per cell                      # (B, g, g), at collate time
    ctx = encoder(points in kept cells)                            # (B, E, g, g)
    ctx[masked cells] = mask_token;  ctx[kept empty cells] = empty_token;   ctx = normalize(ctx)
    pred = normalize(predictor(ctx))                               # 3x3 conv-BN-ReLU layers
    tgt = target(points in masked cells)  (EMA weights, no gradient)
    tgt[masked empty cells] = empty_token;  tgt = normalize(tgt)
    jepa = (1 - w) mean_{masked occupied} (1 - cos(pred, tgt)) + w mean_{masked empty} (1 - cos(pred, tgt))
    reg  = var(pred over masked occupied cells) + var(ctx over kept occupied cells)
    loss = jepa + beta * reg

``var`` is the variance regulariser: per sample, the standard deviation of every channel over the
sample's cells, ``sqrt(var + 1e-4)``, hinged at ``1 / sqrt(E)`` (the spread of unit vectors that use
every channel; the reference's ``1/16`` for its 256 channels), averaged over channels and samples.
``w`` is 0.25 and ``beta`` 1 (the KITTI config's; the code's default is 10); the EMA rate rises
linearly from 0.996 to 1 over the run. As in the reference the ``empty`` token of the target map
takes gradients too (the target's features do not).

Here: the BEV encoder is the points modality's ``bev`` (a pillar grid and dense 2-D convolutions)
where the reference has a sparse 3-D convolutional net (SECOND's) flattened to BEV; the cells'
masks are Bernoulli draws where the reference keeps exactly ``1 - mask_ratio`` of the batch's
occupied cells (a random permutation). ``embed`` is the target encoder's map averaged over the
occupied cells (the JEPAs' convention here); the paper fine-tunes the encoder for 3-D detection,
which selfsup does not do. Left out: the reference's ground-truth sampling augmentation (it
needs boxes) and its one-cycle Adam schedule (the run's ``optim`` applies).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import Method, register
from selfsup.methods.ema import ema_update, linear_momentum
from selfsup.sections import Fraction, Section


def variance_hinge(z: torch.Tensor, cells: torch.Tensor, floor: float) -> torch.Tensor:
    """Mean over samples of ``mean_c relu(floor - sqrt(var_c + 1e-4))``, the variance ``var_c`` of
    channel ``c`` of ``z`` ``(B, E, g, g)`` over each sample's ``cells`` ``(B, g, g)`` (unbiased);
    samples with fewer than two such cells are left out."""
    w = cells.flatten(1).to(z.dtype)  # (B, G)
    z = z.flatten(2)  # (B, E, G)
    n = w.sum(1)
    mean = (z * w[:, None]).sum(-1) / n.clamp(min=1)[:, None]
    var = (((z - mean[..., None]) ** 2) * w[:, None]).sum(-1) / (n - 1).clamp(min=1)[:, None]
    hinge = F.relu(floor - torch.sqrt(var + 1e-4)).mean(dim=1)
    counted = (n >= 2).to(z.dtype)
    return (hinge * counted).sum() / counted.sum().clamp(min=1)


def adljepa_loss(prediction: torch.Tensor, target: torch.Tensor, context: torch.Tensor, keep: torch.Tensor, occupied: torch.Tensor,
                 empty_weight: float = 0.25, reg_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AD-L-JEPA's loss of unit BEV maps ``prediction``, ``target`` and ``context`` ``(B, E, g, g)``,
    the kept cells ``keep`` and the ``occupied`` ones ``(B, g, g)`` (see the module docstring):
    ``(loss, jepa, reg)``."""
    distance = 1 - F.cosine_similarity(prediction.float(), target.float(), dim=1)  # (B, g, g)
    masked_occupied, masked_empty = ~keep & occupied, ~keep & ~occupied

    def mean_over(cells: torch.Tensor) -> torch.Tensor:
        return (distance * cells).sum() / cells.sum().clamp(min=1)

    jepa = (1 - empty_weight) * mean_over(masked_occupied) + empty_weight * mean_over(masked_empty)
    floor = 1 / math.sqrt(prediction.shape[1])
    reg = variance_hinge(prediction.float(), masked_occupied, floor) + variance_hinge(context.float(), keep & occupied, floor)
    return jepa + reg_weight * reg, jepa, reg


class ADLJEPAConfig(Section):
    """AD-L-JEPA (Zhu et al., 2025): the share of BEV cells masked, the predictor's conv layers, the
    empty cells' share of the prediction loss, the variance regulariser's weight and the target EMA."""

    name: Literal["adljepa"] = "adljepa"
    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0)
    predictor_depth: int = Field(3, ge=1)
    empty_weight: Fraction = 0.25
    reg_weight: float = Field(1.0, ge=0.0)
    base_momentum: Fraction = 0.996


@register("adljepa")
class ADLJEPA(Method):
    description = "AD-L-JEPA (Zhu et al. 2025): predict masked bird's-eye-view cells' embeddings of an EMA encoder, empty cells included"
    family = "jepa"
    config = ADLJEPAConfig
    modality = "points"
    recipes = ("points", "none")
    backbones = ("bev",)
    masked = True
    n_views = 1
    encoder = "target"

    def __init__(self, backbone, mask_ratio: float = 0.5, predictor_depth: int = 3, empty_weight: float = 0.25, reg_weight: float = 1.0,
                 base_momentum: float = 0.996):
        super().__init__(backbone)
        e = backbone.embed_dim
        self.target = copy.deepcopy(backbone).requires_grad_(False)
        self.predictor = nn.Sequential(*[nn.Sequential(nn.Conv2d(e, e, 3, padding=1), nn.BatchNorm2d(e), nn.ReLU())
                                         for _ in range(predictor_depth)])
        self.mask_token = nn.Parameter(torch.randn(1, e, 1, 1))
        self.empty_token = nn.Parameter(torch.randn(1, e, 1, 1))
        self.mask_ratio, self.empty_weight, self.reg_weight, self.base_momentum = mask_ratio, empty_weight, reg_weight, base_momentum

    def masks(self):
        """Per cloud, the BEV cells the context sees: ``bev_keep`` ``(B, g, g)``, each kept with
        probability ``1 - mask_ratio``."""
        g, ratio = self.backbone.grid, self.mask_ratio

        def draw(batch_size: int) -> dict:
            return {"bev_keep": torch.rand(batch_size, g, g) >= ratio}

        return draw

    @staticmethod
    def visible(cell: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Whether each point, by its cell ``(B, N)`` (``g * g``: outside the grid), lies in a kept cell
        of ``keep`` ``(B, g, g)``."""
        kept = torch.cat([keep.flatten(1), keep.new_zeros(keep.shape[0], 1)], dim=1)
        return kept.gather(1, cell)

    def forward(self, batch):
        (x,) = batch["views"]
        keep = batch["bev_keep"]
        cell = self.backbone.cell_of(x)
        visible = self.visible(cell, keep)
        hidden = ~visible & (cell < self.backbone.grid**2)
        occupied = self.backbone.occupancy(cell)
        context = torch.where(keep[:, None], self.backbone.cells(x, keep=visible), self.mask_token.to(x.dtype))
        context = F.normalize(torch.where((keep & ~occupied)[:, None], self.empty_token.to(x.dtype), context), dim=1)
        prediction = F.normalize(self.predictor(context), dim=1)
        with torch.no_grad():
            target = self.target.cells(x, keep=hidden)
        target = F.normalize(torch.where((~keep & ~occupied)[:, None], self.empty_token.to(x.dtype), target), dim=1)
        loss, jepa, reg = adljepa_loss(prediction, target, context, keep, occupied, self.empty_weight, self.reg_weight)
        return {"loss": loss, "jepa": jepa, "variance": reg}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the context encoder's map averaged over the occupied cells ``(B, E)``."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the target encoder on the points of a random draw of kept cells,
        averaged over the kept occupied cells."""
        keep = self.masks()(len(x))["bev_keep"].to(x.device)
        cell = self.target.cell_of(x)
        visible = self.visible(cell, keep)
        seen = torch.where(visible, cell, self.target.grid**2)
        return self.target.pool(self.target.cells(x, keep=visible), self.target.occupancy(seen))

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.backbone, linear_momentum(self.base_momentum, progress))
