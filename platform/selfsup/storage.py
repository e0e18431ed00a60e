"""Where checkpoints and Tune state live: a local folder or any pyarrow filesystem URI
(``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``). For S3 the endpoint, region and keys come
from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ...),
so MinIO, Ceph or GCS's S3 interface work as AWS does. Ray Train and Tune read and write the same
places through the same pyarrow filesystems; this module is what selfsup itself needs of them."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` (object stores, ``file://``), false for a plain local path."""
    return "://" in path


def is_local(path: str) -> bool:
    """A path only the machine that reads it can resolve: a plain path or ``file://``."""
    return not is_uri(path) or path.startswith("file://")


def local_path(path: str) -> str:
    """A local path or ``file://`` URI as a plain path."""
    return path.removeprefix("file://")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path inside it)`` for a URI or a local path."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), str(Path(path).resolve())
    return pafs.FileSystem.from_uri(path)


def exists(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def is_file(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.File


def read_bytes(path: str) -> bytes:
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as f:
        return f.read()


def open_input(path: str):
    """A binary stream of ``path`` (``read(n)``, a context manager): a file read in pieces."""
    fs, inner = filesystem(path)
    return fs.open_input_stream(inner)


def write_bytes(path: str, data: bytes) -> None:
    fs, inner = filesystem(path)
    with fs.open_output_stream(inner) as f:
        f.write(data)


def subfolders(path: str) -> list[str]:
    """Names of the folders directly under ``path`` (none if it does not exist)."""
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def make_folder(path: str) -> None:
    """Create the folder ``path`` (and its parents); an object store gets a folder marker."""
    fs, inner = filesystem(path)
    fs.create_dir(inner, recursive=True)


def move(src: str, dst: str) -> None:
    fs, inner = filesystem(src)
    fs.move(inner, filesystem(dst)[1])
