"""ColloSSL: collaborative self-supervised learning among body-worn devices (Jain et al., "ColloSSL:
Collaborative Self-Supervised Learning for Human Activity Recognition", IMWUT 2022,
https://arxiv.org/abs/2202.00758; reference akhilmathurs/collossl: ``loss_fn.py``,
``device_selection.py``, ``distances.py``, ``simclr_utitlities.py``).

Devices worn at once see the same moment from different places: their time-aligned windows are
natural positives, no augmentation needed. One device is the anchor (``method.anchor``, or a random
device each step as the reference's ``--multi_anchor``); the others are ranked by their distance
to it, the maximum mean discrepancy (MMD, a sum of Gaussian kernels of 12 widths) between the
norms of their accelerometers (the first three channels) over many windows (``mmd_acc_norm``),
measured once on the training set before training (``selection: dataset``, the reference's
default) or on every batch (``batch``, its dynamic selection):

    z = normalize(encoder(window of device d))            # (B, E) per device, one shared encoder
    positives: the ``positives`` closest devices, the same moment     (B, E) each
    negatives: every device (the anchor too) at other moments: the batch shuffled, ``negative_samples`` times
    w: 1 for positives, 1 / MMD(anchor, d) for negatives (the anchor's own: half the smallest), over their max
    loss = mean_b [ log(sum_p w_p e^{s_p / t} + sum_n w_n e^{s_n / t}) - log sum_p w_p e^{s_p / t} ]

with ``s`` the cosine similarity to the anchor and ``t`` the temperature (0.1). That is the
reference's multi-view contrastive loss (``weighted_group_contrastive_loss_with_temp``) with its
closest-positive, all-negative selection (``closest_pos_all_neg``), its unsynchronised negatives
(``unsync_neg``: the overlapping devices and the anchor as extra negatives) and the distance weights
(``--weighted_collossl``; ``weighted: false`` sets every weight to 1). The representation is the
shared encoder's embedding averaged over the devices (the paper fine-tunes the anchor device's).

Here the encoder is the modality's ``device_cnn`` (the 1-D conv net shared by the devices) where
the reference has Tang et al.'s three-layer 1-D conv net with dropout and a global max pool.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import Method, register
from selfsup.sections import Section

SIGMAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 100.0)
"""The widths of the MMD's Gaussian kernels (``distances.gaussian_rbf_kernel``)."""


def mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Maximum mean discrepancy of two samples ``(N, F)`` under ``sum_s exp(-|a - b|^2 / (2 s))`` over
    :data:`SIGMAS`: ``mean K(x, x) + mean K(y, y) - 2 mean K(x, y)``, at least ``1e-4`` (``distances.mmd_loss``)."""
    beta = 1 / (2 * torch.tensor(SIGMAS, dtype=torch.float64, device=x.device))

    def kernel(a, b):
        return torch.exp(-beta[:, None, None] * torch.cdist(a.double(), b.double())[None] ** 2).sum(0).mean()

    return (kernel(x, x) + kernel(y, y) - 2 * kernel(x, y)).clamp(min=1e-4).float()


def acceleration_norm(x: torch.Tensor) -> torch.Tensor:
    """Each device's accelerometer magnitude ``(B, D, T)`` of windows ``(B, D, C, T)`` (its first three channels)."""
    return x[:, :, :3].norm(dim=2)


def device_distances(x: torch.Tensor) -> torch.Tensor:
    """The MMD ``(D, D)`` between every two devices' accelerometer norms over the windows ``x`` ``(B, D, C, T)``."""
    a = acceleration_norm(x)
    d = a.shape[1]
    out = torch.zeros(d, d, device=x.device)
    for i in range(d):
        for j in range(i + 1, d):
            out[i, j] = out[j, i] = mmd(a[:, i], a[:, j])
    return out


def collossl_loss(anchor: torch.Tensor, positives: torch.Tensor, positive_weights: torch.Tensor, negatives: torch.Tensor,
                  negative_weights: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """ColloSSL's weighted multi-view contrastive loss of unit embeddings: ``anchor`` ``(B, E)``,
    ``positives`` ``(P, B, E)`` and ``negatives`` ``(N, B, E)`` with their weights ``(P,)`` and ``(N,)``
    (see the module docstring)."""
    s_pos = (anchor[None] * positives).sum(-1).float() / temperature + positive_weights.float().log()[:, None]  # (P, B)
    s_neg = (anchor[None] * negatives).sum(-1).float() / temperature + negative_weights.float().log()[:, None]  # (N, B)
    return (torch.logsumexp(torch.cat([s_pos, s_neg]), dim=0) - torch.logsumexp(s_pos, dim=0)).mean()


class ColloSSLConfig(Section):
    """ColloSSL (Jain et al., 2022): the anchor device (none: a random one each step), the number of
    closest devices taken as positives, where the devices' distances are measured, the distance
    weights, the shuffled copies of every negative device and the temperature."""

    name: Literal["collossl"] = "collossl"
    anchor: int | None = Field(None, ge=0)
    positives: int = Field(1, ge=1)
    selection: Literal["dataset", "batch"] = "dataset"
    weighted: bool = True
    negative_samples: int = Field(1, ge=1)
    temperature: float = Field(0.1, gt=0.0)


@register("collossl")
class ColloSSL(Method):
    description = "ColloSSL (Jain et al. 2022): other body-worn devices' time-aligned windows as positives, chosen by MMD, weighted negatives"
    family = "contrastive"
    config = ColloSSLConfig
    modality = "sensors"
    recipes = ("none", "sensors")
    backbones = ("device_cnn",)
    n_views = 1

    def __init__(self, backbone, anchor: int | None = None, positives: int = 1, selection: str = "dataset", weighted: bool = True,
                 negative_samples: int = 1, temperature: float = 0.1):
        super().__init__(backbone)
        devices = backbone.n_devices
        if anchor is not None and anchor >= devices:
            raise ValueError(f"method.anchor {anchor} is not one of the windows' {devices} devices (0 .. {devices - 1})")
        if positives > devices - 1:
            raise ValueError(f"method.positives {positives} exceeds the {devices - 1} devices besides the anchor")
        self.anchor, self.positives, self.selection, self.weighted = anchor, positives, selection, weighted
        self.negative_samples, self.temperature = negative_samples, temperature
        self.register_buffer("distance", torch.ones(devices, devices) - torch.eye(devices))

    def prepare(self, train_x: torch.Tensor, groups) -> None:
        """The devices' distances on the training set: the mean MMD over batches of 512 of (a fixed
        sample of at most 8,192 of) its windows."""
        picked = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:8192]
        x = train_x[picked].float()
        chunks = [device_distances(c) for c in x.split(512) if len(c) > 1]
        self.distance.copy_(torch.stack(chunks).mean(0).to(self.distance.device))

    def masks(self):
        """Per batch, the anchor device ``anchor`` ``(1,)`` and the shuffles of the negatives ``shuffles``
        ``(D * negative_samples, B)`` (made with the batch, as the other methods' masks)."""
        devices, fixed, copies = self.distance.shape[0], self.anchor, self.negative_samples

        def draw(batch_size: int) -> dict:
            anchor = torch.tensor([fixed]) if fixed is not None else torch.randint(devices, (1,))
            return {"anchor": anchor, "shuffles": torch.rand(devices * copies, batch_size).argsort(dim=1)}

        return draw

    def forward(self, batch):
        (x,) = batch["views"]
        anchor, shuffles = batch["anchor"], batch["shuffles"]
        z = F.normalize(self.backbone.devices(x), dim=-1)  # (B, D, E)
        b, d, _ = z.shape
        distance = device_distances(x.detach()) if self.selection == "batch" else self.distance
        row = distance.index_select(0, anchor)[0]  # (D,)
        own = torch.arange(d, device=z.device) == anchor
        order = torch.where(own, torch.inf, row).argsort()
        positives = z.index_select(1, order[: self.positives]).transpose(0, 1)  # (P, B, E)
        row = torch.where(own, row.masked_fill(own, torch.inf).min() / 2, row)
        copies = torch.arange(d, device=z.device).repeat_interleave(self.negative_samples)  # every device, negative_samples times
        negatives = z.transpose(0, 1)[copies[:, None], shuffles]  # (D * k, B, E): device c at shuffled moments
        weights = 1 / row if self.weighted else torch.ones_like(row)
        top = torch.maximum(weights.max(), torch.ones_like(weights[0]))
        loss = collossl_loss(z.index_select(1, anchor)[:, 0], positives, torch.ones(self.positives, device=z.device) / top, negatives,
                             weights[copies] / top, self.temperature)
        return {"loss": loss}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the shared encoder's embedding averaged over the devices ``(B, E)``."""
        return self.backbone(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the embedding ``(B, E)`` of one random device of each window (the
        devices are ColloSSL's views of a moment; its recipe, ``none``, changes nothing)."""
        z = self.backbone.devices(x)
        return z[torch.arange(len(x), device=x.device), torch.randint(z.shape[1], (len(x),), device=x.device)]
