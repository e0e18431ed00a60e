"""The narrow transformer that fills in masked patches: I-JEPA's predictor and MAE's decoder.

Both take the encoder's tokens of the visible (context) patches and, for a set of query
positions, a shared learnable mask token plus the position's fixed 2-D sine-cosine embedding;
a few transformer blocks mix them and a linear layer maps the query outputs to the target space
(encoder features for I-JEPA, Assran et al. 2023 sec. 3; pixels of a patch for MAE, He et al.
2022 sec. 3). Without a class token, attention is blind to token order, so visible and query
tokens are simply concatenated (MAE's "unshuffle" is not needed).
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.models.tokens import run_blocks, select, sincos_pos_embed


class MaskedPredictor(nn.Module):
    """``(context (B, Kc, in_dim), context_idx (B, Kc), query_idx (B, Kq)) -> (B, Kq, out_dim)``."""

    def __init__(self, in_dim: int, grid: tuple[int, ...], dim: int, depth: int, num_heads: int, out_dim: int):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", sincos_pos_embed(dim, grid)[None], persistent=False)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)
        self.grad_checkpointing = False
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, query_idx: torch.Tensor) -> torch.Tensor:
        pos = self.pos.expand(context.shape[0], -1, -1)
        visible = self.embed(context) + select(pos, context_idx)
        queries = self.mask_token + select(pos, query_idx)
        x = self.norm(run_blocks(self.blocks, torch.cat([visible, queries], dim=1), self.grad_checkpointing))
        return self.out(x[:, context.shape[1]:])
