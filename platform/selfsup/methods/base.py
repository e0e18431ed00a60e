"""The method contract and registry (see DESIGN.md, "Method contract").

A method is an ``nn.Module`` registered under a short name, the whole of it in one file
``methods/<name>.py``: its loss as a pure function, its configuration section (``config``, a
pydantic model whose ``name`` is the method's), and the class. It owns its heads and any
teacher/target network and provides ``forward(batch) -> dict`` (with ``loss``), ``embed(x)``
(the backbone representation that metrics and probes see), ``after_step(progress)``,
``set_epoch(epoch)`` and, for
masked methods, ``masks()``. Class attributes say what it suits: ``modality``, ``recipes`` (view
recipes, its default first), ``backbones``, ``vit``, ``masked``. ``config.py`` builds the
``method:`` section of an experiment from this registry, so adding a method touches no shared
table.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from pydantic import model_validator
from torch import nn

from selfsup.sections import Section

METHODS: dict[str, type["Method"]] = {}
FAMILIES = ("contrastive", "distillation", "redundancy_reduction", "jepa", "masked_modelling", "clustering", "pretext")
"""Method families: instance contrast (SimCLR, MoCo v3), self-distillation (BYOL, DINO), redundancy
reduction (VICReg, Barlow Twins), joint-embedding prediction (the JEPAs), masked modelling in input
space (MAE), clustering (DEPICT, GEDI) and a pretext task (VCOP's clip order)."""


def register(name: str):
    """Class decorator: make a :class:`Method` available under ``name``."""

    def wrap(cls: type["Method"]) -> type["Method"]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        if cls.config is None or cls.config.model_fields["name"].default != name:
            raise ValueError(f"method {name!r}: its config section must have name: Literal[{name!r}] = {name!r}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


class Method(nn.Module):
    """Base class: a backbone plus whatever the method adds around it; ``head`` is the
    projector (set by each method) whose output ``project`` returns."""

    name: str = ""
    description: str = ""
    family: ClassVar[str] = ""
    """Its kind of objective, one of :data:`FAMILIES`: what the selection benchmark reports each rule's
    record by (``docs/selection.md``)."""
    config: ClassVar[type[Section] | None] = None
    """The method's section of an experiment YAML (``method:``); ``build_method`` gets its fields."""
    modality: ClassVar[str | tuple[str, ...] | None] = None
    """The modality (``modalities/<name>.py``: ``image``, ``signal``, ``table``, ...) of a method made
    for one kind of data, or the modalities of one made for a few (MAE: images and videos);
    ``None``: any."""
    recipes: ClassVar[tuple[str, ...]] = ("byol", "simclr", "light")
    """The view recipes (``selfsup.data.views``) it accepts on its data, its default first; a
    method for any data takes a modality's ``default_recipes`` where it has them (``signal`` on
    signals, ``scarf`` on tables), these on images."""
    backbones: ClassVar[tuple[str, ...] | None] = None
    """The ``model.backbone`` values it needs; ``None``: any that suits the data."""
    vit: ClassVar[bool] = False
    """Needs a timm ViT (``model.timm_name: vit_*``): it works on patch tokens."""
    masked: ClassVar[bool] = False
    """Sees one view and masks (``masks()``) instead of two augmented views."""
    n_views: ClassVar[int] = 2
    """Views of each sample in a training batch (``batch["views"]``): 1 for the masked methods and
    TimeDRL, whose randomness is their own."""
    encoder: str = "backbone"
    """The submodule whose features ``embed`` returns, and that ``selfsup export`` writes out (the
    JEPAs evaluate their EMA target encoder, ``target``)."""
    own_metrics: ClassVar[tuple[str, ...]] = ()
    """The names of the metrics :meth:`label_free_metrics` returns (a sweep may take one as its objective)."""
    in_memory: ClassVar[bool] = False
    """Prepares on the whole training set held in memory (G-SimCLR's autoencoder): its data may not
    be streamed (``data.stream``)."""
    broadcast_buffers: ClassVar[bool] = True
    """Whether DDP copies rank 0's buffers to every worker before each step (its default). False for a
    method whose large buffers every worker updates alike from gathered values (InterCLR's memory
    bank of every training image), which would otherwise cross the network every step."""
    unused_parameters: bool = False
    """True when a step may leave some trainable parameters without a gradient (DINO's frozen
    last layer; a timm ViT's pooling norm, unused on the token path): DDP must then look for them."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """``batch["views"]`` is a list of ``(B, C, H, W)`` tensors; returns ``{"loss": ..., ...}``."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone representation ``(B, embed_dim)`` of unaugmented inputs."""
        return self.backbone(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output ``(B, P)``: ``head(backbone(x))`` (also what projector RankMe sees)."""
        return self.head(self.backbone(x))

    @property
    def has_patch_tokens(self) -> bool:
        """Whether the backbone is a token encoder (a ViT, the signal, table, point and trajectory
        transformers): its :meth:`patch_tokens` feed the panel's DSE."""
        return callable(getattr(self.backbone, "tokens", None)) and getattr(self.backbone, "is_vit", True)

    @torch.no_grad()
    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's patch (token) features ``(B, N, D)`` of unaugmented inputs."""
        return self.backbone.tokens(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation ``(B, D)`` of one random view of ``x``, for LiDAR. The caller has
        already augmented ``x`` with the run's view recipe; masked methods (whose views are masks,
        not augmentations) override this to encode a random context of ``x`` with their own masks."""
        return self.embed(x)

    def after_step(self, progress: float) -> None:
        """Called after every optimizer step with training progress in [0, 1]."""

    def set_epoch(self, epoch: int) -> None:
        """Called before every epoch's first step with the run's epoch (from 1; a run resumed from its
        checkpoint goes on counting, one continued with ``--from`` counts its own), for what a
        method does on an epoch schedule (DINOv3's Gram teacher)."""

    @torch.no_grad()
    def label_free_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """Metrics of this method's own, on the evaluation subset ``x`` ``(N, ...)`` (on the
        device), added to the panel's (seq-JEPA's equivariance probe); none by default. Their
        names are :attr:`own_metrics`."""
        return {}

    def prepare(self, train_x, groups: tuple[int, ...] | None) -> None:
        """Called once before training (and before ``masks()``) with the training samples (a tensor
        ``(N, ...)`` when held in memory, else a streamed dataset: ``len`` gives ``N``) and a table's
        column widths, for what a method computes from its data once (the two-tower method's
        feature correlations, InterCLR's memory bank). Every worker sees the same data, so gets the
        same result."""

    def batch_groups(self) -> torch.Tensor | None:
        """After :meth:`prepare`: a group for every training sample ``(N,)`` when no batch may hold
        two samples of one group (G-SimCLR's pseudo-labels; the worker then draws its batches with
        :class:`~selfsup.data.views.DistinctGroups`); ``None``: batches drawn at random."""
        return None

    def masks(self) -> Callable[[int], dict[str, torch.Tensor]] | None:
        """For masked methods: ``masks(batch_size) -> {name: index tensor}``, added to each batch at
        collate time (DESIGN.md: masks are collate-time objects); ``None`` for the others."""
        return None


def masked_view(encoder: nn.Module, mask_maker, x: torch.Tensor) -> torch.Tensor:
    """Mean token ``(B, D)`` of ``encoder`` on the context (first index set) of one draw of ``mask_maker``."""
    return encoder.tokens(x, keep=mask_maker(len(x))[0]).mean(dim=1)


def build_method(name: str, backbone: nn.Module, **params) -> Method:
    """Instantiate the method registered as ``name`` around ``backbone``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](backbone, **params)


class PredictorSection(Section):
    """A method whose predictor maps projections onto projections (BYOL, MoCo v3)."""

    @model_validator(mode="after")
    def _check_predictor(self):
        if self.predictor[-1] != self.projector[-1]:
            raise ValueError(f"predictor must end in the projector's width {self.projector[-1]}, got {self.predictor[-1]}")
        return self


class PredictorShape(Section):
    """A JEPA predictor's width, depth and heads: the width must divide by the heads and by
    ``2 * position_axes`` (its sine-cosine positions: 2-D for image patches, 1-D otherwise)."""

    position_axes: ClassVar[int] = 1

    @model_validator(mode="after")
    def _check_predictor(self):
        even = 2 * self.position_axes
        if self.predictor_dim % even or self.predictor_dim % self.predictor_heads:
            raise ValueError(f"predictor_dim {self.predictor_dim} must be divisible by {even} and by predictor_heads {self.predictor_heads}")
        return self
