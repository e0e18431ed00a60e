"""Token masks, made at collate time as index tensors: I-JEPA's multi-block masks and MAE's
uniform random masks over a ViT's patch grid, T-JEPA's feature subsets over table columns, and
the signal JEPA's blocks of time patches.

I-JEPA multi-block masks:

Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023, https://arxiv.org/abs/2301.08243, sec. 3 and Appendix C, drawn as the
reference ``MaskCollator`` (facebookresearch/ijepa ``src/masks/multiblock.py``) draws them:

- one block size per batch for the targets and one for the context (so every sample masks the same
  amount), positions per sample. A size takes ONE uniform draw ``u``: scale ``s = lo + u (hi - lo)``
  and aspect ratio ``r = lo + u (hi - lo)`` move together; the block covers ``n = floor(s H W)``
  patches as ``h = round(sqrt(n r))`` by ``w = round(sqrt(n / r))``, each side kept below the
  grid's (``h < H``, ``w < W``: on 14x14 a context block is at most 13x13, never the whole image),
  and its top-left corner is uniform over ``[0, H - h) x [0, W - w)``;
- ``n_pred`` target blocks (scale ``pred_scale`` 0.15-0.2, aspect ``aspect_ratio`` 0.75-1.5; they
  may overlap each other), then one context block (scale ``enc_scale`` 0.85-1.0, aspect 1) with
  every target patch removed; a context must keep more than ``min_keep`` patches: its position is
  redrawn, and after every 20 failed draws one more target is no longer removed from it (the
  reference's relaxation, so a context may then overlap the last targets; on the paper's grid and
  settings this is rare);
- the index lists are cut to the shortest in the batch (contexts to the shortest context, target
  blocks to the shortest target block) so that they stack into ``(B, K)`` tensors, and all
  ``n_pred`` blocks go through the predictor as one batch.

On the 14x14 grid with the paper's settings (batches of 64) a context keeps 82 patches on average
(30-134), 54 after the batch's cut, a target block has 33 (30-40) and the four targets cover 87;
``tests/unit/test_masks.py`` pins these statistics, measured on the reference collator.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

MASK_MAKERS: dict[tuple[str, int], Callable] = {}
"""``(kind, dims)`` -> the class whose ``maker(grid, **params)`` draws ``kind`` masks over a
``dims``-D token grid: ``blocks`` (I-JEPA-style multi-blocks: ``context, [targets]``) and ``random``
(MAE-style uniform: ``visible, masked``). Each modality registers those of its own token grids
(``modalities/<name>.py``: images the 2-D ones below), so a masked method made for any grid asks
for a kind, not a class."""


def register_masks(kind: str, dims: int):
    """Decorator: the class draws ``kind`` masks over ``dims``-D token grids (see :data:`MASK_MAKERS`)."""

    def wrap(cls):
        if (kind, dims) in MASK_MAKERS:
            raise ValueError(f"{kind} masks over {dims}-D grids registered twice")
        MASK_MAKERS[kind, dims] = cls
        return cls

    return wrap


def mask_maker(kind: str, grid: tuple[int, ...], *args, **params):
    """The ``kind`` mask maker registered for ``grid``'s dimensionality, over ``grid``."""
    cls = MASK_MAKERS.get((kind, len(grid)))
    if cls is None:
        have = sorted(dims for k, dims in MASK_MAKERS if k == kind)
        raise ValueError(f"no {kind} masks over a {len(grid)}-D token grid {tuple(grid)}; registered for {have or 'no'} dimensions")
    return cls(tuple(grid), *args, **params)


class MultiBlockMasks:
    """``masks(batch_size, generator) -> (context (B, Kc), [target (B, Kt)] * n_pred)``, patch
    indices in ``[0, H * W)`` of a row-major ``(H, W)`` grid, sorted within each row."""

    relax_after = 20
    """Failed context draws after which one more target is no longer removed from the context."""

    def __init__(
        self,
        grid: tuple[int, int],
        enc_scale: tuple[float, float] = (0.85, 1.0),
        pred_scale: tuple[float, float] = (0.15, 0.2),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        n_pred: int = 4,
        min_keep: int = 4,
    ):
        self.height, self.width = grid
        self.enc_scale, self.pred_scale, self.aspect_ratio = enc_scale, pred_scale, aspect_ratio
        self.n_pred, self.min_keep = n_pred, min_keep

    def block_size(self, scale: tuple[float, float], aspect: tuple[float, float], generator=None) -> tuple[int, int]:
        """``(h, w)`` of a block: one uniform draw sets its scale and its aspect ratio ``h / w``."""
        u = float(torch.rand(1, generator=generator))
        n = int(self.height * self.width * (scale[0] + u * (scale[1] - scale[0])))
        ratio = aspect[0] + u * (aspect[1] - aspect[0])
        h = min(round(math.sqrt(n * ratio)), self.height - 1)
        w = min(round(math.sqrt(n / ratio)), self.width - 1)
        return max(1, h), max(1, w)

    def _place(self, h: int, w: int, generator=None) -> torch.Tensor:
        """A boolean ``(H, W)`` mask of one ``h x w`` block at a random position."""
        top = int(torch.randint(0, max(1, self.height - h), (1,), generator=generator))
        left = int(torch.randint(0, max(1, self.width - w), (1,), generator=generator))
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        mask[top : top + h, left : left + w] = True
        return mask

    def _context(self, enc_hw, targets: list[torch.Tensor], generator=None) -> torch.Tensor:
        """A context block without the target patches, redrawn until it keeps more than ``min_keep``."""
        dropped, failures = 0, 0
        while True:
            context = self._place(*enc_hw, generator=generator)
            for target in targets[: max(0, len(targets) - dropped)]:
                context &= ~target
            if int(context.sum()) > self.min_keep:
                return context
            failures += 1
            if failures == self.relax_after:
                dropped, failures = dropped + 1, 0

    def draw(self, batch_size: int, generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Per sample, before the batch's cut: ``(context indices, [target block indices] * n_pred)``."""
        pred_hw = self.block_size(self.pred_scale, self.aspect_ratio, generator)
        enc_hw = self.block_size(self.enc_scale, (1.0, 1.0), generator)
        if enc_hw[0] * enc_hw[1] <= self.min_keep:
            raise RuntimeError(
                f"no context of at least {self.min_keep + 1} patches fits a {enc_hw[0]}x{enc_hw[1]} context block on a "
                f"{self.height}x{self.width} grid; lower min_keep or raise enc_scale"
            )
        samples = []
        for _ in range(batch_size):
            targets = [self._place(*pred_hw, generator=generator) for _ in range(self.n_pred)]
            context = self._context(enc_hw, targets, generator)
            samples.append((context.flatten().nonzero().squeeze(1), [t.flatten().nonzero().squeeze(1) for t in targets]))
        return samples

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        samples = self.draw(batch_size, generator)
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


def over_time(idx: torch.Tensor, frames: int, plane: int) -> torch.Tensor:
    """Spatial patch indices ``(B, K)`` of an ``(H, W)`` grid (``plane = H * W``) extended through
    every time step of a ``(T, H, W)`` grid: ``(B, T * K)``, row-major, sorted where ``idx`` is."""
    return (torch.arange(frames)[None, :, None] * plane + idx[:, None, :]).flatten(1)


class TubeMasks:
    """VideoMAE's tube masking (Tong et al., NeurIPS 2022, https://arxiv.org/abs/2203.12602, sec.
    3.3): MAE's uniform random mask of ``ratio`` of the ``H * W`` spatial patches (90% in the
    paper), the same at every time step, so a hidden patch cannot be copied from its neighbour in
    time. ``masks(batch_size) -> (visible (B, T * (N - M)), masked (B, T * M))`` over a
    ``(T, H, W)`` grid, row-major."""

    def __init__(self, grid: tuple[int, int, int], ratio: float = 0.9):
        self.frames, self.plane = grid[0], grid[1] * grid[2]
        self.spatial = RandomPatchMasks(grid[1:], ratio)

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        visible, masked = self.spatial(batch_size, generator)
        return over_time(visible, self.frames, self.plane), over_time(masked, self.frames, self.plane)


class SpatioTemporalBlocks:
    """V-JEPA's spatio-temporal multi-block masks (Bardes et al., 2024, https://arxiv.org/abs/2404.08471,
    sec. 3.2; reference ``src/masks/multiblock3d.py`` of facebookresearch/jepa, ``temporal_scale``
    1.0): I-JEPA's blocks drawn on the ``(H, W)`` plane (:class:`MultiBlockMasks`, same parameters)
    and extended through the whole clip, so the predictor cannot fill a target from the same place
    a frame earlier. ``masks(batch_size) -> (context, [target] * n_pred)`` over a ``(T, H, W)``
    grid; ``min_keep`` counts patches of the whole clip. V-JEPA's context is every tube outside the
    targets; here it is I-JEPA's context block (``enc_scale``, at most one row and column short of
    the plane) without them, the same with ``enc_scale`` ``(1, 1)`` but for that row and column.
    V-JEPA's mix of 8 small and 2 large target blocks is two draws of ``pred_scale`` there."""

    def __init__(self, grid: tuple[int, int, int], enc_scale=(0.85, 1.0), pred_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5),
                 n_pred: int = 4, min_keep: int = 4):
        self.frames, self.plane = grid[0], grid[1] * grid[2]
        self.spatial = MultiBlockMasks(grid[1:], enc_scale, pred_scale, aspect_ratio, n_pred, max(1, min_keep // grid[0]))

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        context, targets = self.spatial(batch_size, generator)
        return over_time(context, self.frames, self.plane), [over_time(t, self.frames, self.plane) for t in targets]
