"""Backbones for video clips ``(B, C, T, H, W)`` (registered by ``selfsup.modalities.video``).

- :class:`ViT3d` (``model.backbone: vit3d``): the video ViT of VideoMAE and V-JEPA. A clip is cut
  into tubelets of ``tubelet`` frames by ``p x p`` pixels (one Conv3d, kernel = stride = the
  tubelet; Arnab et al., ViViT, https://arxiv.org/abs/2103.15691, sec. 3.2 "tubelet embedding";
  VideoMAE and V-JEPA use 2 x 16 x 16), fixed 3-D sine-cosine positions (half the channels encode
  time, a quarter each row and column: ``selfsup.models.tokens.sincos_pos_embed``, as V-JEPA's), timm's pre-norm blocks and a final
  LayerNorm; ``forward`` is the mean token. Positions are computed for the grid of each input,
  so clips of other lengths (a temporal crop) pass too; the masked methods' token grid is the
  one of ``in_shape``. It has the masked methods' interface (``tokens(x, keep)``, ``grid``,
  ``patchify``, ``patch_dim``).
- :class:`SmallCNN3d` (``cnn3d``): the 3-D twin of the image ``cnn``: ``depth`` 3x3x3
  conv-BN-ReLU blocks (``width * 2**i`` channels; the second and later halve H and W, and T from
  the third on), a last conv to ``embed_dim`` channels and global average pooling.
- :class:`VideoResNet` (``video_resnet``): torchvision's video ResNets (R3D-18, MC3-18,
  R(2+1)D-18; Tran et al., CVPR 2018, https://arxiv.org/abs/1711.11248), randomly initialised,
  classifier removed: 512-wide pooled features. The paper-scale choice (CVRL and VCOP use 3-D
  ResNets).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from selfsup.models.tokens import patchify, run_blocks, select, sincos_pos_embed


class ViT3d(nn.Module):
    """Video ViT over tubelets (see the module docstring): ``(B, C, T, H, W) -> (B, embed_dim)``."""

    is_vit = True

    def __init__(self, in_shape: tuple[int, int, int, int], embed_dim: int = 192, depth: int = 6, heads: int = 3,
                 patch_size: int = 16, tubelet: int = 2):
        super().__init__()
        from timm.models.vision_transformer import Block

        c, t, h, w = in_shape
        if t % tubelet or h % patch_size or w % patch_size:
            raise ValueError(f"clips of {t} frames of {h}x{w} do not divide into tubelets of {tubelet}x{patch_size}x{patch_size} "
                             "(model.tubelet, model.patch_size)")
        self.tubelet_shape = (tubelet, patch_size, patch_size)
        self.in_channels, self.embed_dim = c, embed_dim
        self.grid = (t // tubelet, h // patch_size, w // patch_size)
        self.patch_embed = nn.Conv3d(c, embed_dim, self.tubelet_shape, stride=self.tubelet_shape)
        self.blocks = nn.Sequential(*[Block(embed_dim, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.grad_checkpointing = False
        self.register_buffer("pos", sincos_pos_embed(embed_dim, self.grid)[None], persistent=False)

    @property
    def patch_dim(self) -> int:
        """Values in one tubelet, ``t * p * p * C``: what MAE's decoder predicts per token."""
        return math.prod(self.tubelet_shape) * self.in_channels

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, N, t * p * p * C)`` in the order of ``tokens`` (VideoMAE's targets)."""
        return patchify(x, self.tubelet_shape)

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Tubelet tokens ``(B, N, D)`` after the final norm; with ``keep`` ``(B, K)`` only those
        enter the blocks (after their positions are added) and ``(B, K, D)`` comes out."""
        e = self.patch_embed(x)
        grid = tuple(e.shape[2:])
        pos = self.pos if grid == self.grid else sincos_pos_embed(self.embed_dim, grid)[None].to(e)
        t = e.flatten(2).transpose(1, 2) + pos
        if keep is not None:
            t = select(t, keep)
        return self.norm(run_blocks(self.blocks, t, self.grad_checkpointing))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).mean(dim=1)


class SmallCNN3d(nn.Module):
    """``(B, C, T, H, W) -> (B, embed_dim)``: 3-D conv-BN-ReLU blocks and global average pooling."""

    def __init__(self, in_channels: int, embed_dim: int, width: int = 32, depth: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            c_out = width * 2**i
            stride = (1, 1, 1) if i == 0 else (2 if i >= 2 else 1, 2, 2)
            layers += [nn.Conv3d(c, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        layers += [nn.Conv3d(c, embed_dim, 3, padding=1, bias=False), nn.BatchNorm3d(embed_dim), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3, 4))


class VideoResNet(nn.Module):
    """A torchvision video ResNet (``arch``: r3d_18, mc3_18 or r2plus1d_18), random weights, its
    stem taking ``in_channels``: ``(B, C, T, H, W) -> (B, 512)``."""

    ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")

    def __init__(self, arch: str, in_channels: int):
        super().__init__()
        from torchvision.models import video

        self.model = getattr(video, arch)(weights=None)
        stem = self.model.stem[0]
        if in_channels != stem.in_channels:
            self.model.stem[0] = nn.Conv3d(in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
        self.model.fc = nn.Identity()
        self.embed_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
