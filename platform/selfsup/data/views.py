"""Augmented views, made at collate time: the per-method recipes of the papers (torchvision v2)
and a batched light recipe for tiny grey images.

Recipes (``data.views``; ``auto`` takes the method's own):

- ``simclr``: random resized crop (0.08-1), flip, colour jitter (0.8s, 0.8s, 0.8s, 0.2s) with
  p=0.8, grayscale p=0.2, Gaussian blur p=0.5 — Chen et al. 2020, Appendix A;
- ``byol``: crop, flip, jitter (0.4s, 0.4s, 0.2s, 0.1s) p=0.8, grayscale p=0.2, and asymmetric
  blur (p=1.0 / 0.1) and solarize (p=0 / 0.2) — Grill et al. 2020, Table 6; also used by MoCo v3,
  VICReg and Barlow Twins;
- ``dino``: the two BYOL views as global crops (0.4-1) plus ``local_crops`` small crops
  (0.05-0.4) at ``local_size`` pixels (96/224 of the image) with blur p=0.5 — Caron et al. 2021, sec. 3.1;
- ``crop``: one random resized crop (0.3-1), nothing else — I-JEPA (Assran et al. 2023, sec. 4);
- ``mae``: one random resized crop (0.2-1) and flip — He et al. 2022, sec. 4 / Appendix A.1;
- ``light``: batched random resized crop (0.5-1), optional flip and Gaussian noise: one
  ``affine_grid``/``grid_sample`` call per batch, for 8x8-32x32 grey images where colour
  distortion means nothing and per-sample transforms would dominate the step time;
- ``scarf`` (tables ``(F,)``): the first view is the row itself, the second replaces a random
  ``corruption_rate`` of its features by values drawn from each feature's empirical marginal
  (the training rows) — SCARF, Bahri et al., ICLR 2022, https://arxiv.org/abs/2106.15147, sec. 2;
- ``signal`` (1-D signals ``(C, T)``): a random crop of a fraction ``crop_scale`` of the length,
  resampled to ``T``, amplitude scaling, Gaussian jitter and channel dropout, batched — the
  time-series views of e.g. Um et al. 2017 and the ECG SSL literature.

The blur kernel is 10% of the image side (odd, at least 3), sigma in [0.1, 2.0] as in SimCLR.
The paper recipes are applied per sample and draw from torch's global generator, which the
worker reseeds every epoch, so a resumed run replays the same views.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, Dataset, Sampler

from selfsup.data.batch_views import BatchViews, Pipeline, crop_theta
from selfsup.data.splits import DataError, Skipped

RECIPES = {
    "light": "batched crop, flip, noise (tiny grey images)",
    "simclr": "SimCLR: crop, flip, strong colour jitter, grayscale, blur",
    "byol": "BYOL: crop, flip, jitter, grayscale, asymmetric blur and solarize",
    "dino": "DINO multi-crop: two BYOL global crops plus small local crops",
    "crop": "I-JEPA: one random resized crop",
    "mae": "MAE: one random resized crop and flip",
    "signal": "1-D signals: crop and resample, amplitude scaling, jitter, channel dropout",
    "scarf": "tables: the row, and the row with features replaced from their marginals",
    "none": "no augmentation: the samples as they are (T-JEPA, signal JEPA)",
}
DEFAULT_SCALE = {"signal": (0.6, 1.0), "light": (0.5, 1.0), "simclr": (0.08, 1.0), "byol": (0.08, 1.0), "dino": (0.4, 1.0), "crop": (0.3, 1.0), "mae": (0.2, 1.0)}
DEFAULT_FLIP = {"light": False, "crop": False}


class Unchanged:
    """``n_views`` references to the batch itself: the JEPAs that need no augmentation."""

    def __init__(self, n_views: int):
        self.n_views = n_views

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x] * self.n_views


class RandomViews:
    """Make ``n_views`` independently augmented copies of a batch ``(B, C, H, W)`` with batched ops."""

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
        return crop_theta(torch.rand(batch, 5, generator=generator), self.scale, self.ratio, self.flip)

    def view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        theta = self.crop_params(x.shape[0], generator).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.noise_std > 0:
            out = out + self.noise_std * torch.randn(out.shape, generator=generator).to(out)
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [self.view(x, generator) for _ in range(self.n_views)]


class SignalViews:
    """Make ``n_views`` augmented copies of a batch of signals ``(B, C, T)`` with batched ops:
    crop ``U(scale) * T`` samples at a random start and resample them to ``T`` (linear), multiply
    each sample by ``U(amplitude)``, add ``N(0, noise_std)``, and zero each channel with
    probability ``channel_dropout`` (never all channels of a sample)."""

    def __init__(self, scale=(0.6, 1.0), amplitude=(0.8, 1.25), noise_std: float = 0.05, channel_dropout: float = 0.0, n_views: int = 2):
        self.scale, self.amplitude, self.noise_std = scale, amplitude, noise_std
        self.channel_dropout, self.n_views = channel_dropout, n_views

    def view(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        u = torch.rand(b, 3)
        length = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        start = (1 - length) * u[:, 1]
        pos = start[:, None] + length[:, None] * torch.linspace(0, 1, t)[None]  # (B, T) in [0, 1]
        grid = torch.stack([pos * 2 - 1, torch.zeros_like(pos)], dim=-1)[:, None].to(x)  # (B, 1, T, 2)
        out = F.grid_sample(x[:, :, None], grid, mode="bilinear", align_corners=True)[:, :, 0]
        gain = self.amplitude[0] + (self.amplitude[1] - self.amplitude[0]) * u[:, 2]
        out = out * gain[:, None, None].to(x)
        if self.noise_std > 0:
            out = out + self.noise_std * torch.randn_like(out)
        if self.channel_dropout > 0 and c > 1:
            keep = torch.rand(b, c) >= self.channel_dropout
            keep[keep.sum(dim=1) == 0, torch.randint(0, c, (1,))] = True
            out = out * keep[:, :, None].to(x)
        return out

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.view(x) for _ in range(self.n_views)]


class CorruptionViews:
    """SCARF views of a batch of rows ``(B, F)``: ``[x, x_tilde]`` where each feature of
    ``x_tilde`` is, with probability ``rate``, replaced by the same feature of a random row of
    ``pool`` ``(N, F)`` (a draw from that feature's empirical marginal)."""

    def __init__(self, pool: torch.Tensor, rate: float = 0.6):
        self.pool, self.rate = pool, rate

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, f = x.shape
        corrupt = torch.rand(b, f) < self.rate
        donors = self.pool[torch.randint(0, len(self.pool), (b, f)), torch.arange(f)]
        return [x, torch.where(corrupt, donors.to(x), x)]


class SampleViews:
    """One torchvision v2 pipeline per output view, each applied to every sample of ``(B, C, H, W)``."""

    def __init__(self, pipelines: list[Callable[[torch.Tensor], torch.Tensor]]):
        self.pipelines = pipelines

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([p(xi) for xi in x]) for p in self.pipelines]


def blur_kernel(size: int) -> int:
    """10% of the image side, odd, at least 3 (SimCLR's blur)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def paper_pipelines(
    recipe: str, size: int, n_views: int, scale, ratio, flip: bool, color_strength: float,
    local_crops: int = 0, local_scale=(0.05, 0.4), local_size: int | None = None,
) -> list[Pipeline]:
    """The per-view recipes of ``simclr``, ``byol``, ``dino``, ``crop`` and ``mae`` (see the module
    docstring): what :func:`torchvision_pipeline` and :class:`~selfsup.data.batch_views.BatchViews` build."""
    crop = dict(size=size, scale=tuple(scale), ratio=tuple(ratio), flip=flip)
    if recipe in ("crop", "mae"):
        return [Pipeline(**crop)] * n_views

    def jitter(strengths):
        return tuple(color_strength * j for j in strengths) if color_strength > 0 else None

    if recipe == "simclr":
        return [Pipeline(**crop, jitter=jitter((0.8, 0.8, 0.8, 0.2)), blur_p=0.5, blur_kernel=blur_kernel(size))] * n_views
    byol = jitter((0.4, 0.4, 0.2, 0.1))
    first = Pipeline(**crop, jitter=byol, blur_p=1.0, blur_kernel=blur_kernel(size))
    second = Pipeline(**crop, jitter=byol, blur_p=0.1, blur_kernel=blur_kernel(size), solarize_p=0.2)
    pipelines = [(first, second)[i % 2] for i in range(n_views)]
    if recipe == "dino" and local_crops:
        small = local_size or max(4, round(size * 96 / 224))
        local = Pipeline(small, tuple(local_scale), tuple(ratio), flip, byol, blur_p=0.5, blur_kernel=blur_kernel(small))
        pipelines += [local] * local_crops
    return pipelines


def torchvision_pipeline(p: Pipeline, channels: int):
    """``p`` as a torchvision v2 pipeline applied to one sample ``(C, H, W)``."""
    from torchvision.transforms import v2  # here: runs on signals and tables do not pay for its import

    out = [v2.RandomResizedCrop(p.size, scale=p.scale, ratio=p.ratio, antialias=True)]
    if p.flip:
        out.append(v2.RandomHorizontalFlip())
    if p.jitter is not None:
        b, c, s, h = p.jitter
        rgb = channels == 3
        out.append(v2.RandomApply([v2.ColorJitter(b, c, s if rgb else 0, min(h, 0.5) if rgb else 0)], p=p.jitter_p))
        if rgb:
            out.append(v2.RandomGrayscale(p=p.gray_p))
    if p.blur_p > 0:
        out.append(v2.RandomApply([v2.GaussianBlur(p.blur_kernel, sigma=(0.1, 2.0))], p=p.blur_p))
    if p.solarize_p > 0:
        out.append(v2.RandomSolarize(0.5, p=p.solarize_p))
    return v2.Compose(out)


def build_views(
    recipe: str,
    shape: tuple[int, int, int],
    n_views: int,
    crop_scale: tuple[float, float] | None = None,
    crop_ratio: tuple[float, float] = (0.75, 4 / 3),
    flip: bool | None = None,
    noise_std: float = 0.05,
    color_strength: float = 1.0,
    local_crops: int = 6,
    local_scale: tuple[float, float] = (0.05, 0.4),
    local_size: int | None = None,
    amplitude: tuple[float, float] = (0.8, 1.25),
    channel_dropout: float = 0.0,
    pool: torch.Tensor | None = None,
    corruption_rate: float = 0.6,
    batched: bool = False,
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The view maker of ``recipe`` for images ``(C, H, W)``, signals ``(C, T)`` (``signal``) or
    table rows ``(F,)`` (``scarf``, which draws replacements from ``pool``, the training rows): a
    batch -> list of views, ``n_views`` of the full size (plus ``local_crops`` small ones for ``dino``).
    ``batched``: the paper recipes as batched tensor ops that run on the batch's device
    (:mod:`selfsup.data.batch_views`) instead of torchvision per sample."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown view recipe {recipe!r}; available: {', '.join(RECIPES)}")
    if recipe == "none":
        return Unchanged(n_views)
    if recipe == "scarf":
        return CorruptionViews(pool, corruption_rate)
    channels, size = shape[0], shape[1]
    scale = tuple(crop_scale or DEFAULT_SCALE[recipe])
    flip = DEFAULT_FLIP.get(recipe, True) if flip is None else flip
    if recipe == "signal":
        return SignalViews(scale, amplitude, noise_std, channel_dropout, n_views)
    if recipe == "light":
        return RandomViews(scale, crop_ratio, flip, noise_std, n_views)
    pipelines = paper_pipelines(recipe, size, n_views, scale, crop_ratio, flip, color_strength, local_crops, local_scale, local_size)
    if batched:
        return BatchViews(pipelines)
    return SampleViews([torchvision_pipeline(p, channels) for p in pipelines])


class SeededBatch(list):
    """A batch's sample indices, and the seed its views and masks are drawn with; once read
    (:class:`SeededSamples`), its samples, with the indices they were read at."""

    seed: int | None = None
    indices: list[int] | None = None


class SeededBatches(BatchSampler):
    """Batches of ``sampler``'s indices, each a :class:`SeededBatch` whose seed is a function of
    ``(seed, epoch, batch)``: the views and masks of a batch do not depend on which DataLoader
    process makes them, how many there are, nor what they drew before (persistent processes are
    seeded once, when they start), so a run resumed at an epoch replays its views exactly.
    ``set_epoch`` also sets the sampler's (a ``DistributedSampler``)."""

    def __init__(self, sampler, batch_size: int, seed: int, drop_last: bool = True):
        super().__init__(sampler, batch_size, drop_last)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        for b, indices in enumerate(super().__iter__()):
            batch = SeededBatch(indices)
            batch.seed = int(np.random.SeedSequence([self.seed, self.epoch, b]).generate_state(1)[0])
            yield batch


class DistinctGroups(Sampler):
    """This worker's sample indices for global batches of ``batch_size`` samples of ``batch_size``
    different groups each (G-SimCLR's batches: no two images of one pseudo-label). Each epoch every
    group's samples are shuffled (seeded by ``(seed, epoch)``, the same on every worker); each
    global batch takes the next sample of each of the ``batch_size`` groups with the most left
    (ties broken at random), which keeps the groups even so that as many batches as possible are
    made; the samples left when fewer than ``batch_size`` groups still have some are not used that
    epoch. Worker ``rank`` of ``num_replicas`` gets its share of every global batch, in order, so
    :class:`SeededBatches` of ``batch_size / num_replicas`` cuts them back into batches."""

    def __init__(self, groups: torch.Tensor, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        groups = groups.cpu().numpy()
        sizes = np.bincount(groups)
        if (sizes > 0).sum() < batch_size:
            raise ValueError(f"batches of {batch_size} samples of different groups need {batch_size} groups; the samples fall in {(sizes > 0).sum()}")
        self.members = [np.flatnonzero(groups == g) for g in range(len(sizes)) if sizes[g]]
        self.batch_size, self.num_replicas, self.rank, self.seed, self.epoch = batch_size, num_replicas, rank, seed, 0
        self.batches = self._count(np.array([len(m) for m in self.members]))

    def _count(self, left: np.ndarray) -> int:
        """Global batches an epoch makes: taking one from the ``batch_size`` largest groups, as
        long as that many have samples left (the same for any tie-breaking)."""
        left, made = left.copy(), 0
        while (left > 0).sum() >= self.batch_size:
            left[np.argsort(-left, kind="stable")[: self.batch_size]] -= 1
            made += 1
        return made

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        queues = [list(rng.permutation(m)) for m in self.members]
        left = np.array([len(q) for q in queues])
        batches = []
        for _ in range(self.batches):
            chosen = np.lexsort((rng.random(len(left)), -left))[: self.batch_size]
            batches.append(np.array([queues[g].pop() for g in chosen]))
            left[chosen] -= 1
        return batches

    def __iter__(self):
        share = self.batch_size // self.num_replicas
        for batch in self.global_batches():
            yield from batch[self.rank * share:(self.rank + 1) * share].tolist()

    def __len__(self) -> int:
        return self.batches * (self.batch_size // self.num_replicas)


class SeededSamples(Dataset):
    """``dataset`` read a batch at a time (``__getitems__``, as the DataLoader does): the samples of
    a :class:`SeededBatch` come back as one, with its seed, for :class:`ViewCollate`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]

    def __getitems__(self, indices: list) -> SeededBatch:
        items = getattr(self.dataset, "items", None)  # a streamed dataset reads a batch together
        batch = SeededBatch(items(indices) if items else (self.dataset[i] for i in indices))
        batch.seed, batch.indices = getattr(indices, "seed", None), list(indices)
        return batch


class ViewCollate:
    """``collate_fn``: stacks samples ``x`` or ``(x, ...)`` into ``(B, C, H, W)`` and returns
    ``{"views": [view, ...]}`` plus whatever ``masks(B)`` returns (index tensors for JEPA/MAE),
    and, for samples read by :class:`SeededSamples`, their indices in the dataset ``"index": (B,)``
    (InterCLR's memory bank, G-SimCLR's pseudo-labels). Samples a streamed dataset could not read
    (:class:`~selfsup.data.splits.Skipped`) are left out of the batch and listed under ``"skipped"``. A :class:`SeededBatch` of samples is made
    with torch's generator seeded by its seed (and the caller's stream left as it was); any other
    list draws from the caller's stream."""

    def __init__(self, views: Callable[[torch.Tensor], list[torch.Tensor]], masks: Callable[[int], dict] | None = None):
        self.views, self.masks = views, masks

    def __call__(self, samples: list) -> dict:
        seed = getattr(samples, "seed", None)
        if seed is None:
            return self.collate(samples)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.collate(samples)

    def collate(self, samples: list) -> dict:
        indices = getattr(samples, "indices", None)
        skipped = [s for s in samples if isinstance(s, Skipped)]
        if indices is not None:
            indices = [i for i, s in zip(indices, samples) if not isinstance(s, Skipped)]
        samples = [s for s in samples if not isinstance(s, Skipped)]
        if not samples:
            raise DataError(f"{skipped[0].file}: every file of a batch of {len(skipped)} was unreadable ({skipped[0].reason})")
        x = torch.stack([s if torch.is_tensor(s) else s[0] for s in samples])
        batch = {"views": self.views(x)}
        if indices is not None:
            batch["index"] = torch.tensor(indices, dtype=torch.long)
        if skipped:
            batch["skipped"] = skipped
        if self.masks is not None:
            batch.update(self.masks(len(samples)))
        return batch


class EncodedCollate(ViewCollate):
    """``collate_fn`` of ``data.decode_on: device``: a batch of ``(encoded bytes, name)`` samples
    (``selfsup.data.datasets.EncodedImages``) as ``{"encoded": [(L,) uint8, ...], "names": [...]}``
    plus the method's masks; the worker decodes the images and makes the views on its device."""

    def __init__(self, masks: Callable[[int], dict] | None = None):
        super().__init__(Unchanged(1), masks)

    def collate(self, samples: list) -> dict:
        batch = {"encoded": [s[0] for s in samples], "names": [s[1] for s in samples]}
        if self.masks is not None:
            batch.update(self.masks(len(samples)))
        return batch
