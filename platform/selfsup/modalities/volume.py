"""3-D volumes ``(C, D, H, W)`` (CT, MRI): the whole modality in this file.

Datasets:

- ``synthetic_volumes``: generated offline, deterministic by ``data.split_seed``. Each volume holds
  one object of four classes (a solid ball, a box, a rod along a random axis, a hollow shell) of
  random size, place and contrast, on a smooth random intensity ramp (a bias field, as MRI has)
  with Gaussian noise of random strength; the label is the class. The classes differ in shape
  only: size, place, contrast and noise vary within every class, so raw voxels separate them
  poorly and a translation-invariant 3-D feature well.
- ``volume_npz``: your volumes in an ``.npz`` (``x`` ``(N, D, H, W)`` or ``(N, C, D, H, W)``,
  optional ``y``, ``x_test``, ``y_test``).
- ``nifti``: NIfTI files (``.nii``, ``.nii.gz``, read with nibabel) in class subfolders (or none),
  each resampled (trilinear) to a ``data.volume_size`` cube and its intensities scaled to [0, 1]
  between its 0.5th and 99.5th percentiles (CT's Hounsfield units and MRI's arbitrary units alike);
  a 4-D file's last axis is its channels. Streamed file by file with ``data.stream``.

Views (one draw per volume, as batched tensor ops at collate time): the ``volume`` recipe is a
3-D random resized crop (volume fraction ``data.crop_scale``, default 0.3-1, the three sides'
ratios within ``data.crop_ratio``) back to the volume's size, flips along each axis (``data.flip``),
intensity scale and shift (``data.volume_intensity``: factors ``1 +- s``, shifts ``+- s / 2``) and
Gaussian noise (``data.noise_std``, default 0.05); no elastic deformation (the reference pipelines'
``RandomElasticDeformation`` is slow and rarely used for pretraining). ``slices`` is the same
with the depth axis left whole and unflipped, so that slice ``k`` of every view is the same
slice: what methods that pair slices need. Methods that see one view (MAE, I-JEPA) take the whole
volume (``none``).

Backbones: ``vit_volume``, a ViT over cubic patches of ``model.patch_size`` voxels (default 8)
with fixed 3-D sine-cosine positions (:class:`selfsup.models.video.ViT3d` with tubelets as deep as
they are wide; half the position channels encode depth, a quarter each of the two other axes, as
V-JEPA's encode time), which has the masked methods' interface; ``cnn_volume``, the small 3-D conv
net (:class:`selfsup.models.video.SmallCNN3d`); ``slice_cnn``, the image ``cnn`` run on each slice
``(C, H, W)`` and ``model.slice_layers`` (2) transformer blocks across the slices, averaged over the
depth (:class:`SliceCNN`: the joint image-volume encoder of ``selfsup.methods.iicc``). Masks: over the ViT's ``(D, H, W)`` grid the masked methods take the 3-D
masks the video modality registers (MAE: random tubes through the depth; I-JEPA: blocks on the
``(H, W)`` plane through the whole depth), the mask registry being keyed by the grid's
dimensionality.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.data.files import Folder, folder_parts, open_binary, scan
from selfsup.data.splits import DataError, Split, SplitData, StreamedFiles, read_npz, split_arrays, to_split
from selfsup.data.views import Unchanged
from selfsup.modalities.base import Dataset, Modality, register
from selfsup.models.backbones import backbone, build_backbone
from selfsup.models.tokens import sincos_pos_embed
from selfsup.models.video import SmallCNN3d, ViT3d

CLASSES = ("ball", "box", "rod", "shell")
NIFTI_EXTENSIONS = {".nii", ".gz"}


def synthetic_volumes(n: int = 1200, size: int = 32, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """``n`` volumes ``(1, size, size, size)`` in [0, 1] of the four :data:`CLASSES` (see the
    module docstring), balanced, labelled by class; the same ``split_seed`` gives the same volumes."""
    if size < 12:
        raise DataError(f"synthetic_volumes: data.volume_size {size} is below 12 voxels")
    rng = np.random.default_rng(split_seed)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"))  # (3, S, S, S)
    x = np.empty((n, 1, size, size, size), dtype=np.float32)
    for i in range(n):
        r = rng.uniform(0.14, 0.3) * size
        centre = rng.uniform(r + 1, size - r - 1, size=3).astype(np.float32)
        d = grid - centre[:, None, None, None]
        if y[i] == 0:
            inside = (d**2).sum(0) <= r**2
        elif y[i] == 1:
            inside = np.abs(d).max(0) <= 0.8 * r
        elif y[i] == 2:
            axis = rng.integers(3)
            across = [a for a in range(3) if a != axis]
            inside = ((d[across] ** 2).sum(0) <= (0.35 * r) ** 2) & (np.abs(d[axis]) <= 1.4 * r)
        else:
            dist = np.sqrt((d**2).sum(0))
            inside = (dist <= r) & (dist >= 0.6 * r)
        ramp = np.tensordot(rng.normal(0, 0.15, size=3).astype(np.float32), grid / size - 0.5, axes=1)
        contrast = rng.uniform(0.3, 0.8) * rng.choice([-1.0, 1.0])
        volume = 0.5 + ramp + contrast * inside + rng.normal(0, rng.uniform(0.03, 0.15), size=inside.shape)
        x[i, 0] = np.clip(volume, 0, 1)
    (xtr, ytr), (xte, yte) = split_arrays(x, y.astype(np.int64), test_fraction, split_seed)
    return SplitData("synthetic_volumes", to_split(xtr, ytr), to_split(xte, yte))


def volume_npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """Your volumes from an ``.npz`` file: ``x`` ``(N, D, H, W)`` or ``(N, C, D, H, W)`` (see ``read_npz``)."""
    return read_npz(path, "volume", "D,H,W", test_fraction, split_seed)


def read_nifti(f: str, size: int) -> np.ndarray:
    """One NIfTI file (local or a URI) -> ``(C, size, size, size)`` float32 in [0, 1] (see the module
    docstring); a file nibabel cannot read is a one-line :class:`DataError` naming it."""
    import nibabel

    try:
        with open_binary(f) as src:
            raw = src.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        image = nibabel.Nifti1Image.from_bytes(raw)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, nibabel.filebasedimages.ImageFileError) as exc:
        raise DataError(f"{f}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from None
    if data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    else:
        raise DataError(f"{f}: a NIfTI volume of {data.ndim} axes; expected 3 (D, H, W) or 4 (with channels last)")
    if not np.isfinite(data).all():
        raise DataError(f"{f}: contains NaN or infinite values")
    low, high = np.percentile(data, [0.5, 99.5])
    data = np.clip((data - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)
    resized = F.interpolate(torch.from_numpy(data)[None], size=(size,) * 3, mode="trilinear", align_corners=False)[0]
    return resized.numpy()


def write_nifti(path: str | Path, volume: np.ndarray) -> Path:
    """Write ``volume`` ``(D, H, W)`` as a NIfTI file (``.nii`` or ``.nii.gz``): the tests' volumes,
    and a way to make a small folder to try ``nifti`` on."""
    import nibabel

    path = Path(path)
    nibabel.save(nibabel.Nifti1Image(np.asarray(volume, dtype=np.float32), np.eye(4)), str(path))
    return path


class NiftiFiles(StreamedFiles):
    """NIfTI files read on access to ``(C, S, S, S)`` (see :class:`StreamedFiles`)."""

    def __init__(self, files, channels: int, size: int, on_bad_file: str = "fail"):
        super().__init__(files, (channels, size, size, size), on_bad_file)
        self.size = size

    def read(self, f) -> np.ndarray:
        volume = read_nifti(f, self.size)
        if volume.shape != self.sample_shape:
            raise DataError(f"{f}: {volume.shape[0]} channel(s), the folder's first volume has {self.sample_shape[0]}")
        return volume


def nifti_folder(path: str, size: int = 64, test_fraction: float = 0.2, split_seed: int = 0, stream: bool = False,
                 on_bad_file: str = "fail") -> SplitData:
    """NIfTI files in class subfolders or directly in ``path`` (unlabelled), a local folder or a URI;
    ``train/`` with ``val/`` or ``test/`` beside it gives the split."""
    root = Folder(path)
    parts = folder_parts(root)
    lists = []
    for p in parts:
        files, y, _ = scan(p, NIFTI_EXTENSIONS)
        nifti = np.asarray([f.endswith((".nii", ".nii.gz")) for f in files], dtype=bool)  # not any .gz
        if not nifti.any():
            raise DataError(f"{p.root}: no NIfTI volumes (.nii, .nii.gz)")
        lists.append((np.asarray(files, dtype=object)[nifti], None if y is None else y[nifti]))
    channels = read_nifti(lists[0][0][0], size).shape[0]
    train, test = lists if len(lists) == 2 else split_arrays(*lists[0], test_fraction, split_seed)

    def split(files: np.ndarray, y: np.ndarray | None) -> Split:
        labels = None if y is None else torch.as_tensor(y, dtype=torch.int64)
        volumes = NiftiFiles(files, channels, size, on_bad_file)
        return Split(volumes if stream else torch.from_numpy(np.stack([volumes.read(f) for f in files])), labels)

    return SplitData(root.name, split(*train), split(*test))


def crop_theta(u: torch.Tensor, scale, ratio, flip: bool, depth: bool) -> torch.Tensor:
    """Affine maps ``(B, 3, 4)`` of 3-D random resized crops from uniform draws ``u`` ``(B, 8)``:
    a crop of volume fraction in ``scale``, the ratios of its sides ``exp(U(log ratio))`` apart,
    placed uniformly inside the volume, flipped along each axis with probability 1/2 when ``flip``.
    ``depth=False`` keeps the depth axis whole and unflipped. ``affine_grid``'s axes are ``(W, H, D)``."""
    b = u.shape[0]
    fraction = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = torch.log(torch.tensor(ratio, dtype=u.dtype))
    r = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * u[:, 1])
    if depth:
        side = fraction ** (1 / 3)
        sides = torch.stack([side * r.sqrt(), side / r.sqrt(), side], dim=1)  # (W, H, D) fractions
    else:
        side = fraction.sqrt()
        sides = torch.stack([side * r.sqrt(), side / r.sqrt(), torch.ones(b)], dim=1)
    sides = sides.clamp(max=1.0)
    centre = (1 - sides) * (2 * u[:, 2:5] - 1)
    signs = torch.where(u[:, 5:8] < 0.5, -1.0, 1.0) if flip else torch.ones(b, 3)
    if not depth:
        signs[:, 2] = 1.0
    theta = torch.zeros(b, 3, 4)
    theta[:, [0, 1, 2], [0, 1, 2]] = sides * signs
    theta[:, :, 3] = centre
    return theta


class VolumeViews:
    """``n_views`` views of a batch of volumes ``(B, C, D, H, W)`` (see the module docstring):
    ``depth=False`` is the ``slices`` recipe."""

    def __init__(self, n_views: int = 2, scale=(0.3, 1.0), ratio=(0.75, 1.33), flip: bool = True, intensity: float = 0.2,
                 noise_std: float = 0.05, depth: bool = True):
        self.n_views, self.scale, self.ratio, self.flip = n_views, scale, ratio, flip
        self.intensity, self.noise_std, self.depth = intensity, noise_std, depth

    def view(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        theta = crop_theta(torch.rand(b, 8), self.scale, self.ratio, self.flip, self.depth).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        u = torch.rand(b, 2).to(x).view(b, 2, 1, 1, 1, 1)
        out = out * (1 + self.intensity * (2 * u[:, 0] - 1)) + 0.5 * self.intensity * (2 * u[:, 1] - 1)
        return out + self.noise_std * torch.randn_like(out) if self.noise_std > 0 else out

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.view(x) for _ in range(self.n_views)]


class SliceCNN(nn.Module):
    """The image ``cnn`` on every slice, then ``layers`` transformer blocks across the slices:
    ``(B, C, D, H, W) -> (B, embed_dim)``, the mean of the mixed slices. :meth:`slices` gives the
    slices' own features ``(B, D, embed_dim)`` and :meth:`mix` the blocks over them (timm's pre-norm
    blocks, fixed 1-D sine-cosine positions over the depth, a final LayerNorm; none when
    ``layers`` is 0): the 2-D encoder and the slice transformer of the joint image-volume encoder
    (``selfsup.methods.iicc``)."""

    def __init__(self, in_shape: tuple[int, int, int, int], embed_dim: int, width: int, depth: int, heads: int = 4, layers: int = 2):
        super().__init__()
        from timm.models.vision_transformer import Block

        c, d, h, w = in_shape
        self.image = build_backbone("cnn", (c, h, w), embed_dim, width, depth)
        self.embed_dim, self.depth = embed_dim, d
        self.blocks = nn.Sequential(*[Block(embed_dim, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(layers)])
        self.norm = nn.LayerNorm(embed_dim) if layers else nn.Identity()
        self.register_buffer("pos", sincos_pos_embed(embed_dim, (d,))[None], persistent=False)

    def slices(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        return self.image(x.transpose(1, 2).reshape(b * d, c, h, w)).view(b, d, -1)

    def mix(self, s: torch.Tensor) -> torch.Tensor:
        """``(B, D, E) -> (B, D, E)``: the slice features after the blocks across them."""
        if not len(self.blocks):
            return s
        return self.norm(self.blocks(s + self.pos))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.slices(x)).mean(dim=1)


@backbone("vit_volume", "volume ViT: cubic patches of model.patch_size voxels, 3-D sine-cosine positions (masked methods on volumes)",
          transformer=True, patches=True)
def _vit_volume(in_shape, embed_dim, depth, heads, patch_size, **_):
    p = patch_size or 8
    if any(s % p for s in in_shape[1:]):
        raise ValueError(f"volumes of {'x'.join(map(str, in_shape[1:]))} voxels do not divide into cubes of {p} (model.patch_size)")
    return ViT3d(in_shape, embed_dim, depth, heads, p, p)


@backbone("cnn_volume", "small 3-D conv net for volumes: conv-BN-ReLU blocks (3x3x3), stride-2, global average pool")
def _cnn_volume(in_shape, embed_dim, width, depth, **_):
    return SmallCNN3d(in_shape[0], embed_dim, width, depth)


@backbone("slice_cnn", "the image cnn on every slice, model.slice_layers transformer blocks across the slices, mean over them")
def _slice_cnn(in_shape, embed_dim, width, depth, heads, slice_layers=2, **_):
    if slice_layers and embed_dim % heads:
        raise ValueError(f"model.embed_dim {embed_dim} does not divide into model.heads {heads} (the slice transformer's)")
    return SliceCNN(in_shape, embed_dim, width, depth, heads, slice_layers)


@register
class Volume(Modality):
    name, plural, sample = "volume", "volumes", "(C, D, H, W)"
    datasets = {
        "synthetic_volumes": Dataset("1,200 generated 32^3 volumes: a ball, box, rod or shell of random size, place and contrast on a noisy "
                                     "bias field, 4 classes (made offline; data.volume_size sets the side, data.samples the count)",
                                     lambda a: synthetic_volumes(a["samples"] or 1200, size=a["volume_size"] or 32, test_fraction=a["test_fraction"],
                                                                 split_seed=a["split_seed"]), path="none", generated=True),
        "volume_npz": Dataset("your volumes: data.path -> .npz with x (N,D,H,W)|(N,C,D,H,W), optional y, x_test, y_test",
                              lambda a: volume_npz(a["path"], a["test_fraction"], a["split_seed"])),
        "nifti": Dataset("your NIfTI volumes (.nii, .nii.gz): data.path (a folder, or s3://, ...) -> class subfolders (or none), "
                         "resampled to data.volume_size (64) cubed, intensities scaled to [0, 1] by percentiles",
                         lambda a: nifti_folder(a["path"], a["volume_size"] or 64, a["test_fraction"], a["split_seed"], a["stream"],
                                                a["on_bad_file"]), streams=True),
    }
    recipes = {
        "volume": "volumes: 3-D random resized crop, flips along each axis, intensity scale and shift, Gaussian noise",
        "slices": "volumes: the volume recipe with the depth whole and unflipped (slice k of every view is the same slice)",
        "none": "no augmentation: the samples as they are",
    }
    default_recipes = ("volume", "slices", "none")
    augmentation = "volume"
    backbones = ("cnn_volume", "vit_volume", "slice_cnn")
    fields = {
        "volume_size": (int | None, Field(None, ge=4)),
        "volume_intensity": (float, Field(0.2, ge=0.0, le=1.0)),
    }
    keys = ("volume_size", "volume_intensity")
    loads = ("volume_size",)
    model_fields = {"slice_layers": (int, Field(2, ge=0))}

    def method_recipes(self, method) -> tuple[str, ...]:
        """A method made for volumes takes its own; one that sees a single view (MAE, I-JEPA) the
        whole volume; the others two 3-D crops."""
        if method.modality == self.name:
            return method.recipes
        return ("none", "volume") if method.n_views == 1 else self.default_recipes

    def check(self, data) -> None:
        if data.name == "volume_npz" and data.volume_size is not None:
            raise ValueError("data.volume_size resamples generated and NIfTI volumes, not data.name 'volume_npz' (its volumes are as stored)")

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        if recipe == "none":
            return Unchanged(n_views)
        flip = True if cfg.flip is None else cfg.flip
        return VolumeViews(n_views, cfg.crop_scale or (0.3, 1.0), cfg.crop_ratio, flip, cfg.volume_intensity, cfg.noise_std,
                           depth=recipe == "volume")

    def fake(self, cfg, root: Path) -> str:
        """Two class folders of two 16^3 NIfTI volumes (random noise)."""
        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                write_nifti(root / c / f"{i}.nii.gz", rng.random((16, 16, 16)))
        return str(root)
