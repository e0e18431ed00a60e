"""DINOv3: DINO + iBOT + KoLeo with Gram anchoring (Siméoni et al., 2025).

https://arxiv.org/abs/2508.10104 — sec. 3 and 4; reference facebookresearch/dinov3
(``dinov3/train/ssl_meta_arch.py``, ``dinov3/loss/gram_loss.py``, the configs
``dinov3/configs/train/dinov3_vit7b16_gram_anchor.yaml``). A ViT student sees every crop (two
global ones with some patches masked, several small local ones); an EMA teacher sees the global
crops whole. With Sinkhorn-Knopp centring ``SK`` of the teacher's scores at temperature ``tau_t``:

    dino  = CE(SK(h_t(cls_t)), softmax(h_s(cls_s) / tau_s))  over pairs of different crops  # the [CLS] tokens
    ibot  = CE(SK(g_t(p_t[m])), softmax(g_s(p_s[m]) / tau_s))  on the masked patches m   # a separate iBOT head
    koleo = -mean_i log min_j ||cls_i - cls_j||  on each global crop's normalised [CLS]
    gram  = mse(P_s P_s^T, P_G P_G^T)  per image, P the L2-normalised patch features of the global crops
    loss  = dino + ibot_weight ibot + koleo_weight koleo + gram_weight gram

Gram anchoring (sec. 4): the student's patch-to-patch similarities are pulled towards those of a
*Gram teacher*, a frozen copy of the EMA teacher taken at epoch ``gram_start`` and refreshed every
``gram_refresh_epochs`` (the reference: from iteration 1.01M, every 10k iterations), which keeps
the dense features local while the global objective goes on training. Before ``gram_start`` the
term is off, as in the reference's pretraining stage. ``gram_loss`` is the reference's ``GramLoss``
with ``apply_norm`` and ``img_level`` on and negative similarities kept (its config's
``remove_neg: false``), on all patch tokens (``tokens_used: all``), the student's taken from its
masked pass as there. The teacher's [CLS] and patch scores are centred by three Sinkhorn-Knopp
iterations over the global batch (``train.centering: sinkhorn_knopp``; the masked patches of every
worker counted together). iBOT's masks: ``mask_probability`` of the global crops get a share of
their patches masked, spread evenly over ``mask_ratio`` from image to image (the reference's
collate); patches drawn at random here, in blocks there. The DINO loss averages every
(teacher crop, other student crop) pair, which is the reference's global/local weighting by pair
count.

Left out: the Gram teacher's high-resolution crops downsampled to the student's grid, the
reference's loss-weight and local-loss schedules, layerwise lr decay and the patch-embedding lr
multiplier, RoPE and register tokens (timm's ViT here), and ``max_updates`` (refreshes continue to
the end of training).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from selfsup.gather import world
from selfsup.methods.base import Method, register
from selfsup.methods.dino import DINOHead, distillation_loss, koleo_loss, teacher_temperature
from selfsup.methods.ema import cosine_momentum, ema_update
from selfsup.methods.iicc import sinkhorn
from selfsup.models.backbones import require_vit
from selfsup.sections import Fraction, Range, Section, check_shares


def gram_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean over images and patch pairs of (s_i.s_j - t_i.t_j)^2`` for patch features ``(B, N, D)``,
    each patch L2-normalised first (the reference's ``GramLoss`` at the image level)."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.detach().float(), dim=-1)
    return F.mse_loss(s @ s.transpose(1, 2), t @ t.transpose(1, 2))


def masked_patch_loss(student: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, images: int, student_temp: float) -> torch.Tensor:
    """iBOT's loss over the masked patches: ``-sum_k t[k] log softmax(s / tau_s)[k]`` per patch
    (``student`` logits, ``targets`` probabilities, both ``(M, K)``), weighted by ``weights`` ``(M,)``
    (one over the masked patches of the patch's image, so each image's patches average), summed
    and divided by the ``images`` that could have been masked (the reference's ``forward_masked``
    with its ``masks_weight``)."""
    per_patch = -(targets.detach() * F.log_softmax(student / student_temp, dim=-1)).sum(dim=-1)
    return (per_patch * weights).sum() / images


class DINOv3Config(Section):
    """DINOv3 (Siméoni et al., 2025): DINO's head and temperatures, a separate iBOT head, the iBOT
    masks, KoLeo's weight (the reference's 0.1), the Gram term's weight and its teacher's schedule
    in epochs, the teacher EMA."""

    name: Literal["dinov3"] = "dinov3"
    hidden: int = Field(2048, ge=1)
    bottleneck: int = Field(256, ge=1)
    prototypes: int = Field(65536, ge=2)
    ibot_prototypes: int = Field(65536, ge=2)
    student_temp: float = Field(0.1, gt=0.0)
    teacher_temp: float = Field(0.07, gt=0.0)
    warmup_teacher_temp: float = Field(0.04, gt=0.0)
    teacher_temp_warmup: Fraction = 0.1
    base_momentum: Fraction = 0.996
    head_batch_norm: bool = False
    ibot_weight: float = Field(1.0, ge=0.0)
    mask_probability: Fraction = 0.5
    mask_ratio: Range = (0.1, 0.5)
    koleo_weight: float = Field(0.1, ge=0.0)
    gram_weight: float = Field(1.0, ge=0.0)
    gram_start: int = Field(10, ge=0)
    gram_refresh_epochs: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "DINOv3Config":
        check_shares(self, "mask_ratio", below_one=True)
        return self


@register("dinov3")
class DINOv3(Method):
    description = "DINOv3 (Siméoni et al. 2025): DINO + iBOT + KoLeo, Sinkhorn-Knopp centring, Gram anchoring of the patch similarities"
    family = "distillation"
    config = DINOv3Config
    modality = "image"
    recipes = ("dino", "byol", "simclr")
    vit = True
    unused_parameters = True

    def __init__(self, backbone, hidden: int = 2048, bottleneck: int = 256, prototypes: int = 65536, ibot_prototypes: int = 65536,
                 student_temp: float = 0.1, teacher_temp: float = 0.07, warmup_teacher_temp: float = 0.04, teacher_temp_warmup: float = 0.1,
                 base_momentum: float = 0.996, head_batch_norm: bool = False, ibot_weight: float = 1.0, mask_probability: float = 0.5,
                 mask_ratio: tuple[float, float] = (0.1, 0.5), koleo_weight: float = 0.1, gram_weight: float = 1.0, gram_start: int = 10,
                 gram_refresh_epochs: int = 10):
        super().__init__(backbone)
        require_vit(backbone, "dinov3")
        d = backbone.embed_dim
        self.head = DINOHead(d, hidden, bottleneck, prototypes, batch_norm=head_batch_norm)
        self.ibot_head = DINOHead(d, hidden, bottleneck, ibot_prototypes, batch_norm=head_batch_norm)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.mask_token, std=0.02)
        self.teacher = nn.ModuleDict(dict(backbone=copy.deepcopy(backbone), head=copy.deepcopy(self.head),
                                          ibot_head=copy.deepcopy(self.ibot_head))).requires_grad_(False)
        self.gram_teacher = copy.deepcopy(backbone).requires_grad_(False)
        self.register_buffer("progress", torch.zeros(()))
        self.register_buffer("gram_epoch", torch.zeros((), dtype=torch.long))  # the epoch the Gram teacher was taken at; 0: none yet
        self.temps = (student_temp, warmup_teacher_temp, teacher_temp, teacher_temp_warmup)
        self.base_momentum, self.ibot_weight, self.koleo_weight, self.gram_weight = base_momentum, ibot_weight, koleo_weight, gram_weight
        self.mask_probability, self.mask_ratio = mask_probability, tuple(mask_ratio)
        self.gram_start, self.gram_refresh_epochs = gram_start, gram_refresh_epochs
        self.patches = backbone.grid[0] * backbone.grid[1]
        self._sync_anchored()
        self.register_load_state_dict_post_hook(self._sync_anchored)

    def _sync_anchored(self, *_) -> None:
        """Whether the Gram term is on (a Gram teacher has been taken): a Python flag, set when one is
        taken and on load, so that a compiled step does not read the buffer."""
        self.anchored = int(self.gram_epoch) > 0

    def masks(self):
        """iBOT's masks of the two global crops, made at collate time: ``mask_probability`` of the
        ``2B`` crops masked, the k-th of them a share drawn in the k-th of as many equal slices of
        ``mask_ratio``, the patches at random. ``{"ibot_masks": (2B, N) bool`` (crop-major, as the
        global crops are stacked), ``"ibot_index": (M,)`` the masked patches' flat indices into the
        ``2B * N`` patches, ``"ibot_weight": (M,)`` one over its crop's masked patches``}``."""
        n, (low, high) = self.patches, self.mask_ratio

        def draw(batch_size: int) -> dict:
            crops = 2 * batch_size
            masked = round(crops * self.mask_probability)
            edges = torch.linspace(low, high, masked + 1)
            shares = edges[:-1] + (edges[1:] - edges[:-1]) * torch.rand(masked)
            counts = torch.zeros(crops, dtype=torch.long)
            counts[torch.randperm(crops)[:masked]] = (shares * n).round().long().clamp(min=1)
            order = torch.rand(crops, n).argsort(dim=1)
            hide = torch.zeros(crops, n, dtype=torch.bool).scatter_(1, order, torch.arange(n).expand(crops, n) < counts[:, None])
            index = hide.flatten().nonzero()[:, 0]
            return {"ibot_masks": hide, "ibot_index": index, "ibot_weight": 1.0 / counts[index // n].float()}

        return draw

    def set_epoch(self, epoch: int) -> None:
        """From epoch ``gram_start + 1`` on, every ``gram_refresh_epochs``: the Gram teacher becomes a
        copy of the EMA teacher's backbone (the reference's ``update_gram``)."""
        since = epoch - 1 - self.gram_start
        if since >= 0 and since % self.gram_refresh_epochs == 0 and int(self.gram_epoch) != epoch:
            with torch.no_grad():
                for g, t in zip(self.gram_teacher.state_dict().values(), self.teacher.backbone.state_dict().values()):
                    g.copy_(t)
            self.gram_epoch.fill_(epoch)
            self._sync_anchored()

    def forward(self, batch):
        crops, hide, index = batch["views"], batch["ibot_masks"], batch["ibot_index"]
        b = crops[0].shape[0]
        student_temp, warm, temp, warmup = self.temps
        tau = teacher_temperature(self.progress, warm, temp, warmup)
        globals_ = torch.cat(crops[:2])
        with torch.no_grad():
            t_cls, t_patch = self.teacher.backbone.pooled_and_tokens(globals_)
            t_scores = self.teacher.head(t_cls).float()
            t_masked = self.teacher.ibot_head(t_patch.flatten(0, 1).index_select(0, index)).float()
        s_cls, s_patch = self.backbone.pooled_and_tokens(globals_, hide=hide, mask_token=self.mask_token)
        student = list(self.head(s_cls).float().chunk(2))
        student += [self.head(self.backbone(crop)).float() for crop in crops[2:]]
        dino = distillation_loss(student, list(sinkhorn(t_scores, tau).chunk(2)), student_temp)
        count = torch.tensor(float(index.shape[0]), device=index.device)
        if world()[1] > 1:
            dist.all_reduce(count)
        s_masked = self.ibot_head(s_patch.flatten(0, 1).index_select(0, index)).float()
        ibot = masked_patch_loss(s_masked, sinkhorn(t_masked, tau, count=count), batch["ibot_weight"], 2 * b, student_temp)
        koleo = sum(koleo_loss(c.float()) for c in s_cls.chunk(2))
        loss = dino + self.ibot_weight * ibot + self.koleo_weight * koleo
        logs = {"dino": dino.detach(), "ibot": ibot.detach(), "koleo": koleo.detach()}
        if self.anchored:
            with torch.no_grad():
                anchor = self.gram_teacher.tokens(globals_)
            gram = gram_loss(s_patch, anchor)
            loss = loss + self.gram_weight * gram
            logs["gram"] = gram.detach()
        return {"loss": loss, **logs}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The DINO head's prototype scores ``(B, K)``."""
        return self.head(self.backbone(x))

    def after_step(self, progress: float) -> None:
        self.progress.fill_(progress)
        momentum = cosine_momentum(self.base_momentum, progress)
        ema_update(self.teacher.backbone, self.backbone, momentum)
        ema_update(self.teacher.head, self.head, momentum)
        ema_update(self.teacher.ibot_head, self.ibot_head, momentum)
