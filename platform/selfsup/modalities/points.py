"""Point clouds ``(N, 3 + F)`` (LiDAR scans, scanned objects): the whole modality in this file.

A sample is ``N`` points, each its ``x, y, z`` (``z`` up) and ``F`` features (a LiDAR's intensity),
in the order they were read; every cloud of a dataset has the same ``N`` (``data.num_points``: a
larger cloud is subsampled, a smaller one padded with repeats of its own points, both by a random
draw fixed by the file's name, so a cloud reads the same every time).

Datasets:

- ``synthetic_scenes``: generated offline, deterministic by ``data.split_seed``. A LiDAR at 1.8 m
  above a ground plane (32 rings from -25 to +15 degrees, as a VLP-32C's, 256 azimuths, 20 m range, 2 cm range
  noise, 5 % of returns lost) scans a street scene of 2-4 objects of one class (a car: a box
  about 4.2 x 1.8 x 1.5 m; a pedestrian: a cylinder about 0.3 m wide, 1.75 m tall; a tree: a trunk
  and a round crown; a wall: a thin box 5-9 m long) at 3-12 m in any direction and orientation,
  with 0-2 small boxes of clutter in every scene; points are what the rays hit first (so nearer
  objects occlude farther ones), with an intensity feature that is each surface's random
  reflectance plus noise (``F = 1``, unrelated to the class). The label is the class of the scene.
- ``point_folder``: ``.npy`` (``(N, 3 + F)`` arrays), ``.ply`` (ASCII or binary; the vertex
  element's ``x, y, z`` then its other numeric properties) or ``.bin`` files (KITTI's and nuScenes'
  scans: float32 records of ``data.point_columns`` values, 4 by default: ``x, y, z`` and reflectance)
  in class subfolders (or none), a local folder or a URI; streamed file by file with ``data.stream``.
- ``point_npz``: your clouds in an ``.npz``: ``x`` ``(S, N, 3 + F)``, optional ``y``, ``x_test``, ``y_test``.

Views (one draw per cloud, as batched tensor ops at collate time; the ``points`` recipe): rotation
about the up axis by an angle uniform in ``+- data.point_rotation`` degrees (180), scaling by a
factor uniform in ``data.point_scaling`` (0.95-1.05), Gaussian jitter of every coordinate
(``data.noise_std``, in the cloud's units), and point dropout: a share uniform in
``[0, data.point_dropout]`` (0.2) of the points replaced by the cloud's first point, as PointNet++'s
``random_point_dropout`` (``provider.py``), so the shape stays ``(N, 3 + F)``. ``none`` passes the
clouds unchanged.

Backbones (both read positions divided by ``model.point_range``, the half-width in metres of the
square region around the sensor that matters, 20 by default):

- ``bev``: a bird's-eye-view grid encoder in the manner of PointPillars (Lang et al. 2019): every
  point's ``x, y, z``, features and offset from its pillar's centre through a Linear-BN-ReLU layer,
  max-pooled into a ``model.bev_cells`` square grid of pillars over ``+- point_range``, then the
  small conv net's layers (``model.depth`` 3x3 conv-BN-ReLU blocks, stride 2 after the first, and
  one more to ``embed_dim``): a BEV feature map ``(B, E, g, g)``, ``g = bev_cells / 2**(depth - 1)``, averaged
  over its occupied cells. :class:`BEVEncoder` also encodes only some points (``keep``): the
  AD-L-JEPA context and target encoders (``selfsup.methods.adljepa``).
- ``point_transformer``: Point-MAE's point-patch transformer (Pang et al. 2022; reference
  ``Pang-Yatian/Point-MAE``, ``models/Point_MAE.py``): ``model.point_groups`` centres by farthest
  point sampling, each with its ``model.group_size`` nearest points relative to it, embedded by a
  mini-PointNet (shared MLPs with a max-pooled global feature between them), plus an MLP embedding
  of the centre's position, ``model.depth`` transformer blocks, the mean of the tokens.

No masks: the point transformer has no masked-method interface here (Point-MAE itself is not a
method of selfsup yet); AD-L-JEPA masks the BEV grid itself.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from selfsup.data.files import Folder, folder_parts, open_binary, scan
from selfsup.data.splits import DataError, Split, SplitData, StreamedFiles, npz_splits, numeric_samples, split_arrays, to_split
from selfsup.data.views import Unchanged
from selfsup.modalities.base import Dataset, Modality, register
from selfsup.models.backbones import SmallCNN, backbone

CLASSES = ("car", "pedestrian", "tree", "wall")
POINT_EXTENSIONS = {".npy", ".ply", ".bin"}
SENSOR_HEIGHT, MAX_RANGE = 1.8, 20.0
RINGS, AZIMUTHS = np.deg2rad(np.linspace(-25, 15, 32)), np.linspace(-np.pi, np.pi, 256, endpoint=False)


def _box_hits(o: np.ndarray, d: np.ndarray, centre, half, yaw: float) -> np.ndarray:
    """Distances ``(R,)`` along unit rays ``d`` ``(R, 3)`` from ``o`` to a box turned by ``yaw`` about
    the up axis (slab method); ``inf`` where a ray misses."""
    c, s = math.cos(-yaw), math.sin(-yaw)
    turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    o_, d_ = turn @ (o - centre), d @ turn.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o_) / d_, (half - o_) / d_
    near, far = np.nanmax(np.minimum(t1, t2), axis=1), np.nanmin(np.maximum(t1, t2), axis=1)
    return np.where((far >= near) & (near > 0), near, np.inf)


def _cylinder_hits(o, d, x: float, y: float, r: float, z0: float, z1: float) -> np.ndarray:
    """Distances to an upright cylinder (side and top), ``inf`` where a ray misses."""
    ox, oy = o[0] - x, o[1] - y
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (ox * d[:, 0] + oy * d[:, 1])
    disc = b**2 - 4 * a * (ox**2 + oy**2 - r**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        top = (z1 - o[2]) / d[:, 2]
        z = o[2] + side * d[:, 2]
        side = np.where((disc >= 0) & (side > 0) & (z >= z0) & (z <= z1), side, np.inf)
        across = (ox + top * d[:, 0]) ** 2 + (oy + top * d[:, 1]) ** 2
        top = np.where((top > 0) & (across <= r**2), top, np.inf)
    return np.minimum(side, top)


def _sphere_hits(o, d, centre, r: float) -> np.ndarray:
    oc = o - centre
    b = d @ oc
    disc = b**2 - (oc @ oc - r**2)
    t = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _object(kind: int, rng: np.random.Generator, x: float, y: float) -> list:
    """The surfaces (hit functions of ray origin and directions) of one object of class ``kind``
    (``-1``: clutter) standing at ``(x, y)``."""
    yaw = rng.uniform(0, np.pi)
    if kind == 1:  # pedestrian
        r, h = rng.uniform(0.2, 0.3), rng.uniform(1.6, 1.9)
        return [lambda o, d: _cylinder_hits(o, d, x, y, r, 0.0, h)]
    if kind == 2:  # tree: a trunk and a round crown
        r, trunk, crown = rng.uniform(0.12, 0.22), rng.uniform(1.5, 2.5), rng.uniform(1.0, 1.6)
        top = np.array([x, y, trunk + 0.7 * crown])
        return [lambda o, d: _cylinder_hits(o, d, x, y, r, 0.0, trunk), lambda o, d: _sphere_hits(o, d, top, crown)]
    if kind == 0:  # car
        half = np.array([rng.uniform(1.9, 2.3), rng.uniform(0.8, 0.95), rng.uniform(0.7, 0.8)])
    elif kind == 3:  # wall
        half = np.array([rng.uniform(2.5, 4.5), rng.uniform(0.1, 0.15), rng.uniform(0.5, 1.0)])
    else:  # clutter
        half = rng.uniform(0.15, 0.5, size=3)
    centre = np.array([x, y, half[2]])
    return [lambda o, d: _box_hits(o, d, centre, half, yaw)]


def _ground_hits(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d[:, 2] < 0, -o[2] / d[:, 2], np.inf)


def lidar_scene(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One scan ``(K, 4)`` (``x, y, z``, intensity) of a scene of class ``kind`` (see the module docstring)."""
    elevation, azimuth = np.meshgrid(RINGS, AZIMUTHS, indexing="ij")
    d = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1).reshape(-1, 3)
    o = np.array([0.0, 0.0, SENSOR_HEIGHT])
    surfaces = [(_ground_hits, rng.uniform(0.05, 0.3))]
    for k in [kind] * rng.integers(2, 5) + [-1] * rng.integers(0, 3):
        dist, angle = rng.uniform(3, 12), rng.uniform(-np.pi, np.pi)
        reflectance = rng.uniform(0.05, 0.9)
        surfaces += [(part, reflectance) for part in _object(k, rng, dist * math.cos(angle), dist * math.sin(angle))]
    hits = np.stack([hit(o, d) for hit, _ in surfaces])  # (S, R)
    first, t = hits.argmin(0), hits.min(0)
    returned = (t <= MAX_RANGE) & (rng.random(len(t)) > 0.05)
    t = t[returned] + rng.normal(0, 0.02, size=returned.sum())
    xyz = o + t[:, None] * d[returned]
    intensity = np.array([r for _, r in surfaces])[first[returned]] + rng.normal(0, 0.03, size=len(t))
    return np.concatenate([xyz, np.clip(intensity, 0, 1)[:, None]], axis=1).astype(np.float32)


def resample(cloud: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of ``cloud`` ``(K, C)`` in random order: a random subset when ``K >= n``, else
    all of them and ``n - K`` random repeats."""
    if len(cloud) >= n:
        return cloud[rng.permutation(len(cloud))[:n]]
    return cloud[rng.permutation(np.concatenate([np.arange(len(cloud)), rng.integers(0, len(cloud), n - len(cloud))]))]


def synthetic_scenes(n: int = 1000, points: int = 1024, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """``n`` scans ``(points, 4)`` of the four :data:`CLASSES` of scene, balanced (see the module
    docstring); the same ``split_seed`` gives the same scans."""
    rng = np.random.default_rng(split_seed)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    x = np.stack([resample(lidar_scene(int(k), rng), points, rng) for k in y])
    (xtr, ytr), (xte, yte) = split_arrays(x, y.astype(np.int64), test_fraction, split_seed)
    return SplitData("synthetic_scenes", to_split(xtr, ytr), to_split(xte, yte))


PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
             "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_ply(raw: bytes, where: str) -> np.ndarray:
    """A PLY file's vertices ``(K, 3 + F)``: ``x, y, z`` then the vertex element's other scalar
    properties in the header's order (ASCII, binary little- or big-endian); the vertex element must
    come first (what follows it, e.g. faces, is not read)."""
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise DataError(f"{where}: not a PLY file (no 'ply' ... 'end_header' header)")
    header = raw[:end].decode("ascii", "replace").splitlines()
    body = raw[raw.index(b"\n", end) + 1:]
    fmt = next((line.split()[1] for line in header if line.startswith("format")), "")
    elements = [line.split() for line in header if line.startswith(("element", "property"))]
    if not elements or elements[0][:2] != ["element", "vertex"]:
        raise DataError(f"{where}: the PLY file's first element is not 'vertex'")
    count, names, types = int(elements[0][2]), [], []
    for line in elements[1:]:
        if line[0] == "element":
            break
        if line[1] == "list" or line[1] not in PLY_TYPES:
            raise DataError(f"{where}: vertex property {' '.join(line[1:])!r} is not a numeric scalar")
        types.append(PLY_TYPES[line[1]])
        names.append(line[2])
    if not {"x", "y", "z"} <= set(names):
        raise DataError(f"{where}: the vertices have no x, y, z (properties: {', '.join(names)})")
    if fmt == "ascii":
        rows = body.decode("ascii", "replace").split("\n")[:count]
        table = np.array([row.split()[:len(names)] for row in rows], dtype=np.float64)
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(n, order + t) for n, t in zip(names, types)])
        if len(body) < count * dtype.itemsize:
            raise DataError(f"{where}: truncated: {count} vertices need {count * dtype.itemsize} bytes, the file has {len(body)}")
        records = np.frombuffer(body, dtype=dtype, count=count)
        table = np.stack([records[n].astype(np.float64) for n in names], axis=1)
    else:
        raise DataError(f"{where}: PLY format {fmt!r} is not ascii, binary_little_endian or binary_big_endian")
    order = [names.index(a) for a in "xyz"] + [i for i, n in enumerate(names) if n not in "xyz"]
    return table[:, order].astype(np.float32)


def write_ply(path: str | Path, cloud: np.ndarray, names: tuple[str, ...] = ("x", "y", "z", "intensity")) -> Path:
    """Write ``cloud`` ``(K, C)`` as a binary little-endian PLY file of float vertices named ``names``
    (the tests' clouds, and a way to try ``point_folder``)."""
    path = Path(path)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(cloud)}", *[f"property float {n}" for n in names[: cloud.shape[1]]],
              "end_header"]
    path.write_bytes(("\n".join(header) + "\n").encode() + np.ascontiguousarray(cloud, dtype="<f4").tobytes())
    return path


def read_cloud(f: str, n: int, columns: int = 4) -> np.ndarray:
    """One ``.npy``, ``.ply`` or ``.bin`` file (of ``columns`` float32 values per point; local or a
    URI) -> ``(n, C)`` float32 (see the module docstring); what cannot be read is a one-line
    :class:`DataError` naming the file."""
    try:
        with open_binary(f) as src:
            raw = src.read()
    except OSError as exc:
        raise DataError(f"{f}: cannot be read ({exc})") from None
    if str(f).lower().endswith(".ply"):
        cloud = read_ply(raw, f)
    elif str(f).lower().endswith(".bin"):
        if len(raw) % (4 * columns):
            raise DataError(f"{f}: {len(raw)} bytes are not whole points of {columns} float32 values (data.point_columns)")
        cloud = np.frombuffer(raw, dtype="<f4").reshape(-1, columns)
    else:
        import io

        try:
            cloud = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{f}: not a readable .npy array ({exc})") from None
        if cloud.ndim != 2 or cloud.shape[1] < 3 or not np.issubdtype(cloud.dtype, np.number):
            raise DataError(f"{f}: expected a numeric array of points (K, 3 + F), got {cloud.dtype} {cloud.shape}")
    if len(cloud) == 0:
        raise DataError(f"{f}: holds no points")
    if not np.isfinite(cloud).all():
        raise DataError(f"{f}: contains NaN or infinite values")
    return resample(cloud.astype(np.float32), n, np.random.default_rng(zlib.crc32(str(f).encode())))


class PointFiles(StreamedFiles):
    """Point cloud files read on access to ``(n, C)`` (see :class:`StreamedFiles`)."""

    def __init__(self, files, n: int, channels: int, columns: int = 4, on_bad_file: str = "fail"):
        super().__init__(files, (n, channels), on_bad_file)
        self.columns = columns

    def read(self, f) -> np.ndarray:
        cloud = read_cloud(f, self.sample_shape[0], self.columns)
        if cloud.shape[1] != self.sample_shape[1]:
            raise DataError(f"{f}: points of {cloud.shape[1]} values, the folder's first cloud has {self.sample_shape[1]}")
        return cloud


def point_folder(path: str, n: int = 16384, columns: int = 4, test_fraction: float = 0.2, split_seed: int = 0, stream: bool = False,
                 on_bad_file: str = "fail") -> SplitData:
    """``.npy``/``.ply``/``.bin`` clouds in class subfolders or directly in ``path`` (unlabelled), a local folder
    or a URI; ``train/`` with ``val/`` or ``test/`` beside it gives the split."""
    root = Folder(path)
    lists = []
    for p in folder_parts(root):
        files, y, _ = scan(p, POINT_EXTENSIONS)
        if not files:
            raise DataError(f"{p.root}: no point clouds (.npy, .ply, .bin)")
        lists.append((np.asarray(files, dtype=object), y))
    channels = read_cloud(lists[0][0][0], 1, columns).shape[1]
    train, test = lists if len(lists) == 2 else split_arrays(*lists[0], test_fraction, split_seed)

    def split(files: np.ndarray, y: np.ndarray | None) -> Split:
        clouds = PointFiles(files, n, channels, columns, on_bad_file)
        labels = None if y is None else torch.as_tensor(y, dtype=torch.int64)
        return Split(clouds if stream else torch.from_numpy(np.stack([clouds.read(f) for f in files])), labels)

    return SplitData(root.name, split(*train), split(*test))


def clouds(x: np.ndarray, where: str) -> np.ndarray:
    """``x`` as float32 clouds ``(S, N, 3 + F)``, or a one-line :class:`DataError` naming ``where``."""
    if x.ndim == 3 and x.shape[2] < 3:
        raise DataError(f"{where}: points need x, y, z; got {x.shape[2]} values a point")
    return numeric_samples(x, where, "N,3 + F")


def point_npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """Your clouds from an ``.npz``: ``x`` ``(S, N, 3 + F)`` (optional ``y``, ``x_test``, ``y_test``)."""
    return npz_splits(path, clouds, test_fraction, split_seed)


class PointViews:
    """``n_views`` views of a batch of clouds ``(B, N, C)`` (see the module docstring)."""

    def __init__(self, n_views: int = 2, rotation: float = 180.0, scaling=(0.95, 1.05), jitter: float = 0.05, dropout: float = 0.2):
        self.n_views, self.rotation, self.scaling, self.jitter, self.dropout = n_views, math.radians(rotation), scaling, jitter, dropout

    def view(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        u = torch.rand(b, 3).to(x)
        angle = self.rotation * (2 * u[:, 0] - 1)
        scale = self.scaling[0] + (self.scaling[1] - self.scaling[0]) * u[:, 1]
        cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        px, py = x[..., 0], x[..., 1]
        xyz = torch.stack([cos * px - sin * py, sin * px + cos * py, x[..., 2]], dim=-1) * scale[:, None, None]
        if self.jitter > 0:
            xyz = xyz + self.jitter * torch.randn_like(xyz)
        out = torch.cat([xyz, x[..., 3:]], dim=-1)
        dropped = torch.rand(b, n).to(x) < (self.dropout * u[:, 2])[:, None]
        return torch.where(dropped[..., None], out[:, :1], out)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.view(x) for _ in range(self.n_views)]


class BEVEncoder(nn.Module):
    """The ``bev`` backbone (see the module docstring): ``(B, N, C) -> (B, embed_dim)``;
    :meth:`cells` gives the feature map ``(B, E, g, g)`` of the points ``keep`` ``(B, N)`` selects,
    :meth:`cell_of` each point's cell of that map."""

    def __init__(self, channels: int, embed_dim: int, width: int, depth: int, point_range: float, cells: int):
        super().__init__()
        self.embed_dim, self.point_range, self.cells_in = embed_dim, point_range, cells
        self.grid = cells // 2 ** (depth - 1)
        self.pillar = nn.Sequential(nn.Linear(channels + 2, width, bias=False), nn.BatchNorm1d(width), nn.ReLU())
        self.convs = SmallCNN(width, embed_dim, width, depth).features

    def _index(self, x: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each point's cell ``(B, N)`` of a ``cells``-square grid over ``+- point_range`` (``cells**2``:
        outside it) and its position in its cell ``(B, N, 2)`` in ``[0, 1)``."""
        scaled = (x[..., :2] / self.point_range + 1) * (cells / 2)
        ij = scaled.floor()
        inside = ((ij >= 0) & (ij < cells)).all(dim=-1)
        flat = (ij[..., 0] * cells + ij[..., 1]).long()
        return torch.where(inside, flat, cells * cells), scaled - ij

    def cell_of(self, x: torch.Tensor) -> torch.Tensor:
        """Each point's cell ``(B, N)`` of the ``g x g`` output map, row-major; ``g * g`` outside it."""
        return self._index(x, self.grid)[0]

    def cells(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The BEV feature map ``(B, E, g, g)`` of the points ``keep`` selects (all by default)."""
        b, n, c = x.shape
        g = self.cells_in
        index, offset = self._index(x, g)
        if keep is not None:
            index = torch.where(keep, index, g * g)
        inputs = torch.cat([x[..., :2] / self.point_range, x[..., 2:], offset - 0.5], dim=-1)
        feats = self.pillar(inputs.reshape(b * n, c + 2)).view(b, n, -1)
        pillars = feats.new_zeros(b, g * g + 1, feats.shape[-1])
        pillars = pillars.scatter_reduce(1, index[..., None].expand_as(feats), feats, reduce="amax", include_self=False)
        bev = pillars[:, : g * g].transpose(1, 2).reshape(b, -1, g, g)
        return self.convs(bev)

    def occupancy(self, cell: torch.Tensor) -> torch.Tensor:
        """Which cells ``(B, g, g)`` of the output map hold a point, from the points' cells ``(B, N)``
        (:meth:`cell_of`; ``g * g``: none)."""
        hit = cell.new_zeros(cell.shape[0], self.grid**2 + 1, dtype=torch.bool).scatter(1, cell, True)
        return hit[:, :-1].view(-1, self.grid, self.grid)

    def pool(self, fmap: torch.Tensor, occupied: torch.Tensor) -> torch.Tensor:
        """The mean ``(B, E)`` of a map ``(B, E, g, g)`` over its ``occupied`` cells ``(B, g, g)``."""
        w = occupied.flatten(1).to(fmap.dtype)
        return (fmap.flatten(2) * w[:, None]).sum(-1) / w.sum(1, keepdim=True).clamp(min=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.cells(x), self.occupancy(self.cell_of(x)))


@torch.no_grad()
def farthest_points(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, k)`` of ``k`` farthest-point-sampled points of ``xyz`` ``(B, N, 3)``, starting
    from the first point (as ``pointnet2_ops``' ``furthest_point_sample``)."""
    b, n, _ = xyz.shape
    chosen = torch.zeros(b, k, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), device=xyz.device, dtype=xyz.dtype)
    last = torch.zeros(b, dtype=torch.long, device=xyz.device)
    for i in range(1, k):
        centre = xyz.gather(1, last[:, None, None].expand(-1, 1, 3))
        dist = torch.minimum(dist, ((xyz - centre) ** 2).sum(-1))
        last = dist.argmax(dim=1)
        chosen[:, i] = last
    return chosen


class PointPatchTransformer(nn.Module):
    """The ``point_transformer`` backbone (see the module docstring): ``(B, N, C) -> (B, embed_dim)``."""

    def __init__(self, channels: int, embed_dim: int, width: int, depth: int, heads: int, groups: int, group_size: int, point_range: float):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.embed_dim, self.groups, self.group_size, self.point_range = embed_dim, groups, group_size, point_range
        w1, w2 = 4 * width, 8 * width  # Point-MAE's 128 and 256 at width 32
        self.first = nn.Sequential(nn.Conv1d(channels, w1, 1), nn.BatchNorm1d(w1), nn.ReLU(), nn.Conv1d(w1, w2, 1))
        self.second = nn.Sequential(nn.Conv1d(2 * w2, 2 * w2, 1), nn.BatchNorm1d(2 * w2), nn.ReLU(), nn.Conv1d(2 * w2, embed_dim, 1))
        self.position = nn.Sequential(nn.Linear(3, w1), nn.GELU(), nn.Linear(w1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres ``(B, G, 3)`` and their neighbourhoods ``(B, G, K, C)``, positions relative to the
        centre (in the cloud's units: the shapes of things; the centre's own position enters the
        tokens scaled, ``x, y`` by ``point_range``)."""
        xyz = x[..., :3]
        centres = xyz.gather(1, farthest_points(xyz, self.groups)[..., None].expand(-1, -1, 3))
        near = torch.cdist(centres, xyz).topk(self.group_size, dim=-1, largest=False).indices  # (B, G, K)
        b, g, k = near.shape
        hood = x.gather(1, near.reshape(b, g * k, 1).expand(-1, -1, x.shape[-1])).view(b, g, k, -1)
        return centres, torch.cat([hood[..., :3] - centres[:, :, None], hood[..., 3:]], dim=-1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's output tokens ``(B, G, E)``, one per point patch."""
        centres, hood = self.group(x)
        b, g, k, c = hood.shape
        f = self.first(hood.reshape(b * g, k, c).transpose(1, 2))  # (BG, w2, K)
        f = torch.cat([f.amax(dim=2, keepdim=True).expand_as(f), f], dim=1)
        t = self.second(f).amax(dim=2).view(b, g, -1)
        where = torch.cat([centres[..., :2] / self.point_range, centres[..., 2:]], dim=-1)
        return self.norm(self.blocks(t + self.position(where)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).mean(dim=1)


@backbone("bev", "bird's-eye-view grid encoder for point clouds: per-point MLP max-pooled into model.bev_cells pillars, conv net, mean of occupied cells")
def _bev(in_shape, embed_dim, width, depth, point_range=20.0, bev_cells=32, **_):
    if bev_cells % 2 ** (depth - 1):
        raise ValueError(f"model.bev_cells {bev_cells} does not halve model.depth - 1 = {depth - 1} times into whole cells")
    return BEVEncoder(in_shape[1], embed_dim, width, depth, point_range, bev_cells)


@backbone("point_transformer", "Point-MAE's point-patch transformer: farthest-point centres, kNN groups, mini-PointNet tokens, blocks",
          transformer=True)
def _point_transformer(in_shape, embed_dim, width, depth, heads, point_groups=64, group_size=32, point_range=20.0, **_):
    n = in_shape[0]
    if point_groups > n or group_size > n:
        raise ValueError(f"model.point_groups {point_groups} and model.group_size {group_size} must not exceed the clouds' {n} points")
    return PointPatchTransformer(in_shape[1], embed_dim, width, depth, heads, point_groups, group_size, point_range)


@register
class Points(Modality):
    name, plural, sample = "points", "point clouds", "(N, 3 + F)"
    datasets = {
        "synthetic_scenes": Dataset("1,000 generated LiDAR scans (32 rings) of street scenes: 2-4 cars, pedestrians, trees or walls among "
                                    "clutter, with occlusion and noise, 4 classes; x, y, z, intensity (data.num_points: 1024; data.samples sets the count)",
                                    lambda a: synthetic_scenes(a["samples"] or 1000, points=a["num_points"] or 1024, test_fraction=a["test_fraction"],
                                                               split_seed=a["split_seed"]), path="none", generated=True),
        "point_folder": Dataset("your point clouds: data.path (a folder, or s3://, ...) -> .npy (N, 3+F), .ply or .bin (KITTI: "
                                "data.point_columns float32) files in class subfolders (or none), resampled to data.num_points (16384)",
                                lambda a: point_folder(a["path"], a["num_points"] or 16384, a["point_columns"], a["test_fraction"], a["split_seed"],
                                                       a["stream"], a["on_bad_file"]), streams=True, keys=("point_columns",)),
        "point_npz": Dataset("your point clouds: data.path -> .npz with x (S, N, 3+F), optional y, x_test, y_test",
                             lambda a: point_npz(a["path"], a["test_fraction"], a["split_seed"])),
    }
    recipes = {
        "points": "point clouds: rotation about the up axis, scaling, jitter, point dropout",
        "none": "no augmentation: the samples as they are",
    }
    default_recipes = ("points", "none")
    augmentation = "points"
    backbones = ("bev", "point_transformer")
    fields = {
        "num_points": (int | None, Field(None, ge=1)),
        "point_rotation": (float, Field(180.0, ge=0.0, le=180.0)),
        "point_scaling": (tuple[float, float], (0.95, 1.05)),
        "point_dropout": (float, Field(0.2, ge=0.0, lt=1.0)),
        "point_columns": (int, Field(4, ge=3)),
    }
    keys = ("num_points", "point_rotation", "point_scaling", "point_dropout")
    loads = ("num_points", "point_columns")
    model_fields = {
        "point_range": (float, Field(20.0, gt=0.0)),
        "bev_cells": (int, Field(32, ge=1)),
        "point_groups": (int, Field(64, ge=1)),
        "group_size": (int, Field(32, ge=1)),
    }

    def check(self, data) -> None:
        if data.name == "point_npz" and data.num_points is not None:
            raise ValueError("data.num_points resamples generated and file clouds, not data.name 'point_npz' (its clouds are as stored)")
        low, high = data.point_scaling
        if not 0 < low <= high:
            raise ValueError(f"data.point_scaling must satisfy 0 < low <= high, got {data.point_scaling}")

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        if recipe == "none":
            return Unchanged(n_views)
        return PointViews(n_views, cfg.point_rotation, cfg.point_scaling, cfg.noise_std, cfg.point_dropout)

    def fake(self, cfg, root: Path) -> str:
        """Two class folders of two 64-point clouds ``(64, 4)`` (random), one ``.npy`` and one ``.ply`` each."""
        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            (root / c).mkdir(parents=True, exist_ok=True)
            np.save(root / c / "0.npy", rng.normal(0, 5, (64, 4)).astype(np.float32))
            write_ply(root / c / "1.ply", rng.normal(0, 5, (64, 4)).astype(np.float32))
        return str(root)
