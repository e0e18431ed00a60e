"""Projection heads ("projector" in SimCLR, "expander" in VICReg)."""

from __future__ import annotations

from torch import nn


def projector(in_dim: int, dims: list[int]) -> nn.Sequential:
    """MLP ``in_dim -> dims[0] -> ... -> dims[-1]``: Linear-BN-ReLU for hidden layers, a plain last
    Linear, as in SimCLR (Chen et al., 2020, sec. 2.1) and VICReg's expander (Bardes et al., 2022)."""
    layers, d = [], in_dim
    for width in dims[:-1]:
        layers += [nn.Linear(d, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        d = width
    layers.append(nn.Linear(d, dims[-1]))
    return nn.Sequential(*layers)


class Projected(nn.Module):
    """``head(backbone(x))``: the target or momentum encoder of BYOL and MoCo v3."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(self.backbone(x))
