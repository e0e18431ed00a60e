"""The exponential moving average that the teacher/target networks of BYOL, MoCo v3, DINO and the
JEPAs follow, and its rate schedules (cosine, linear). Shared by the method files (below the training engine,
which knows nothing of teachers)."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for parameters; buffers copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def cosine_momentum(base: float, progress: float) -> float:
    """EMA rate rising from ``base`` at progress 0 to 1 at progress 1:
    ``1 - (1 - base) (cos(pi progress) + 1) / 2`` (BYOL sec. 3.2, MoCo v3 sec. 4)."""
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


def linear_momentum(base: float, progress: float, final: float = 1.0) -> float:
    """EMA rate rising linearly from ``base`` at progress 0 to ``final`` at progress 1:
    ``base + (final - base) progress`` (I-JEPA's target schedule, and the JEPAs' after it)."""
    return base + (final - base) * progress
