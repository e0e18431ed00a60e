"""Operations on token sequences ``(B, N, D)`` that every transformer here shares: picking the
kept tokens, running a block stack (optionally with activation checkpointing) and fixed
sine-cosine positions. The bottom of ``models/``: it imports nothing from the package."""

from __future__ import annotations

import math

import torch
from torch import nn


def select(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``tokens[b, idx[b]]``: ``(B, N, D)`` and ``(B, K)`` -> ``(B, K, D)``."""
    return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def run_blocks(blocks: nn.Sequential, x: torch.Tensor, checkpointed: bool = False) -> torch.Tensor:
    """``blocks(x)``; when ``checkpointed`` (and gradients are on) each block's activations are
    recomputed in the backward pass instead of stored (activation checkpointing, Chen et al. 2016,
    https://arxiv.org/abs/1604.06174): memory of one block instead of all, for ~1/3 more compute."""
    if not (checkpointed and torch.is_grad_enabled()):
        return blocks(x)
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False)
    return x


def enable_grad_checkpointing(module: nn.Module) -> int:
    """Turn on activation checkpointing in every transformer stack of ``module`` (timm models,
    the token transformers, the masked predictors); returns how many stacks it reached."""
    reached = 0
    for m in module.modules():
        if hasattr(m, "set_grad_checkpointing"):
            m.set_grad_checkpointing(True)
            reached += 1
        elif getattr(m, "grad_checkpointing", None) is False:
            m.grad_checkpointing = True
            reached += 1
    return reached


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``[sin(p w_k), cos(p w_k)]`` for positions ``pos`` ``(N,)``: ``(N, dim)``, ``w_k = 10000^(-k / (dim/2))``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = pos.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """Fixed sine-cosine position embedding ``(prod(grid), dim)`` (MAE/I-JEPA), row-major. For a 1-D
    grid ``(N,)`` (time patches, table columns) all channels encode the index; for a 2-D grid
    ``(H, W)`` half the channels encode the row and half the column (``dim`` divisible by 4); for a
    3-D grid ``(T, H, W)`` (video tubelets) half encode the time step and a quarter each the row
    and the column (``dim`` divisible by 8), as V-JEPA's ``get_3d_sincos_pos_embed``
    (facebookresearch/jepa ``src/models/utils/pos_embs.py``)."""
    shares = {1: (1,), 2: (2, 2), 3: (2, 4, 4)}[len(grid)]
    need = 2 * max(shares)
    if dim % need:
        raise ValueError(f"sine-cosine positions over a {len(grid)}-D grid need a width divisible by {need}, got {dim}")
    axes = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    return torch.cat([sincos_1d(dim // share, axis.flatten()) for share, axis in zip(shares, axes)], dim=1).float()


def patchify(x: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """Cut ``(B, C, *size)`` into patches of ``patch`` (one size per axis): ``(B, N, prod(patch) * C)``
    with ``N = prod(size // patch)``, patches in row-major grid order (the order of a ViT's tokens)
    and values ``(*patch, C)`` within a patch (MAE's layout; for video ``(t, p, p, C)``, VideoMAE's)."""
    b, c, *size = x.shape
    grid = [s // p for s, p in zip(size, patch)]
    x = x.reshape(b, c, *[v for g, p in zip(grid, patch) for v in (g, p)])
    d = len(patch)
    x = x.permute(0, *[2 + 2 * i for i in range(d)], *[3 + 2 * i for i in range(d)], 1)
    return x.reshape(b, math.prod(grid), math.prod(patch) * c)
