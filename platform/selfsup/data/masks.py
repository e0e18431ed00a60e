"""Token masks, made at collate time as index tensors: I-JEPA's multi-block masks and MAE's
uniform random masks over a ViT's patch grid, T-JEPA's feature subsets over table columns, and
the signal JEPA's blocks of time patches.

I-JEPA multi-block masks:

Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023, https://arxiv.org/abs/2301.08243, sec. 3 and Appendix C (and the
reference ``MaskCollator`` in facebookresearch/ijepa ``src/masks/multiblock.py``):

- ``n_pred`` target blocks, each covering a fraction ``pred_scale`` (0.15-0.2) of the grid with
  aspect ratio in ``aspect_ratio`` (0.75-1.5); targets may overlap each other;
- one context block of scale ``enc_scale`` (0.85-1.0) and aspect ratio 1, from which every target
  patch is removed, so context and targets never overlap;
- one block size per batch (so every sample masks the same amount), positions per sample; the
  index lists are cut to the shortest in the batch (contexts to the shortest context, target blocks
  to the shortest target block, as the reference collator does) so that they stack into ``(B, K)``
  tensors and all ``n_pred`` blocks go through the predictor as one batch; a context keeps at
  least ``min_keep`` patches (a sample is redrawn until it does).
"""

from __future__ import annotations

import math

import torch


class MultiBlockMasks:
    """``masks(batch_size, generator) -> (context (B, Kc), [target (B, Kt)] * n_pred)``, patch
    indices in ``[0, H * W)`` of a row-major ``(H, W)`` grid, sorted within each row."""

    def __init__(
        self,
        grid: tuple[int, int],
        enc_scale: tuple[float, float] = (0.85, 1.0),
        pred_scale: tuple[float, float] = (0.15, 0.2),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        n_pred: int = 4,
        min_keep: int = 4,
        max_tries: int = 50,
    ):
        self.height, self.width = grid
        self.enc_scale, self.pred_scale, self.aspect_ratio = enc_scale, pred_scale, aspect_ratio
        self.n_pred, self.min_keep, self.max_tries = n_pred, min_keep, max_tries

    def block_size(self, scale: tuple[float, float], aspect: tuple[float, float], generator=None) -> tuple[int, int]:
        """``(h, w)`` of a block with area ``~ U(scale) * H * W`` and ``h / w ~ U(aspect)``, fitted in the grid."""
        u = torch.rand(2, generator=generator)
        area = (scale[0] + (scale[1] - scale[0]) * float(u[0])) * self.height * self.width
        ratio = aspect[0] + (aspect[1] - aspect[0]) * float(u[1])
        h = max(1, min(self.height, round(math.sqrt(area * ratio))))
        w = max(1, min(self.width, round(math.sqrt(area / ratio))))
        return h, w

    def _place(self, h: int, w: int, generator=None) -> torch.Tensor:
        """A boolean ``(H, W)`` mask of one ``h x w`` block at a random position."""
        top = int(torch.randint(0, self.height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, self.width - w + 1, (1,), generator=generator))
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        mask[top : top + h, left : left + w] = True
        return mask

    def _sample(self, pred_hw, enc_hw, generator=None):
        for _ in range(self.max_tries):
            targets = [self._place(*pred_hw, generator=generator) for _ in range(self.n_pred)]
            covered = torch.stack(targets).any(dim=0)
            context = self._place(*enc_hw, generator=generator) & ~covered
            if int(context.sum()) >= self.min_keep:
                return context.flatten().nonzero().squeeze(1), [t.flatten().nonzero().squeeze(1) for t in targets]
        raise RuntimeError(
            f"no context of at least {self.min_keep} patches left after {self.max_tries} tries on a "
            f"{self.height}x{self.width} grid; lower min_keep or pred_scale"
        )

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        pred_hw = self.block_size(self.pred_scale, self.aspect_ratio, generator)
        enc_hw = self.block_size(self.enc_scale, (1.0, 1.0), generator)
        samples = [self._sample(pred_hw, enc_hw, generator) for _ in range(batch_size)]
        keep_ctx = min(len(c) for c, _ in samples)
        context = torch.stack([c[:keep_ctx] for c, _ in samples])
        keep_pred = min(len(block) for _, t in samples for block in t)
        targets = [torch.stack([t[i][:keep_pred] for _, t in samples]) for i in range(self.n_pred)]
        return context, targets


class RandomPatchMasks:
    """MAE's masking (He et al., CVPR 2022, https://arxiv.org/abs/2111.06377, sec. 3): per sample,
    a uniformly random ``ratio`` of the ``H * W`` patches is hidden (75% by default).

    ``masks(batch_size, generator) -> (visible (B, N - M), masked (B, M))``, ``M = round(ratio * N)``,
    indices sorted within each row; every sample hides exactly ``M`` patches.
    """

    def __init__(self, grid: tuple[int, int], ratio: float = 0.75):
        self.n = grid[0] * grid[1]
        self.n_masked = min(self.n - 1, max(1, round(ratio * self.n)))

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        order = torch.rand(batch_size, self.n, generator=generator).argsort(dim=1)
        visible, masked = order[:, : self.n - self.n_masked], order[:, self.n - self.n_masked :]
        return visible.sort(dim=1).values, masked.sort(dim=1).values


class FeatureMasks:
    """T-JEPA's masks over the ``F`` columns of a table (Thimonier et al.,
    https://arxiv.org/abs/2410.05016, sec. 3.2; reference ``MaskCollator``): per batch, a context
    size ``round(F * U(context_share))`` and a target size ``round(F * U(target_share))``; per
    sample, a random context subset and ``n_pred`` random target subsets of the columns left out of
    the context (targets may overlap each other, never the context).

    ``masks(batch_size, generator) -> (context (B, Kc), [target (B, Kt)] * n_pred)``, column
    indices sorted within each row.
    """

    def __init__(self, n_features: int, context_share=(0.2, 0.4), target_share=(0.2, 0.4), n_pred: int = 4):
        if n_features < 2:
            raise ValueError(f"T-JEPA needs a table of at least 2 columns, got {n_features}")
        self.n, self.context_share, self.target_share, self.n_pred = n_features, context_share, target_share, n_pred

    def _size(self, share, generator) -> int:
        u = float(torch.rand(1, generator=generator))
        return max(1, round(self.n * (share[0] + (share[1] - share[0]) * u)))

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        k_ctx = min(self._size(self.context_share, generator), self.n - 1)
        k_tgt = min(self._size(self.target_share, generator), self.n - k_ctx)
        order = torch.rand(batch_size, self.n, generator=generator).argsort(dim=1)
        context, rest = order[:, :k_ctx].sort(dim=1).values, order[:, k_ctx:]
        targets = []
        for _ in range(self.n_pred):
            pick = torch.rand(rest.shape, generator=generator).argsort(dim=1)[:, :k_tgt]
            targets.append(rest.gather(1, pick).sort(dim=1).values)
        return context, targets


class TimeBlockMasks:
    """The signal JEPA's masks over ``N`` time patches (Weimann & Conrad,
    https://arxiv.org/abs/2410.13867, sec. 3; reference ``MaskCollator``): per batch, the context
    keeps ``ceil(N * U(keep))`` patches (15-25 %); per sample, the other patches are hidden in
    contiguous blocks of at least ``min_block`` patches (a shorter remainder joins a block), placed
    at random positions; every hidden patch is a prediction target.

    ``masks(batch_size, generator) -> (context (B, K), [target (B, N - K)])``, sorted patch indices.
    """

    def __init__(self, n_patches: int, keep=(0.15, 0.25), min_block: int = 10):
        if n_patches < 2:
            raise ValueError(f"the signal JEPA needs at least 2 time patches, got {n_patches}")
        self.n, self.keep, self.min_block = n_patches, keep, min_block

    def _blocks(self, n_masked: int, generator) -> list[int]:
        sizes, left = [], n_masked
        while left:
            size = left
            if left >= 2 * self.min_block:
                size = int(torch.randint(self.min_block, left + 1, (1,), generator=generator))
                if left - size < self.min_block:
                    size = left
            sizes.append(size)
            left -= size
        return sizes

    def sample(self, n_keep: int, generator=None) -> torch.Tensor:
        """A boolean ``(N,)`` mask, True on the hidden patches."""
        sizes = self._blocks(self.n - n_keep, generator)
        sizes = [sizes[i] for i in torch.randperm(len(sizes), generator=generator)]
        cuts = torch.randint(0, n_keep + 1, (len(sizes),), generator=generator).sort().values.tolist()
        gaps = [b - a for a, b in zip([0, *cuts], cuts)]
        hidden, at = torch.zeros(self.n, dtype=torch.bool), 0
        for gap, size in zip(gaps, sizes):
            hidden[at + gap : at + gap + size] = True
            at += gap + size
        return hidden

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        u = float(torch.rand(1, generator=generator))
        n_keep = min(self.n - 1, max(1, math.ceil(self.n * (self.keep[0] + (self.keep[1] - self.keep[0]) * u))))
        hidden = torch.stack([self.sample(n_keep, generator) for _ in range(batch_size)])
        order = torch.arange(self.n).expand(batch_size, -1)
        return order[~hidden].view(batch_size, n_keep), [order[hidden].view(batch_size, self.n - n_keep)]
