"""The method contract and registry (see DESIGN.md, "Method contract").

A method is an ``nn.Module`` registered under a short name. It owns its heads and any
teacher/target network and provides ``forward(batch) -> dict`` (with ``loss``), ``embed(x)``
(the backbone representation that metrics and probes see), ``after_step(progress)`` and, for
masked methods, ``masks()``. ``views`` names the method's default augmentation recipe.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

METHODS: dict[str, type["Method"]] = {}


def register(name: str):
    """Class decorator: make a :class:`Method` available under ``name``."""

    def wrap(cls: type["Method"]) -> type["Method"]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


class Method(nn.Module):
    """Base class: a backbone plus whatever the method adds around it; ``head`` is the
    projector (set by each method) whose output ``project`` returns."""

    name: str = ""
    description: str = ""
    views: str = "byol"
    encoder: str = "backbone"
    """The submodule whose features ``embed`` returns, and that ``selfsup export`` writes out (the
    JEPAs evaluate their EMA target encoder, ``target``)."""
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

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation ``(B, D)`` of one random view of ``x``, for LiDAR. The caller has
        already augmented ``x`` with the run's view recipe; masked methods (whose views are masks,
        not augmentations) override this to encode a random context of ``x`` with their own masks."""
        return self.embed(x)

    def after_step(self, progress: float) -> None:
        """Called after every optimizer step with training progress in [0, 1]."""

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
