"""Small backbones for small inputs. Each maps ``(B, C, H, W)`` to a representation ``(B, embed_dim)``.

- ``cnn``: ``depth`` 3x3 conv-BN-ReLU blocks (channels ``width * 2**i``, stride 2 after the first),
  a last conv to ``embed_dim`` channels and global average pooling.
- ``mlp``: flatten, ``depth - 1`` Linear-BN-ReLU layers of ``width`` units, a Linear to ``embed_dim``.
"""

from __future__ import annotations

import math

from torch import nn

BACKBONES = {
    "cnn": "small conv net: conv-BN-ReLU blocks, stride-2 downsampling, global average pool",
    "mlp": "multilayer perceptron on flattened inputs",
}


def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, width: int = 32, depth: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            c_out = width * 2**i
            layers.append(_conv(c, c_out, stride=1 if i == 0 else 2))
            c = c_out
        layers.append(_conv(c, embed_dim, stride=1))
        self.features = nn.Sequential(*layers)
        self.embed_dim = embed_dim

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


class MLP(nn.Module):
    def __init__(self, in_features: int, embed_dim: int, width: int = 512, depth: int = 3):
        super().__init__()
        layers, d = [nn.Flatten()], in_features
        for _ in range(depth - 1):
            layers += [nn.Linear(d, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            d = width
        layers.append(nn.Linear(d, embed_dim))
        self.net = nn.Sequential(*layers)
        self.embed_dim = embed_dim

    def forward(self, x):
        return self.net(x)


def build_backbone(name: str, in_shape: tuple[int, ...], embed_dim: int, width: int, depth: int) -> nn.Module:
    """Build a backbone for inputs of shape ``in_shape = (C, H, W)``; ``.embed_dim`` gives its output size."""
    if name == "cnn":
        return SmallCNN(in_shape[0], embed_dim, width, depth)
    if name == "mlp":
        return MLP(math.prod(in_shape), embed_dim, width, depth)
    raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
