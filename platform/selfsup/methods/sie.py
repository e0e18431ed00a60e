"""SIE: split invariant-equivariant representations (Garrido, Najman & LeCun, ICML 2023).

https://arxiv.org/abs/2302.10283 — sec. 3 and the reference code (facebookresearch/SIE,
``src/models.py``, class ``SIE``; ``src/hypernetwork.py``, ``ParametrizedNet``). The representation
``r = f(x)`` ``(B, D)`` is split into an invariant part (the first ``D - equi`` values) and an
equivariant part (the last ``equi``), each with its own projector (the widths of ``projector``
scaled by the part's share of ``D``, as the reference's). Two views ``x, y`` of an image are made by
transformations with known parameters ``a_x, a_y`` (``transformed_view``: a resized crop with
brightness and contrast jitter, as seq-JEPA's views). With ``u, e`` the two parts' projections:

    inv   = mse(u_x, u_y)                                        # the invariant part: VICReg's invariance
    W     = hypernet([a_x, a_y])                                 # (equi_emb, equi_emb), one per sample
    e^_y  = W e_x                                                # the predictor, weights from the parameters
    equi  = mse(e^_y, e_y)
    z     = [u, e] (both views; global batch): VICReg's variance and covariance on z, variance on e^_y
    loss  = sim (inv + equi_factor equi) + std (v(z_x) + v(z_y)) / 2 + std v(e^_y) / 2 + cov (c(z_x) + c(z_y))

The variance and covariance run over the concatenated parts so that information the two parts would
share is decorrelated away (the reference's comment on its "common" blocks). The hypernetwork is
linear and the predictor one bias-free linear map (the reference's ``--hypernetwork linear`` with an
empty ``--predictor``). The transformation is given as both views' parameters side by side (the
reference's 3DIEBench gives the relative rotation between the two renders; a crop's map onto another
depends on both crops). ``label_free/equivariance_r2``: how much of a view's parameters a ridge
regression reads from the equivariant part (seq-JEPA's probe), the label-free check that the split
works; the metrics and probes see the whole representation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from selfsup.data.batch_views import ACTION_DIM, transformed_view
from selfsup.gather import gather_with_grad
from selfsup.methods.base import Method, register
from selfsup.methods.seqjepa import equivariance_r2
from selfsup.methods.vicreg import covariance_term, variance_term
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Fraction, Range, Section, Widths, check_shares


def sie_loss(u_x, u_y, e_x, e_y, e_pred, sim_coeff: float = 10.0, std_coeff: float = 10.0, cov_coeff: float = 1.0,
             equi_factor: float = 0.45) -> dict[str, torch.Tensor]:
    """SIE's loss of the invariant projections ``u_x, u_y`` ``(N, Di)``, the equivariant ones
    ``e_x, e_y`` ``(N, De)`` and the prediction ``e_pred`` of ``e_y`` ``(N, De)`` (the global batch)."""
    inv, equi = F.mse_loss(u_x, u_y), F.mse_loss(e_pred, e_y)
    z_x, z_y = torch.cat([u_x, e_x], dim=1), torch.cat([u_y, e_y], dim=1)
    std = variance_term(z_x) / 2 + variance_term(z_y) / 2
    pred_std = variance_term(e_pred) / 2
    cov = covariance_term(z_x) + covariance_term(z_y)
    loss = sim_coeff * (inv + equi_factor * equi) + std_coeff * (std + pred_std) + cov_coeff * cov
    return {"loss": loss, "invariance": inv.detach(), "equivariance": equi.detach(), "variance": std.detach(), "covariance": cov.detach()}


class SIEConfig(Section):
    """SIE (Garrido et al., 2023): the equivariant part's width ``equi`` (of ``model.embed_dim``),
    the projector widths (split between the parts), the loss weights (the reference's 10, 10, 1 and
    equi_factor 0.45) and the views' transformations (crop area range, brightness/contrast jitter)."""

    name: Literal["sie"] = "sie"
    equi: int = Field(256, ge=1)
    projector: Widths = Field(default_factory=lambda: [2048, 2048, 2048])
    sim_coeff: float = Field(10.0, ge=0.0)
    std_coeff: float = Field(10.0, ge=0.0)
    cov_coeff: float = Field(1.0, ge=0.0)
    equi_factor: float = Field(0.45, ge=0.0)
    crop_scale: Range = (0.25, 1.0)
    jitter: Fraction = 0.4

    @model_validator(mode="after")
    def _check(self) -> "SIEConfig":
        check_shares(self, "crop_scale")
        return self


def split_widths(widths: list[int], share: float) -> list[int]:
    """A part's projector: each width scaled by its share of the representation (at least 1)."""
    return [max(1, round(w * share)) for w in widths]


class HyperPredictor(nn.Module):
    """``e^ = W(a) e`` with ``W(a)`` ``(De, De)`` a linear function of the parameters ``a`` ``(B, P)``
    (the reference's ``ParametrizedNet`` with a linear ``HyperNet``, no bias)."""

    def __init__(self, dim: int, params: int):
        super().__init__()
        self.dim = dim
        self.hypernet = nn.Linear(params, dim * dim, bias=False)

    def forward(self, e: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        w = self.hypernet(a.to(e.dtype)).view(-1, self.dim, self.dim)
        return torch.bmm(w, e.unsqueeze(2)).squeeze(2)


@register("sie")
class SIE(Method):
    description = "SIE (Garrido et al. 2023): VICReg on an invariant and an equivariant part, a hypernetwork maps one view's equivariant part onto the other's"
    family = "redundancy_reduction"
    config = SIEConfig
    modality = "image"
    recipes = ("none",)
    masked = True
    n_views = 1
    own_metrics = ("label_free/equivariance_r2",)

    def __init__(self, backbone, equi: int = 256, projector: list[int] = (2048, 2048, 2048), sim_coeff: float = 10.0, std_coeff: float = 10.0,
                 cov_coeff: float = 1.0, equi_factor: float = 0.45, crop_scale: tuple[float, float] = (0.25, 1.0), jitter: float = 0.4):
        super().__init__(backbone)
        d = backbone.embed_dim
        if not 0 < equi < d:
            raise ValueError(f"SIE's equivariant part method.equi={equi} must be between 1 and model.embed_dim - 1 ({d - 1})")
        self.inv = d - equi
        inv_widths, equi_widths = split_widths(list(projector), self.inv / d), split_widths(list(projector), equi / d)
        self.head = make_projector(self.inv, inv_widths)
        self.equi_head = make_projector(equi, equi_widths)
        self.predictor = HyperPredictor(equi_widths[-1], 2 * ACTION_DIM)
        self.coeffs = dict(sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff, equi_factor=equi_factor)
        self.crop_scale, self.jitter = tuple(crop_scale), jitter

    def masks(self):
        """The two views' random draws, made at collate time (as seq-JEPA's): ``{"draws": (B, 2, 7)}``."""
        return lambda batch_size: {"draws": torch.rand(batch_size, 2, 7)}

    def _parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The invariant and equivariant projections of ``x``."""
        r = self.backbone(x)
        return self.head(r[:, : self.inv]).float(), self.equi_head(r[:, self.inv:]).float()

    def forward(self, batch):
        (x,) = batch["views"]
        draws = batch["draws"]
        (vx, ax), (vy, ay) = (transformed_view(x, x.shape[-1], self.crop_scale, jitter=self.jitter, u=draws[:, i]) for i in range(2))
        u_x, e_x = self._parts(vx)
        u_y, e_y = self._parts(vy)
        e_pred = self.predictor(e_x, torch.cat([ax, ay], dim=1)).float()
        parts = [gather_with_grad(t) for t in (u_x, u_y, e_x, e_y, e_pred)]
        return sie_loss(*parts, **self.coeffs)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Both parts' projections side by side ``(B, Pi + Pe)``."""
        return torch.cat(self._parts(x), dim=1)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the representation of a random transformed view of ``x``."""
        return self.backbone(transformed_view(x, x.shape[-1], self.crop_scale, jitter=self.jitter)[0])

    @torch.no_grad()
    def label_free_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``label_free/equivariance_r2``: R^2 of a random view's parameters read from the
        equivariant part of its representation (ridge regression fitted on half the samples,
        scored on the other half; fixed seed)."""
        return {"label_free/equivariance_r2": equivariance_r2(lambda v: self.backbone(v)[:, self.inv:], x, self.crop_scale, self.jitter)}
