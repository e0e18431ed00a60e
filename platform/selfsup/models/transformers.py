"""Token transformers for the non-image JEPAs: a feature transformer for table rows and a 1-D ViT
for signals. Both expose the interface of ``TimmBackbone``'s ViTs that the masked methods use:
``tokens(x, keep=None) -> (B, K, D)`` (only the kept tokens enter the encoder), ``grid`` (the token
layout the predictor's positions follow), ``embed_dim``, and ``forward(x) -> (B, D)``, the mean of
the output tokens.

- ``FeatureTransformer`` (``model.backbone: ft_transformer``): one token per column, as in T-JEPA
  (Thimonier et al., https://arxiv.org/abs/2410.05016, sec. 3, after the FT-Transformer tokenizer of
  Gorishniy et al. 2021): a numerical value ``x_j`` becomes ``x_j w_j + b_j``, a categorical column
  the embedding of its category plus ``b_j``; ``registers`` learned regularization tokens ([REG],
  T-JEPA sec. 3.3) are prepended to every sequence, never masked and never predicted.
- ``ViT1d`` (``model.backbone: vit1d``): the ECG ViT of Weimann & Conrad
  (https://arxiv.org/abs/2410.13867, sec. 3): a signal ``(C, T)`` is cut into ``T / p`` patches of
  ``p`` samples across all channels (one token per time patch: the leads are mixed in the patch
  embedding), fixed 1-D sine-cosine positions, ``registers`` register tokens, pre-norm blocks and a
  final LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.models.tokens import run_blocks, select, sincos_pos_embed


def _blocks(dim: int, depth: int, heads: int) -> nn.Sequential:
    from timm.models.vision_transformer import Block

    return nn.Sequential(*[Block(dim, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)])


class _TokenEncoder(nn.Module):
    """Shared tail: optional kept subset, register tokens, transformer blocks, final norm."""

    def __init__(self, dim: int, depth: int, heads: int, registers: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.embed_dim {dim} must be divisible by model.heads {heads}")
        self.registers = nn.Parameter(torch.zeros(1, registers, dim))
        nn.init.trunc_normal_(self.registers, std=0.02)
        self.blocks = _blocks(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)
        self.embed_dim = dim
        self.grad_checkpointing = False

    def encode(self, t: torch.Tensor, keep: torch.Tensor | None, with_registers: bool = False) -> torch.Tensor:
        """The output tokens of ``t`` ``(B, N, D)`` (its ``keep`` subset); ``with_registers``: the
        register tokens' outputs first, ``(B, R + K, D)`` (TimeDRL's [CLS] is register 0)."""
        if keep is not None:
            t = select(t, keep)
        n = self.registers.shape[1]
        t = torch.cat([self.registers.expand(t.shape[0], -1, -1), t], dim=1)
        out = self.norm(run_blocks(self.blocks, t, self.grad_checkpointing))
        return out if with_registers else out[:, n:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).mean(dim=1)


class FeatureTransformer(_TokenEncoder):
    """Table rows ``(B, F)`` -> column tokens ``(B, G, D)``. ``groups`` are the widths of the columns
    in the row: 1 for a numerical column, the number of categories for a one-hot categorical one
    (``x[:, block] @ E`` is then exactly the embedding of the category)."""

    def __init__(self, groups: tuple[int, ...], dim: int, depth: int, heads: int, registers: int = 1):
        super().__init__(dim, depth, heads, registers)
        self.weight = nn.Parameter(torch.empty(sum(groups), dim))
        self.bias = nn.Parameter(torch.zeros(len(groups), dim))
        nn.init.trunc_normal_(self.weight, std=0.02 * dim**0.5)
        self.register_buffer("column", torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(groups)), persistent=False)
        self.grid = (len(groups),)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F) -> (B, G, D)``: token ``g`` is ``sum_{j in g} x_j w_j + b_g``."""
        out = x.new_zeros(x.shape[0], self.bias.shape[0], self.bias.shape[1])
        return out.index_add(1, self.column, x[:, :, None] * self.weight) + self.bias

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(self.tokenize(x), keep)


class ViT1d(_TokenEncoder):
    """Signals ``(B, C, T)`` -> time-patch tokens ``(B, N, D)``: ``N = T / patch`` disjoint patches;
    with a ``stride`` (``model.patch_stride``), the end of the signal is first padded with ``stride``
    repeats of its last sample and a patch starts every ``stride`` samples (overlapping when
    ``stride < patch``), ``N = (T + stride - patch) // stride + 1``: the patching of TimeDRL's
    reference (``layers/Embed.py``, ``Patching``: ``ReplicationPad1d((0, stride))`` then ``unfold``)."""

    def __init__(self, channels: int, length: int, patch: int, dim: int, depth: int, heads: int, registers: int = 1, stride: int | None = None):
        if stride is None and length % patch:
            raise ValueError(f"model.patch_size {patch} does not divide the signal length {length} (set model.patch_stride to pad the end)")
        if stride is not None and not 1 <= stride <= patch <= length + stride:
            raise ValueError(f"model.patch_stride {stride} must be in [1, model.patch_size {patch}] and the patch fit the signal ({length})")
        super().__init__(dim, depth, heads, registers)
        self.patch_size, self.stride = patch, stride
        self.patch_embed = nn.Conv1d(channels, dim, patch, stride=stride or patch)
        self.grid = ((length + stride - patch) // stride + 1 if stride else length // patch,)
        self.register_buffer("pos", sincos_pos_embed(dim, self.grid)[None], persistent=False)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` with ``stride`` repeats of the last sample appended (unchanged without a stride)."""
        return F.pad(x, (0, self.stride), mode="replicate") if self.stride else x

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T) -> (B, N, C * patch)``: patch ``n`` holds the samples of every channel ``c``
        the ``n``-th token sees, channel by channel (the order the patch embedding reads them)."""
        b, c, _ = x.shape
        return self.pad(x).unfold(-1, self.patch_size, self.stride or self.patch_size).permute(0, 2, 1, 3).reshape(b, -1, c * self.patch_size)

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None, with_registers: bool = False) -> torch.Tensor:
        return self.encode(self.patch_embed(self.pad(x)).transpose(1, 2) + self.pos, keep, with_registers)
