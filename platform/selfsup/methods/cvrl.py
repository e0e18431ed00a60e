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
worker; the step is SimCLR's) at the paper's temperature 0.1. The projection head follows the reference
(tensorflow/models ``official/projects/video_ssl/modeling/video_ssl_model.py``: 3 layers,
hidden width 2048, batch norm; output 128). The representation (``embed``) is the encoder's
pooled features of the whole clip, as CVRL's linear evaluation uses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from selfsup.methods.base import register
from selfsup.methods.simclr import SimCLR
from selfsup.sections import Section, Widths


class CVRLConfig(Section):
    """CVRL (Qian et al., 2021): InfoNCE temperature and projection head widths."""

    name: Literal["cvrl"] = "cvrl"
    temperature: float = Field(0.1, gt=0.0)
    projector: Widths = Field(default_factory=lambda: [2048, 2048, 128])


@register("cvrl")
class CVRL(SimCLR):
    """SimCLR's step (``SimCLR.forward``: the NT-Xent of the two views' projections, negatives from
    every worker) on two clips of each video, with CVRL's head, temperature and views."""

    description = "CVRL (Qian et al. 2021): InfoNCE between two temporally distant, consistently augmented clips of a video"
    config = CVRLConfig
    modality = "video"
    recipes = ("video", "clip")

    def __init__(self, backbone, projector: list[int] = (2048, 2048, 128), temperature: float = 0.1):
        super().__init__(backbone, projector, temperature)
