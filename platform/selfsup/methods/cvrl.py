"""CVRL: Spatiotemporal Contrastive Video Representation Learning (Qian et al., CVPR 2021).

https://arxiv.org/abs/2008.03800 — sec. 3. Two clips of one video are its positive pair: their
start frames drawn with CVRL's temporal interval sampling (nearby clips more often than distant
ones) and each clip augmented alike on every frame (the ``video`` recipe,
``selfsup.data.clip_views``); a 3-D encoder and a 3-layer MLP projection head map each clip to
``z``, and the InfoNCE loss over the ``2N`` clips of the global batch pulls the pair together:

    z_i, z_i' = g(f(clip_1(v_i))), g(f(clip_2(v_i)))     # (N, D) each
    L = 1/2N sum_i [l(z_i, z_i') + l(z_i', z_i)]
    l(u, v) = -log exp(sim(u, v) / tau) / sum_{k != u} exp(sim(u, z_k) / tau)   (sim: cosine)

which is SimCLR's NT-Xent (``selfsup.methods.simclr.nt_xent_loss``, negatives gathered from every
worker) at the paper's temperature 0.1. The projection head follows the reference
(tensorflow/models ``official/projects/video_ssl/modeling/video_ssl_model.py``: 3 layers,
hidden width 2048, batch norm; output 128). The representation (``embed``) is the encoder's
pooled features of the whole clip, as CVRL's linear evaluation uses.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from selfsup.gather import gather_with_grad, world
from selfsup.methods.base import Method, register
from selfsup.methods.simclr import nt_xent_loss
from selfsup.models.heads import projector as make_projector
from selfsup.sections import Section, Widths


def cvrl_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, z1_all=None, z2_all=None, offset: int = 0) -> torch.Tensor:
    """InfoNCE over the clips of a batch: ``z1, z2`` ``(n, D)`` are the projections of the two
    clips of each video (``z1_all, z2_all`` the global batch ``(N, D)``, the local rows at
    ``offset``); see the module docstring."""
    return nt_xent_loss(z1, z2, temperature, z1_all, z2_all, offset)


class CVRLConfig(Section):
    """CVRL (Qian et al., 2021): InfoNCE temperature and projection head widths."""

    name: Literal["cvrl"] = "cvrl"
    temperature: float = Field(0.1, gt=0.0)
    projector: Widths = Field(default_factory=lambda: [2048, 2048, 128])


@register("cvrl")
class CVRL(Method):
    description = "CVRL (Qian et al. 2021): InfoNCE between two temporally distant, consistently augmented clips of a video"
    config = CVRLConfig
    modality = "video"
    recipes = ("video", "clip")

    def __init__(self, backbone, projector: list[int] = (2048, 2048, 128), temperature: float = 0.1):
        super().__init__(backbone)
        self.head = make_projector(backbone.embed_dim, list(projector))
        self.temperature = temperature

    def forward(self, batch):
        x1, x2 = batch["views"]
        z1, z2 = self.project(x1).float(), self.project(x2).float()
        rank, _ = world()
        loss = cvrl_loss(z1, z2, self.temperature, gather_with_grad(z1), gather_with_grad(z2), rank * z1.shape[0])
        return {"loss": loss}
