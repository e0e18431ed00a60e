"""Samples in shards, on any pyarrow filesystem (a local or shared folder, ``s3://``, ``gs://``, ...):
WebDataset tar shards and Parquet shards of encoded samples, read and written.

- **WebDataset** (``.tar``): the files of one sample are consecutive members sharing a key (the
  member's path up to the first ``.`` of its name): ``key.jpg``/``key.png``/``key.webp`` an encoded
  image, ``key.mp4`` (``.avi``, ``.mkv``, ``.webm``, ...) an encoded video, ``key.npy`` an array
  sample, ``key.cls`` its integer class (text). The index reads the tar headers (and the small
  ``.cls`` members) once; a sample is then one ranged read of its member.
- **Parquet** (``.parquet``): one row per sample, an ``image`` column of encoded image bytes (or
  ``video``: encoded videos; ``npy``: ``.npy`` bytes), an optional integer ``label`` and a ``key``.
  A sample reads its row group's column (cached: samples of a shard are read together).

``data.path`` is one shard, or a folder or bucket prefix holding them (every ``.tar`` or every
``.parquet`` below it, sorted). A shard the index cannot read, a sample whose bytes do not decode,
a sample without the label the others have, or a column of the wrong type is one line naming the
shard and the key (or column), raised, or with ``on_bad_file="skip"`` left out: at indexing, the
samples of a shard before the damage are kept; at reading, :class:`~selfsup.data.splits.StreamedFiles`
skips the sample. Images are read as ``data.name: shards``, videos as ``data.name: video_shards``
(decoded with PyAV as ``video_folder`` decodes a file).

:func:`write_shards` writes an image folder, a video folder or an ``.npz`` as either format (``selfsup
shard``), from a local folder or a URI.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfsup import storage
from selfsup.data.datasets import IMAGE_EXTENSIONS, decode_image
from selfsup.data.files import Folder, scan
from selfsup.data.splits import DataError, Split, SplitData, StreamedFiles, split_arrays
from selfsup.data.videos import VIDEO_EXTENSIONS, decode

FORMATS = {"webdataset": ".tar", "parquet": ".parquet"}
IMAGES, VIDEOS = ("jpg", "jpeg", "png", "webp"), tuple(e.lstrip(".") for e in sorted(VIDEO_EXTENSIONS))
ENCODED = (*IMAGES, *VIDEOS, "npy")
COLUMNS = ("image", "video", "npy")
"""A Parquet shard's sample column; its samples' ``ext`` is the column's name."""


def kind(ext: str) -> str:
    """What a sample's ``ext`` (a tar member's extension, or a Parquet column) holds: ``image``,
    ``video`` or ``npy``."""
    return "npy" if ext == "npy" else "video" if ext in (*VIDEOS, "video") else "image"


def filesystem(uri: str):
    """``(pyarrow FileSystem, path within it)`` for a URI (``s3://bucket/prefix``) or a local path
    (``selfsup.storage.filesystem``), a URI pyarrow cannot open a :class:`DataError`."""
    try:
        return storage.filesystem(uri)
    except Exception as exc:  # noqa: BLE001  (pyarrow raises ArrowInvalid, OSError, ... for a bad URI)
        raise DataError(f"{uri}: not a filesystem pyarrow can open ({exc})") from None


def shard_paths(uri: str) -> tuple[object, list[str], str]:
    """The shards at ``uri`` (one file, or every ``.tar`` / ``.parquet`` below a folder or prefix):
    ``(filesystem, sorted paths, suffix)``."""
    from pyarrow import fs

    filesys, path = filesystem(uri)
    info = filesys.get_file_info(path)
    if info.type == fs.FileType.File:
        paths = [path]
    elif info.type == fs.FileType.Directory:
        paths = sorted(i.path for i in filesys.get_file_info(fs.FileSelector(path, recursive=True))
                       if i.type == fs.FileType.File and i.path.endswith(tuple(FORMATS.values())))
    else:
        raise DataError(f"{uri}: no such shard, folder or prefix")
    suffixes = {Path(p).suffix for p in paths}
    if not paths or not suffixes <= set(FORMATS.values()):
        raise DataError(f"{uri}: no .tar (WebDataset) or .parquet shards")
    if len(suffixes) > 1:
        raise DataError(f"{uri}: mixes .tar and .parquet shards; keep one format per dataset")
    return filesys, paths, suffixes.pop()


@dataclass(frozen=True)
class Sample:
    """Where one sample's bytes are: its shard, key, extension, and (tar) byte range or (Parquet) row."""

    shard: str
    key: str
    ext: str
    offset: int = 0
    size: int = 0
    row_group: int = 0
    row: int = 0

    def __str__(self) -> str:
        return f"{self.shard}: {self.key}"


@dataclass
class Index:
    samples: list[Sample] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)


def _skip_or_raise(message: str, on_bad_file: str) -> None:
    if on_bad_file != "skip":
        raise DataError(message)
    print(f"[selfsup] skipped: {message}", flush=True)


class _Counted:
    """A stream that counts the bytes read from it (how far a truncated tar got)."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _tar_index(filesys, shard: str, on_bad_file: str, index: Index) -> None:
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    labels: dict[str, int] = {}
    with filesys.open_input_stream(shard, buffer_size=1 << 20) as stream:  # one sequential read, not a request per header
        f = _Counted(stream)
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    folder, _, name = m.name.rpartition("/")
                    stem, _, ext = name.partition(".")
                    key = f"{folder}/{stem}" if folder else stem
                    if ext == "cls":
                        text = tar.extractfile(m).read().decode(errors="replace").strip()
                        try:
                            labels[key] = int(text)
                        except ValueError:
                            _skip_or_raise(f"{shard}: {key}.cls: not an integer class ({text[:20]!r})", on_bad_file)
                    elif ext.lower() in ENCODED:
                        members.setdefault(key, {})[ext.lower()] = m
        except (tarfile.TarError, EOFError, OSError) as exc:
            end = f.count  # what was read: a sample whose bytes run past it is cut off
            members = {k: v for k, v in members.items() if all(m.offset_data + m.size <= end for m in v.values())}
            _skip_or_raise(f"{shard}: not a readable tar shard ({type(exc).__name__}: {exc}); the {len(members)} whole samples "
                           "before the damage are kept", on_bad_file)
    for key, found in members.items():
        ext, m = next(iter(found.items()))
        index.samples.append(Sample(shard, key, ext, m.offset_data, m.size))
        index.labels.append(labels.get(key))


def _parquet_index(filesys, shard: str, on_bad_file: str, index: Index) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with filesys.open_input_file(shard) as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            column = next((c for c in COLUMNS if c in names), None)
            if column is None:
                raise DataError(f"{shard}: no 'image', 'video' or 'npy' column (found {', '.join(names)})")
            if not pa.types.is_binary(pf.schema_arrow.field(column).type) and not pa.types.is_large_binary(pf.schema_arrow.field(column).type):
                raise DataError(f"{shard}: column {column!r} is {pf.schema_arrow.field(column).type}, not binary (encoded samples)")
            if "label" in names and not pa.types.is_integer(pf.schema_arrow.field("label").type):
                raise DataError(f"{shard}: column 'label' is {pf.schema_arrow.field('label').type}, not an integer class")
            keys = pf.read(columns=["key"]).column("key").to_pylist() if "key" in names else None
            labels = pf.read(columns=["label"]).column("label").to_pylist() if "label" in names else None
            n = 0
            for g in range(pf.num_row_groups):
                for r in range(pf.metadata.row_group(g).num_rows):
                    index.samples.append(Sample(shard, keys[n] if keys else str(n), column, row_group=g, row=r))
                    index.labels.append(labels[n] if labels else None)
                    n += 1
    except DataError as exc:
        _skip_or_raise(str(exc), on_bad_file)
    except Exception as exc:  # noqa: BLE001  (pyarrow's errors for a damaged file)
        _skip_or_raise(f"{shard}: not a readable Parquet shard ({type(exc).__name__}: {exc})", on_bad_file)


class ShardSamples(StreamedFiles):
    """Samples of shards decoded on access: images to ``(3, S, S)``, videos to ``(3, T, S, S)``
    (``clip``: ``(clip_frames, frame_stride, frame_size)``), ``.npy`` samples as stored (see
    :class:`StreamedFiles`). Keeps the filesystem and, per process, the last Parquet row group read.
    :meth:`items` reads a batch with one open per shard and one read per Parquet row group (an
    object store's file open is a request of its own)."""

    def __init__(self, filesys, samples: list[Sample], sample_shape: tuple[int, ...], image_size: int, on_bad_file: str = "fail",
                 clip: tuple[int, int, int] | None = None):
        super().__init__(samples, sample_shape, on_bad_file)
        self.filesys, self.image_size, self.clip = filesys, image_size, clip
        self._group: tuple[tuple[str, int], list] | None = None
        self._read: dict[Sample, bytes] = {}

    def __getstate__(self):
        return {**self.__dict__, "_group": None, "_read": {}}

    def encoded(self, indices) -> list[bytes]:
        """The samples' bytes, as stored (for ``selfsup.data.datasets.EncodedImages``), read per shard."""
        with self._fetched(indices):
            out = []
            for i in indices:
                try:
                    out.append(self.raw(self.files[int(i)]))
                except OSError as exc:
                    raise DataError(f"{self.files[int(i)]}: cannot read its bytes ({exc})") from None
            return out

    @contextlib.contextmanager
    def _fetched(self, indices):
        """Within: samples ``indices`` read together into ``_read``, one open per shard (what fails
        is read again one by one by :meth:`raw`, which names it); forgotten after."""
        by_shard: dict[str, list[Sample]] = {}
        for i in indices:
            s = self.files[int(i)]
            by_shard.setdefault(s.shard, []).append(s)
        for shard, samples in by_shard.items():
            try:
                self._read.update(self._read_together(shard, samples))
            except Exception:  # noqa: BLE001
                pass
        try:
            yield
        finally:
            self._read = {}

    def items(self, indices) -> list:
        with self._fetched(indices):
            return super().items(indices)

    def _read_together(self, shard: str, samples: list[Sample]) -> dict[Sample, bytes]:
        """The bytes of ``samples`` of one shard, through one open file."""
        import pyarrow.parquet as pq

        with self.filesys.open_input_file(shard) as f:
            if not shard.endswith(".parquet"):
                return {s: data for s in samples if len(data := f.read_at(s.size, s.offset)) == s.size}
            pf, out = pq.ParquetFile(f), {}
            column = samples[0].ext
            for group in sorted({s.row_group for s in samples}):
                values = pf.read_row_group(group, columns=[column]).column(column)
                out.update({s: values[s.row].as_py() for s in samples if s.row_group == group})
            return out

    def raw(self, s: Sample) -> bytes:
        if s in self._read:
            return self._read[s]
        if not s.shard.endswith(".parquet"):
            with self.filesys.open_input_file(s.shard) as f:
                data = f.read_at(s.size, s.offset)
            if len(data) != s.size:
                raise DataError(f"{s}: the shard ends before this sample's bytes")
            return data
        import pyarrow.parquet as pq

        if self._group is None or self._group[0] != (s.shard, s.row_group):
            with self.filesys.open_input_file(s.shard) as f:
                values = pq.ParquetFile(f).read_row_group(s.row_group, columns=[s.ext]).column(s.ext).to_pylist()
            self._group = ((s.shard, s.row_group), values)
        return self._group[1][s.row]

    def read(self, s: Sample) -> np.ndarray:
        try:
            data = self.raw(s)
        except OSError as exc:
            raise DataError(f"{s}: cannot read its bytes ({exc})") from None
        if s.ext == "npy":
            try:
                x = np.load(io.BytesIO(data), allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise DataError(f"{s}: not a readable .npy ({exc})") from None
            if tuple(x.shape) != self.sample_shape[-x.ndim:] or not np.isfinite(x).all():
                raise DataError(f"{s}: an array of shape {x.shape} (finite numbers expected, of the first sample's shape {self.sample_shape})")
            return x.astype(np.float32).reshape(self.sample_shape)
        if kind(s.ext) == "video":
            return decode(io.BytesIO(data), *self.clip, where=s)
        return decode_image(io.BytesIO(data), self.image_size, where=s)


def read_shards(uri: str, image_size: int = 32, test_fraction: float = 0.2, split_seed: int = 0, stream: bool = False,
                on_bad_file: str = "fail", clip: tuple[int, int, int] | None = None) -> SplitData:
    """The samples of the shards at ``uri`` (see the module docstring), images resized to
    ``image_size`` squared; videos (``clip``: ``(clip_frames, frame_stride, frame_size)``, which
    only videos take) as ``video_folder`` decodes them; split by ``test_fraction``. With ``stream``
    they are decoded on access."""
    filesys, paths, suffix = shard_paths(uri)
    index = Index()
    for shard in paths:
        (_tar_index if suffix == ".tar" else _parquet_index)(filesys, shard, on_bad_file, index)
    if not index.samples:
        raise DataError(f"{uri}: no samples in its {len(paths)} shard(s) (keys with .jpg, .png, .webp, .mp4 (or another video) or .npy)")
    held = kind(index.samples[0].ext)
    if (held == "video") != (clip is not None):
        what = {"image": "images", "video": "videos", "npy": ".npy arrays"}[held]
        raise DataError(f"{uri}: its shards hold {what}: read them with data.name: {'video_shards' if held == 'video' else 'shards'}")
    labelled = [y is not None for y in index.labels]
    keep = list(range(len(index.samples)))
    if any(labelled) and not all(labelled):
        for i in [i for i, ok in enumerate(labelled) if not ok]:
            _skip_or_raise(f"{index.samples[i]}: no label (.cls / label) where the other samples have one", on_bad_file)
        keep = [i for i, ok in enumerate(labelled) if ok]
    samples = np.empty(len(keep), dtype=object)
    samples[:] = [index.samples[i] for i in keep]
    y = np.asarray([index.labels[i] for i in keep], dtype=np.int64) if any(labelled) else None
    first = ShardSamples(filesys, [samples[0]], (), image_size)
    shape = {"image": (3, image_size, image_size), "video": (3, clip[0], clip[2], clip[2]) if clip else ()}.get(held)
    shape = shape or tuple(np.load(io.BytesIO(first.raw(samples[0]))).shape)
    train, test = split_arrays(samples, y, test_fraction, split_seed)

    def split(part: np.ndarray, labels: np.ndarray | None) -> Split:
        clips = ShardSamples(filesys, list(part), shape, image_size, on_bad_file, clip)
        x = clips if stream else torch.from_numpy(np.stack([clips.read(s) for s in part]))
        return Split(x, None if labels is None else torch.as_tensor(labels))

    return SplitData(Path(paths[0]).parent.name or "shards", split(*train), split(*test))


def _source(src: str) -> tuple[list[tuple[str, bytes, str]], list[int] | None]:
    """``(key, encoded bytes, extension)`` of every sample of an image or video folder (class
    subfolders or none, local or at a URI; the files' own bytes, not re-encoded) or an ``.npz``
    (``x`` rows as ``.npy``), and labels."""
    if src.endswith(".npz") and storage.is_file(src):
        try:
            with np.load(io.BytesIO(storage.read_bytes(src)), allow_pickle=False) as arrays:
                x, y = arrays["x"], arrays["y"] if "y" in arrays.files else None
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"{src}: not an .npz with an 'x' array ({exc})") from None
        out = []
        for i, row in enumerate(x):
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(row, dtype=np.float32))
            out.append((f"{i:08d}", buffer.getvalue(), "npy"))
        return out, None if y is None else [int(v) for v in y]
    try:
        root = Folder(src)
    except DataError:
        raise DataError(f"{src}: not an image or video folder or an .npz file") from None
    files, labels, _ = scan(root, IMAGE_EXTENSIONS)
    if not files:
        files, labels, _ = scan(root, VIDEO_EXTENSIONS)
    if not files:
        raise DataError(f"{src}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or videos ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    out = []
    for f in files:
        name = root.relative_name(f)
        key = name.rsplit(".", 1)[0].replace("/", "_").replace(".", "_")
        out.append((key, storage.read_bytes(f), name.rsplit(".", 1)[1].lower()))
    return out, None if labels is None else [int(v) for v in labels]


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


ROW_GROUP = 64
"""Rows per row group of the Parquet shards written: a random sample costs the read of its row
group (one request), so groups stay small; the reader takes any size."""


def write_shards(src: str, out: str, fmt: str = "webdataset", shard_size: int = 1000) -> list[str]:
    """Write the samples of ``src`` (an image or video folder or an ``.npz``) as ``fmt`` shards
    (webdataset | parquet) of ``shard_size`` samples under ``out`` (a folder or a bucket prefix):
    ``shard-00000.tar``, ... Returns the shards' paths. Images and videos keep their encoded bytes;
    labels (class folders, ``y``) go to ``key.cls`` / the ``label`` column."""
    if fmt not in FORMATS:
        raise DataError(f"unknown shard format {fmt!r}; use {' or '.join(FORMATS)}")
    samples, labels = _source(src)
    filesys, base = filesystem(out)
    filesys.create_dir(base, recursive=True)
    written = []
    for number, start in enumerate(range(0, len(samples), shard_size)):
        part, path = samples[start:start + shard_size], f"{base}/shard-{number:05d}{FORMATS[fmt]}"
        with filesys.open_output_stream(path) as stream:
            if fmt == "webdataset":
                with tarfile.open(fileobj=stream, mode="w|") as tar:
                    for i, (key, data, ext) in enumerate(part, start):
                        _tar_member(tar, f"{key}.{ext}", data)
                        if labels is not None:
                            _tar_member(tar, f"{key}.cls", str(labels[i]).encode())
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                column = kind(part[0][2])
                table = {"key": [k for k, _, _ in part], column: pa.array([d for _, d, _ in part], pa.binary())}
                if labels is not None:
                    table["label"] = pa.array(labels[start:start + len(part)], pa.int64())
                pq.write_table(pa.table(table), stream, row_group_size=ROW_GROUP)
        written.append(path)
    return written
