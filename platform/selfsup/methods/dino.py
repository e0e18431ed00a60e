"""DINO: self-distillation with no labels (Caron et al., ICCV 2021), with DINOv2's KoLeo option.

https://arxiv.org/abs/2104.14294 — sec. 3.1 and Algorithm 1. A student (backbone + DINO head)
sees every crop, two global and several small local ones; a teacher (an EMA of the student, no
gradient) sees only the global crops. The student's softmax at temperature ``tau_s`` is trained
to match the teacher's, which is centred (``c``, an EMA of the teacher's batch mean over all
workers) and sharpened (``tau_t``, warmed up linearly from ``warmup_teacher_temp``), for every
pair of different crops. The head's last layer is frozen for the first ``freeze_last_layer`` of
training, as in the reference code.

KoLeo (Sablayrolles et al. 2019; DINOv2, Oquab et al. 2024, sec. 4): ``-mean_i log min_j ||x_i - x_j||``
over the L2-normalised backbone features of each global crop, weight ``koleo_weight`` (0.1 in DINOv2).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import Method, register
from selfsup.gather import world
from selfsup.models.heads import Projected
from selfsup.sections import Fraction, Section
from selfsup.methods.ema import cosine_momentum, ema_update


def dino_loss(
    student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor, student_temp: float, teacher_temp: float
) -> torch.Tensor:
    """``mean over pairs (i, v), v != i, of -sum_k P_t^i[k] log P_s^v[k]``, averaged over the batch.

    ``student``: logits ``(B, K)`` of every crop (global ones first); ``teacher``: logits ``(B, K)``
    of the global crops; ``P_t = softmax((t - center) / teacher_temp)`` (no gradient),
    ``P_s = softmax(s / student_temp)``.
    """
    return distillation_loss(student, [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher], student_temp)


def distillation_loss(student: list[torch.Tensor], targets: list[torch.Tensor], student_temp: float) -> torch.Tensor:
    """``mean over pairs (i, v), v != i, of -sum_k P_t^i[k] log P_s^v[k]``, averaged over the batch,
    for the teacher's target distributions ``targets`` ``(B, K)`` of the global crops (detached)
    and the student's logits ``(B, K)`` of every crop, ``P_s = softmax(s / student_temp)``."""
    targets = [t.detach() for t in targets]
    log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    total, pairs = 0.0, 0
    for i, p_t in enumerate(targets):
        for v, log_p_s in enumerate(log_probs):
            if v != i:
                total = total + (-(p_t * log_p_s).sum(dim=-1)).mean()
                pairs += 1
    return total / pairs


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator ``-(1/B) sum_i log ||x_i - x_nn(i)||`` on L2-normalised ``x`` ``(B, D)``."""
    x = F.normalize(x, dim=-1, eps=eps)
    with torch.no_grad():
        sims = x @ x.T
        sims.fill_diagonal_(-2.0)
        nearest = sims.argmax(dim=1)
    return -torch.log(F.pairwise_distance(x, x[nearest], eps=eps) + eps).mean()


def teacher_temperature(progress: torch.Tensor, start: float, end: float, warmup: float) -> torch.Tensor | float:
    """DINO's teacher temperature: linear from ``start`` to ``end`` over the first ``warmup`` of
    training (``progress`` a 0-d tensor in [0, 1]), ``end`` after it."""
    if warmup <= 0:
        return end
    return start + (end - start) * (progress / warmup).clamp(max=1.0)


class DINOHead(nn.Module):
    """MLP (Linear-[BN]-GELU x ``layers - 1``, Linear to ``bottleneck``), L2 normalisation, then a
    linear layer onto ``prototypes`` with unit-norm weights (the weight-normalised last layer
    with ``g = 1``). ``(B, in_dim) -> (B, prototypes)``."""

    def __init__(self, in_dim: int, hidden: int = 2048, bottleneck: int = 256, prototypes: int = 65536, layers: int = 3, batch_norm: bool = False):
        super().__init__()
        mlp, d = [], in_dim
        for _ in range(layers - 1):
            mlp += [nn.Linear(d, hidden), *([nn.BatchNorm1d(hidden)] if batch_norm else []), nn.GELU()]
            d = hidden
        self.mlp = nn.Sequential(*mlp, nn.Linear(d, bottleneck))
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        self.frozen = False

    def forward(self, x):
        z = F.normalize(self.mlp(x), dim=-1)
        w = self.prototypes.detach() if self.frozen else self.prototypes
        return F.linear(z, F.normalize(w, dim=-1))


class DINOConfig(Section):
    """DINO (Caron et al., 2021): head, temperatures, centring, teacher EMA, KoLeo (DINOv2).

    ``teacher_temp_warmup`` and ``freeze_last_layer`` are fractions of training (DINO: 30 of 300
    epochs and 1 epoch). ``head_batch_norm`` puts BN in the head's hidden layers (the reference
    code's ``use_bn_in_head``): small CNNs, whose pooled features share a large positive mean,
    need it or the teacher's outputs hardly differ between images and centring makes them uniform."""

    name: Literal["dino"] = "dino"
    hidden: int = Field(2048, ge=1)
    bottleneck: int = Field(256, ge=1)
    prototypes: int = Field(65536, ge=2)
    student_temp: float = Field(0.1, gt=0.0)
    teacher_temp: float = Field(0.04, gt=0.0)
    warmup_teacher_temp: float = Field(0.04, gt=0.0)
    teacher_temp_warmup: Fraction = 0.0
    center_momentum: Fraction = 0.9
    base_momentum: Fraction = 0.996
    freeze_last_layer: Fraction = 0.0
    koleo_weight: float = Field(0.0, ge=0.0)
    head_batch_norm: bool = False


@register("dino")
class DINO(Method):
    description = "DINO (Caron et al. 2021): student matches a centred, sharpened EMA teacher over multi-crops"
    family = "distillation"
    config = DINOConfig
    modality = "image"
    recipes = ("dino", "byol", "simclr", "light")
    unused_parameters = True

    def __init__(
        self,
        backbone,
        hidden: int = 2048,
        bottleneck: int = 256,
        prototypes: int = 65536,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        teacher_temp_warmup: float = 0.0,
        center_momentum: float = 0.9,
        base_momentum: float = 0.996,
        freeze_last_layer: float = 0.0,
        koleo_weight: float = 0.0,
        head_batch_norm: bool = False,
    ):
        super().__init__(backbone)
        self.head = DINOHead(backbone.embed_dim, hidden, bottleneck, prototypes, batch_norm=head_batch_norm)
        self.teacher = Projected(copy.deepcopy(backbone), copy.deepcopy(self.head)).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, prototypes))
        self.register_buffer("progress", torch.zeros(()))
        self.student_temp, self.teacher_temp, self.warmup_teacher_temp = student_temp, teacher_temp, warmup_teacher_temp
        self.teacher_temp_warmup, self.center_momentum, self.base_momentum = teacher_temp_warmup, center_momentum, base_momentum
        self.freeze_last_layer, self.koleo_weight = freeze_last_layer, koleo_weight
        self._sync_frozen()
        self.register_load_state_dict_post_hook(self._sync_frozen)

    def current_teacher_temp(self) -> torch.Tensor | float:
        """Linear warmup from ``warmup_teacher_temp`` to ``teacher_temp`` over the first
        ``teacher_temp_warmup`` of training: a 0-d tensor computed from the progress buffer, so a
        compiled step neither breaks its graph to read it nor recompiles as it changes."""
        return teacher_temperature(self.progress, self.warmup_teacher_temp, self.teacher_temp, self.teacher_temp_warmup)

    def _sync_frozen(self, *_) -> None:
        """The last layer is frozen while progress < ``freeze_last_layer``: a Python flag (the
        frozen step gives the prototypes no gradient at all), set after every step and on load."""
        self.head.frozen = float(self.progress) < self.freeze_last_layer

    def _by_resolution(self, net, crops: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone features and head outputs of each crop, one forward per crop size."""
        feats, out, start = [], [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            f = net.backbone(torch.cat(crops[start:end]))
            feats += f.chunk(end - start)
            out += net.head(f).float().chunk(end - start)
            start = end
        return feats, out

    def forward(self, batch):
        crops = batch["views"]
        with torch.no_grad():
            _, teacher = self._by_resolution(self.teacher, crops[:2])
        feats, student = self._by_resolution(self, crops)
        # a copy of the centre: the buffer is updated in place below, and a compiler that recomputes
        # P_t from its inputs in the backward pass (Inductor does) must see the value the loss used
        loss = dino_loss(student, teacher, self.center.clone(), self.student_temp, self.current_teacher_temp())
        logs = {"dino": loss.detach()}
        if self.koleo_weight > 0:
            koleo = sum(koleo_loss(f.float()) for f in feats[:2])
            logs["koleo"] = koleo.detach()
            loss = loss + self.koleo_weight * koleo
        self._update_center(torch.cat(teacher))
        return {"loss": loss, **logs}

    @torch.no_grad()
    def _update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher logits over the global batch)``."""
        total = teacher.sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher.shape[0]), device=teacher.device)
        if world()[1] > 1:
            dist.all_reduce(total)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)

    def after_step(self, progress: float) -> None:
        self.progress.fill_(progress)
        self._sync_frozen()
        momentum = cosine_momentum(self.base_momentum, progress)
        ema_update(self.teacher.backbone, self.backbone, momentum)
        ema_update(self.teacher.head, self.head, momentum)
