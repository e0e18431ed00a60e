"""TimeDRL: disentangled representations of multivariate time series without augmentation
(Chang, Chen, Lin et al., 2024, "TimeDRL: Disentangled Representation Learning for Multivariate
Time-Series", ICDE 2024).

https://arxiv.org/abs/2312.04142 — sec. IV and the reference code (blacksnail789521/TimeDRL,
``models/TimeDRL.py``, ``exp/exp_classification.py``, ``layers/Embed.py``). A signal ``(C, T)``
is instance-normalised (per sample and channel over time, RevIN without affine), its end padded
with ``stride`` repeats of its last sample, cut into time patches of all channels (``patch``
samples every ``stride``: ``model.patch_size`` / ``model.patch_stride``, e.g. the reference's 24 / 12)
and encoded with a [CLS] token (``ViT1d``, register 0) twice; dropout in the encoder is the only
thing that differs between the two passes (no augmentation, which the paper argues biases time series):

    xn = instance_norm(x)
    z1, z2 = encoder(xn), encoder(xn)                    # (B, 1 + N, D), two dropout masks
    predictive  = (mse(head(z1[:, 1:]), patches(x)) + mse(head(z2[:, 1:]), patches(x))) / 2
    i1, i2 = z1[:, 0], z2[:, 0]                          # the [CLS] embeddings (B, D)
    contrastive = -(cos(sg(i1), g(i2)) + cos(sg(i2), g(i1))) / 2    # SimSiam-style, no negatives
    loss = predictive + contrastive_weight * contrastive

The timestamp-level embeddings (patch tokens) carry the predictive task, the instance-level one
([CLS]) the contrastive task; ``embed`` is the [CLS] embedding (``pooling: mean``: the mean patch
token, the reference's ``get_i: gap``). The reconstruction target is, as in the reference's
training loop, the patches of the batch as the data gives it (``target: input``), not of the
normalised signal the encoder sees: the reference's loaders standardise over the dataset, so its
target keeps each sample's level and scale. ``target: normalised`` reconstructs the patches of
the instance-normalised signal instead, for data that are not standardised (raw millivolts with
baseline wander, where a sample's offset is noise the encoder cannot see and should not predict).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import Method, register
from selfsup.models.transformers import ViT1d
from selfsup.sections import Fraction, Section


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(x - mean_t) / sqrt(var_t + eps)`` per sample and channel of ``(B, C, T)`` (RevIN without
    its affine map, Kim et al. 2022)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def timedrl_loss(
    target: torch.Tensor,
    reconstructions: tuple[torch.Tensor, torch.Tensor],
    instances: tuple[torch.Tensor, torch.Tensor],
    predictions: tuple[torch.Tensor, torch.Tensor],
    contrastive_weight: float,
) -> dict[str, torch.Tensor]:
    """TimeDRL's two tasks (sec. IV-C, IV-D). ``target`` ``(B, N, P)``: the patched input;
    ``reconstructions``: the predictive head's output ``(B, N, P)`` for each pass; ``instances``:
    the [CLS] embeddings ``(B, D)`` of each pass; ``predictions``: the contrastive predictor's
    output ``(B, D)`` for each. The predictor of one pass matches the other pass's embedding under
    stop-gradient."""
    r1, r2 = reconstructions
    i1, i2 = instances
    p1, p2 = predictions
    predictive = (F.mse_loss(r1, target) + F.mse_loss(r2, target)) / 2
    contrastive = -(F.cosine_similarity(i1.detach(), p2, dim=-1).mean() + F.cosine_similarity(i2.detach(), p1, dim=-1).mean()) / 2
    return {"loss": predictive + contrastive_weight * contrastive, "predictive": predictive, "contrastive": contrastive}


class TimeDRLConfig(Section):
    """TimeDRL (Chang et al., 2024): the weight of the contrastive task, the dropout that makes the
    two passes differ, which embedding is the representation and what the patch tokens reconstruct
    (defaults: the reference's Epilepsy setting, ``exp_settings_and_results/classification``; [CLS]
    as in the paper; the input's patches as in its training loop)."""

    name: Literal["timedrl"] = "timedrl"
    contrastive_weight: float = Field(0.5, ge=0.0)
    dropout: Fraction = 0.1
    pooling: Literal["cls", "mean"] = "cls"
    target: Literal["input", "normalised"] = "input"


@register("timedrl")
class TimeDRL(Method):
    description = "TimeDRL (Chang et al. 2024): patch reconstruction + [CLS] contrast between two dropout passes, no augmentation"
    family = "contrastive"
    config = TimeDRLConfig
    modality = "signal"
    recipes = ("none",)
    backbones = ("vit1d",)
    n_views = 1

    def __init__(self, backbone: ViT1d, contrastive_weight: float = 0.5, dropout: float = 0.1, pooling: str = "cls", target: str = "input"):
        super().__init__(backbone)
        if not isinstance(backbone, ViT1d):
            raise ValueError("method 'timedrl' needs model.backbone vit1d")
        if backbone.stride is None:
            raise ValueError("method 'timedrl' needs model.patch_stride (the reference pads the end by the stride and patches every "
                             "stride samples; model.patch_size for disjoint patches)")
        if pooling == "cls" and backbone.registers.shape[1] < 1:
            raise ValueError("method 'timedrl' with pooling cls needs model.registers >= 1 (register 0 is its [CLS] token)")
        for m in backbone.modules():
            if isinstance(m, nn.Dropout):
                m.p = dropout  # the encoder's attention-projection and MLP dropout: the two passes' only difference
        dim, width = backbone.embed_dim, backbone.patch_embed.in_channels * backbone.patch_size
        self.contrastive_weight, self.pooling, self.target = contrastive_weight, pooling, target
        self.reconstruct = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, width))
        self.head = nn.Sequential(nn.Linear(dim, dim // 2), nn.BatchNorm1d(dim // 2), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim // 2, dim))

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(instance (B, D), patch tokens (B, N, D))`` of normalised signals."""
        out = self.backbone.tokens(x, with_registers=True)
        tokens = out[:, self.backbone.registers.shape[1]:]
        return (out[:, 0] if self.pooling == "cls" else tokens.mean(dim=1)), tokens

    def forward(self, batch):
        raw = batch["views"][0]
        x = instance_norm(raw)
        (i1, t1), (i2, t2) = self._encode(x), self._encode(x)
        target = self.backbone.patches(raw if self.target == "input" else x)
        out = timedrl_loss(target, (self.reconstruct(t1), self.reconstruct(t2)), (i1, i2), (self.head(i1), self.head(i2)), self.contrastive_weight)
        return {k: v if k == "loss" else v.detach() for k, v in out.items()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(instance_norm(x))[0]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._encode(instance_norm(x))[0])

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation under the method's own randomness, the encoder's dropout (TimeDRL
        has no augmentations), for LiDAR."""
        was = self.backbone.training
        self.backbone.train()
        try:
            return self._encode(instance_norm(x))[0]
        finally:
            self.backbone.train(was)
