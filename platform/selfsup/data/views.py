"""Two-view augmentation for small images, applied to whole batches at collate time.

Each view is a random resized crop (area fraction ``scale``, aspect ratio ``ratio``), an optional
horizontal flip and additive Gaussian noise, as in SimCLR's recipe cut down to small grey images.
Crops are one batched ``affine_grid``/``grid_sample`` call, so a batch of ``(B, C, H, W)`` costs
two small kernels instead of ``B`` Python-level transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RandomViews:
    """Make ``n_views`` independently augmented copies of a batch ``(B, C, H, W)``."""

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (0.75, 4 / 3),
        flip: bool = False,
        noise_std: float = 0.05,
        n_views: int = 2,
    ):
        self.scale, self.ratio, self.flip, self.noise_std, self.n_views = scale, ratio, flip, noise_std, n_views

    def crop_params(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Affine matrices ``(B, 2, 3)`` mapping output to input coordinates in [-1, 1]."""
        u = torch.rand(batch, 5, generator=generator)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * u[:, 1]
        aspect = torch.exp(log_r)
        w = torch.sqrt(area * aspect).clamp(max=1.0)
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (1 - w) * (2 * u[:, 2] - 1)
        cy = (1 - h) * (2 * u[:, 3] - 1)
        sign = torch.where((u[:, 4] < 0.5) & self.flip, -1.0, 1.0)
        theta = torch.zeros(batch, 2, 3)
        theta[:, 0, 0] = w * sign
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        return theta

    def view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        theta = self.crop_params(x.shape[0], generator).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.noise_std > 0:
            out = out + self.noise_std * torch.randn(out.shape, generator=generator).to(out)
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [self.view(x, generator) for _ in range(self.n_views)]


class ViewCollate:
    """``collate_fn`` that stacks samples ``(x, ...)`` and returns ``{"views": [view, ...]}``."""

    def __init__(self, views: RandomViews):
        self.views = views

    def __call__(self, samples: list[tuple[torch.Tensor, ...]]) -> dict:
        x = torch.stack([s[0] for s in samples])
        return {"views": self.views(x)}
