"""Two-tower self-supervision with feature masking, for tables with many (categorical) columns
(Yao, Yi, Hong et al., 2021, "Self-supervised Learning for Large-scale Item Recommendations",
CIKM 2021).

https://arxiv.org/abs/2007.12865 — sec. 3. Each row gets two complementary masks over its
columns: half the columns are hidden in one view, the other half in the other (a hidden column
takes a learned default value, the paper's default embedding). Which half is drawn per row:

- random feature masking (RFM): a uniformly random half;
- correlated feature masking (CFM): a seed column drawn uniformly and the half of the columns with
  the highest mutual information with it (the seed included), so that columns which predict each
  other are hidden together and the task cannot be solved by copying one from another. The mutual
  information of every pair of columns is computed once on the training rows
  (:func:`mutual_information`, numerical columns in quantile bins, a categorical column by its
  category).

Both views go through the shared tower (backbone and head); the loss is the in-batch softmax of
the paper's eq. (1) with cosine similarity, the other rows of the global batch as negatives:

    z1, z2 = normalize(h(f(mask(x)))), normalize(h(f(mask'(x))))       # (B, D) each
    loss = -mean_i log exp(z1_i . z2_i / tau) / sum_j exp(z1_i . z2_j / tau)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import Method, register
from selfsup.gather import gather_with_grad, world
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Fraction, Section, Widths


def two_tower_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, z2_all: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """Eq. (1): ``-mean_i log exp(s(z1_i, z2_i) / tau) / sum_j exp(s(z1_i, z2_j) / tau)``, ``s`` the
    cosine similarity. ``z1, z2``: the local rows' two views ``(n, D)``; ``z2_all``: the second
    views of the global batch ``(N, D)`` (default: the local ones), the local rows from ``offset``."""
    z2_all = z2 if z2_all is None else z2_all
    logits = F.normalize(z1, dim=1) @ F.normalize(z2_all, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(z1.shape[0], device=z1.device) + offset)


def column_codes(x: np.ndarray, groups: tuple[int, ...], bins: int = 10) -> np.ndarray:
    """Each column of the rows ``x`` ``(N, F)`` as integer codes ``(N, G)``: a one-hot block (width
    > 1) by its category, a numerical column by its quantile bin (at most ``bins``)."""
    codes, start = [], 0
    for width in groups:
        block = x[:, start:start + width]
        if width > 1:
            codes.append(block.argmax(axis=1))
        else:
            edges = np.unique(np.quantile(block[:, 0], np.linspace(0, 1, bins + 1)[1:-1]))
            codes.append(np.searchsorted(edges, block[:, 0], side="right"))
        start += width
    return np.stack(codes, axis=1)


def mutual_information(codes: np.ndarray) -> np.ndarray:
    """``MI[i, j] = sum_{a, b} p(a, b) log(p(a, b) / (p(a) p(b)))`` (nats) of every pair of columns
    of the integer codes ``(N, G)``, from their joint frequencies: ``(G, G)``, symmetric, the
    entropy of each column on the diagonal."""
    n, g = codes.shape
    sizes = codes.max(axis=0) + 1
    out = np.zeros((g, g))
    for i in range(g):
        for j in range(i, g):
            p = np.bincount(codes[:, i] * sizes[j] + codes[:, j], minlength=sizes[i] * sizes[j]).reshape(sizes[i], sizes[j]) / n
            outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
            nz = p > 0
            out[i, j] = out[j, i] = float((p[nz] * np.log(p[nz] / outer[nz])).sum())
    return out


class ComplementaryMasks:
    """``masks(batch_size) -> {"hidden": (B, G) bool}``: the columns the first view hides (the
    second hides the others), half of the ``G`` columns per row; a share ``correlated`` of the rows
    by CFM (the seed's top half by mutual information ``mi`` ``(G, G)``), the rest by RFM."""

    def __init__(self, mi: torch.Tensor, correlated: float):
        self.mi, self.correlated = mi, correlated

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        g = self.mi.shape[0]
        half = g // 2
        random_order = torch.rand(batch_size, g, generator=generator).argsort(dim=1)
        seeds = torch.randint(g, (batch_size,), generator=generator)
        # ties broken at random, the seed first (its MI with itself, its entropy, is the largest)
        jitter = torch.rand(batch_size, g, generator=generator) * 1e-9
        by_mi = (self.mi[seeds] + jitter).scatter(1, seeds[:, None], float("inf")).argsort(dim=1, descending=True)
        use_cfm = torch.rand(batch_size, generator=generator) < self.correlated
        order = torch.where(use_cfm[:, None], by_mi, random_order)
        hidden = torch.zeros(batch_size, g, dtype=torch.bool)
        hidden.scatter_(1, order[:, :half], True)
        return {"hidden": hidden}


class TwoTowerConfig(Section):
    """Two-tower SSL (Yao et al., 2021): the softmax temperature (0.1 in the paper), the head, and
    the share of rows masked by correlated (CFM) rather than random (RFM) feature masking."""

    name: Literal["twotower"] = "twotower"
    temperature: float = Field(0.1, gt=0.0)
    projector: Widths = Field(default_factory=lambda: [256, 128])
    correlated: Fraction = 0.5


@register("twotower")
class TwoTower(Method):
    description = "Two-tower SSL (Yao et al. 2021): complementary random/correlated feature masks, in-batch softmax"
    family = "contrastive"
    config = TwoTowerConfig
    modality = "table"
    recipes = ("none",)
    backbones = ("mlp",)
    masked = True
    n_views = 1

    def __init__(self, backbone, temperature: float = 0.1, projector: list[int] = (256, 128), correlated: float = 0.5):
        super().__init__(backbone)
        self.head = make_projector(backbone.embed_dim, list(projector))
        self.default = nn.Parameter(torch.zeros(backbone.in_features))
        """What a hidden input takes (the paper's default embedding of a dropped feature)."""
        self.temperature, self.correlated = temperature, correlated
        self.register_buffer("column", torch.arange(backbone.in_features), persistent=False)
        self.register_buffer("mi", torch.zeros(backbone.in_features, backbone.in_features), persistent=False)

    def prepare(self, train_x: torch.Tensor, groups: tuple[int, ...] | None) -> None:
        """The column of each input and the mutual information of every pair of columns, from (a
        fixed sample of at most 20,000 of) the training rows."""
        groups = tuple(groups or (1,) * train_x.shape[1])
        x = train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:20_000]].numpy()
        self.column = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(groups)).to(self.default.device)
        self.mi = torch.from_numpy(mutual_information(column_codes(x, groups))).float().to(self.default.device)

    def masks(self):
        return ComplementaryMasks(self.mi.cpu(), self.correlated)

    def hide(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, F)`` with the inputs of the ``hidden`` columns ``(B, G)`` set to their default."""
        return torch.where(hidden[:, self.column.to(hidden.device)], self.default.to(x.dtype), x)

    def forward(self, batch):
        (x,) = batch["views"]
        hidden = batch["hidden"]
        z1, z2 = self.project(self.hide(x, hidden)).float(), self.project(self.hide(x, ~hidden)).float()
        rank, _ = world()
        return {"loss": two_tower_loss(z1, z2, self.temperature, gather_with_grad(z2), rank * z1.shape[0])}

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation of ``x`` with one of its random complementary masks applied, for LiDAR."""
        hidden = self.masks()(len(x))["hidden"].to(x.device)
        return self.embed(self.hide(x, hidden))
