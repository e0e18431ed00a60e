"""VCOP: Self-supervised Spatiotemporal Learning via Video Clip Order Prediction (Xu et al., CVPR 2019).

https://openaccess.thecvf.com/content_CVPR_2019/html/Xu_Self-Supervised_Spatiotemporal_Learning_via_Video_Clip_Order_Prediction_CVPR_2019_paper.html
— sec. 3. From each video, ``n`` clips of ``clip_frames`` frames, ``gap`` frames apart, are cut
(at a random start), shuffled by one of the ``n!`` orders (start and order drawn at collate time,
``masks()``, so a compiled step draws what an eager one does), encoded by the shared 3-D encoder,
and a small network names the order:

    f_k = encoder(clip_{order(k)})                       # (B, D) for k = 1..n
    h = dropout(concat_{i<j} ReLU(W7 [f_i ; f_j]))       # pairwise relations, (B, 512 n(n-1)/2)
    loss = cross_entropy(W8 h, order)                    # n! classes

as the reference ``models/vcopn.py`` (xudejing/video-clip-order-prediction: ``fc7`` to 512 per
pair, ReLU, dropout 0.5, ``fc8`` to ``n!``). The paper draws the clips of a tuple with the same
spatial augmentation; here each video is augmented once, alike on every frame (the ``clip``
recipe), before it is cut. The representation (``embed``) is the encoder's pooled features of the
whole clip. The share of orders named right is logged as ``order_acc``.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import Method, register
from selfsup.sections import Section


def vcop_loss(logits: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``(B, n!)`` logits against the index ``(B,)`` of the order the clips were shuffled by."""
    return F.cross_entropy(logits, order)


def cut_clips(x: torch.Tensor, start: torch.Tensor, n: int, frames: int, gap: int) -> torch.Tensor:
    """``n`` runs of ``frames`` frames, ``gap`` apart, from ``start`` ``(B,)``: ``(B, C, T, H, W) -> (B, n, C, frames, H, W)``."""
    offsets = torch.arange(n, device=x.device)[:, None] * (frames + gap) + torch.arange(frames, device=x.device)[None]
    idx = start[:, None, None] + offsets[None]  # (B, n, frames)
    picked = x[torch.arange(x.shape[0], device=x.device)[:, None, None], :, idx]  # (B, n, frames, C, H, W)
    return picked.permute(0, 1, 3, 2, 4, 5)


class VCOPConfig(Section):
    """VCOP (Xu et al., 2019): clips per tuple, their length and the gap between them (frames; the
    paper's 3 x 16 frames, 8 apart, need 64-frame samples: these defaults fit 16), the order head's dropout."""

    name: Literal["vcop"] = "vcop"
    tuple_len: int = Field(3, ge=2, le=5)
    clip_frames: int = Field(4, ge=1)
    gap: int = Field(2, ge=0)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


@register("vcop")
class VCOP(Method):
    description = "VCOP (Xu et al. 2019): predict the order of shuffled clips of a video from pairwise clip features"
    family = "pretext"
    config = VCOPConfig
    modality = "video"
    recipes = ("clip", "none")
    n_views = 1

    def __init__(self, backbone, tuple_len: int = 3, clip_frames: int = 4, gap: int = 2, dropout: float = 0.5):
        super().__init__(backbone)
        self.tuple_len, self.clip_frames, self.gap = tuple_len, clip_frames, gap
        self.register_buffer("orders", torch.tensor(list(itertools.permutations(range(tuple_len)))), persistent=False)
        pairs = tuple_len * (tuple_len - 1) // 2
        self.fc7 = nn.Linear(2 * backbone.embed_dim, 512)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(512 * pairs, math.factorial(tuple_len)))

    def masks(self):
        """Per sample, where its tuple starts (a uniform draw ``u`` in [0, 1): the start frame is
        ``floor(u * (T - span + 1))``) and the index of the order its clips are shuffled by."""
        n_orders = len(self.orders)

        def draw(batch_size: int) -> dict:
            return {"start": torch.rand(batch_size), "order": torch.randint(0, n_orders, (batch_size,))}

        return draw

    def forward(self, batch):
        (x,) = batch["views"]
        b, n = x.shape[0], self.tuple_len
        span = n * self.clip_frames + (n - 1) * self.gap
        if span > x.shape[2]:
            raise ValueError(f"vcop: {n} clips of {self.clip_frames} frames {self.gap} apart need {span} frames, the clips have "
                             f"{x.shape[2]} (method.tuple_len, method.clip_frames, method.gap)")
        start = (batch["start"] * (x.shape[2] - span + 1)).long().clamp(max=x.shape[2] - span)
        order = batch["order"]
        clips = cut_clips(x, start, n, self.clip_frames, self.gap)
        shuffled = clips[torch.arange(b, device=x.device)[:, None], self.orders[order]]
        f = self.backbone(shuffled.flatten(0, 1)).view(b, n, -1)
        pairs = [F.relu(self.fc7(torch.cat([f[:, i], f[:, j]], dim=1))) for i in range(n) for j in range(i + 1, n)]
        logits = self.head(torch.cat(pairs, dim=1)).float()
        return {"loss": vcop_loss(logits, order), "order_acc": (logits.argmax(dim=1) == order).float().mean()}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the encoder's pooled features ``(B, D)``."""
        return self.backbone(x)
