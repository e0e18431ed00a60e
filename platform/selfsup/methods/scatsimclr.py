"""ScatSimCLR: SimCLR on a fixed scattering transform with a small trainable adapter, plus a pretext
task (Kinakh, Taran & Voloshynovskiy, ICCV Workshops 2021).

https://arxiv.org/abs/2108.13939 — sec. 3; reference vkinakh/scatsimclr (``src/models/scatnet_simclr.py``,
``src/trainer/pretext_task_trainer.py``, ``src/data/jigsaw_dataset.py``, ``rotation_dataset.py``,
``config_pretext.yaml``). The encoder is the ``scatnet`` backbone (``selfsup.modalities.image.ScatNet``:
kymatio's scattering transform, fixed, and a residual adapter, the only trained part before the
heads). With two views ``x1, x2`` of each image:

    z1, z2 = g(f(x1)), g(f(x2))                         # g: Linear-ReLU-Linear, as the reference's l1, l2
    contrastive = NT-Xent(z1, z2, tau)                  # SimCLR's loss, every worker's negatives
    rotation:  the 4 rotations of x1, f -> fc1 -> fc2 -> 4 classes          (labels 0, 90, 180, 270 degrees)
    jigsaw:    x1 cut into 3x3 tiles (each resized to the image), shuffled by one of P fixed
               permutations; fc1 on each tile's f, the 9 concatenated -> fc2 -> P classes
    loss = contrastive + pretext_weight * CE(pretext)

The reference's ``config_pretext.yaml``: temperature 0.5, pretext weight (``lambda``) 0.3, 35 jigsaw
permutations; its heads: fc1 512 and fc2 4096 for jigsaw, 512 and 128 for rotation, each with
ReLU and dropout 0.5 (``pretext_widths``, ``pretext_dropout``). Its permutations are a file of a
maximal-Hamming-distance set (Noroozi & Favaro 2016); here the same greedy selection is made
from a fixed seed (:func:`max_hamming_permutations`). The pretext input is the first contrastive view
(the reference transforms the image once more for it), and each image's permutation is drawn at
collate time with the batch.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.gather import gather_with_grad, world
from selfsup.methods.base import Method, register
from selfsup.methods.simclr import nt_xent_loss
from selfsup.sections import Fraction, Section, Widths

ROTATIONS = 4
TILES = 3


def max_hamming_permutations(count: int, seed: int = 0) -> torch.Tensor:
    """``count`` permutations of the 9 tiles ``(count, 9)``, chosen greedily so that each new one is
    as far as possible (in Hamming distance: tiles in different places) from the nearest already
    chosen, starting from a random one (Noroozi & Favaro 2016, Algorithm 1)."""
    every = np.array(list(itertools.permutations(range(TILES * TILES))), dtype=np.int8)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(every)))]
    nearest = (every != every[chosen[0]]).sum(axis=1)
    while len(chosen) < count:
        far = np.flatnonzero(nearest == nearest.max())
        chosen.append(int(far[rng.integers(len(far))]))
        nearest = np.minimum(nearest, (every != every[chosen[-1]]).sum(axis=1))
    return torch.from_numpy(every[chosen].astype(np.int64))


def jigsaw_tiles(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The 3x3 tiles of images ``(B, C, H, W)`` in row-major order, each resized to ``(H, W)``,
    tile ``t`` of the result being tile ``order[b, t]`` of the image: ``(B, 9, C, H, W)``."""
    b, c, h, w = x.shape
    th, tw = h // TILES, w // TILES
    tiles = x[:, :, : th * TILES, : tw * TILES].unfold(2, th, th).unfold(3, tw, tw)  # (B, C, 3, 3, th, tw)
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(b * TILES * TILES, c, th, tw)
    tiles = F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False).view(b, TILES * TILES, c, h, w)
    return tiles.gather(1, order.view(b, -1, 1, 1, 1).expand(-1, -1, c, h, w))


def pretext_mlp(widths: list[int], dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout for each step of ``widths`` (the reference's fc1 / fc2)."""
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class ScatSimCLRConfig(Section):
    """ScatSimCLR (Kinakh et al., 2021): NT-Xent temperature and projection head, the pretext task
    and its weight, the jigsaw permutations, the pretext heads' widths (fc1, fc2; by default the
    reference's: 512, 4096 for jigsaw, 512, 128 for rotation) and dropout."""

    name: Literal["scatsimclr"] = "scatsimclr"
    temperature: float = Field(0.5, gt=0.0)
    projector: Widths = Field(default_factory=lambda: [512, 128])
    pretext: Literal["jigsaw", "rotation"] = "jigsaw"
    pretext_weight: float = Field(0.3, ge=0.0)
    jigsaw_permutations: int = Field(35, ge=2, le=1000)
    pretext_widths: list[int] | None = None
    pretext_dropout: Fraction = 0.5


@register("scatsimclr")
class ScatSimCLR(Method):
    description = "ScatSimCLR (Kinakh et al. 2021): NT-Xent on a fixed scattering transform + adapter, with a jigsaw or rotation pretext loss"
    family = "contrastive"
    config = ScatSimCLRConfig
    modality = "image"
    recipes = ("simclr", "byol", "light")
    backbones = ("scatnet",)

    def __init__(self, backbone, temperature: float = 0.5, projector: list[int] = (512, 128), pretext: str = "jigsaw", pretext_weight: float = 0.3,
                 jigsaw_permutations: int = 35, pretext_widths: list[int] | None = None, pretext_dropout: float = 0.5):
        super().__init__(backbone)
        d = backbone.embed_dim
        self.head = nn.Sequential(nn.Linear(d, projector[0]), nn.ReLU(inplace=True), nn.Linear(projector[0], projector[-1]))
        self.temperature, self.pretext, self.pretext_weight = temperature, pretext, pretext_weight
        fc1, fc2 = pretext_widths or ((512, 4096) if pretext == "jigsaw" else (512, 128))
        if pretext == "jigsaw":
            self.register_buffer("permutations", max_hamming_permutations(jigsaw_permutations), persistent=False)
            self.fc1 = pretext_mlp([d, fc1], pretext_dropout)
            self.fc2 = pretext_mlp([TILES * TILES * fc1, fc2], pretext_dropout)
            self.classifier = nn.Linear(fc2, jigsaw_permutations)
        else:
            self.fc1 = pretext_mlp([d, fc1, fc2], pretext_dropout)
            self.fc2 = nn.Identity()
            self.classifier = nn.Linear(fc2, ROTATIONS)

    def masks(self):
        """Each image's jigsaw permutation (an index into the fixed set), drawn at collate time:
        ``{"permutation": (B,)}``; nothing for the rotation task, whose 4 rotations are all used."""
        if self.pretext != "jigsaw":
            return None
        count = len(self.permutations)
        return lambda batch_size: {"permutation": torch.randint(count, (batch_size,))}

    def pretext_logits(self, x: torch.Tensor, permutation: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The pretext classifier's logits and targets for images ``x`` ``(B, C, H, W)``."""
        b = x.shape[0]
        if self.pretext == "jigsaw":
            tiles = jigsaw_tiles(x, self.permutations[permutation])
            h = self.fc1(self.backbone(tiles.flatten(0, 1))).view(b, -1)
            return self.classifier(self.fc2(h)), permutation
        rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
        labels = torch.arange(ROTATIONS, device=x.device).repeat_interleave(b)
        return self.classifier(self.fc1(self.backbone(rotated))), labels

    def forward(self, batch):
        x1, x2 = batch["views"]
        z1, z2 = self.project(x1).float(), self.project(x2).float()
        rank, _ = world()
        contrastive = nt_xent_loss(z1, z2, self.temperature, gather_with_grad(z1), gather_with_grad(z2), rank * z1.shape[0])
        logits, targets = self.pretext_logits(x1, batch.get("permutation"))
        pretext = F.cross_entropy(logits.float(), targets)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return {"loss": contrastive + self.pretext_weight * pretext, "contrastive": contrastive.detach(), "pretext": pretext.detach(),
                "pretext_acc": accuracy.detach()}
