"""The files of a folder dataset (image and video folders, WFDB records) wherever the folder is: on
this machine's disks or at any pyarrow filesystem URI (``s3://bucket/prefix``, ``gs://...``; the
endpoint and keys as :mod:`selfsup.storage` says).

A :class:`Folder` lists everything below its root once (one recursive listing: an object store's
"folders" are the prefixes of its keys); the datasets then pick their files from that list, and
read each file through :func:`open_binary` (a local file, or a random-access stream of the object:
a decoder's seeks become ranged reads). A path here is a plain string, local or URI.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from selfsup import storage
from selfsup.data.splits import DataError


def split_query(path: str) -> tuple[str, str]:
    """``s3://b/p?endpoint_override=h:9000`` -> ``("s3://b/p", "?endpoint_override=h:9000")``: a URI's
    options stay at its end when paths below it are made."""
    if not storage.is_uri(path):
        return path, ""
    base, sep, query = path.partition("?")
    return base, sep + query


class Folder:
    """The files below ``root`` (a local folder or a URI, whose options such as
    ``?endpoint_override=`` every file's URI keeps), as paths relative to it (``a/b.jpg``), sorted.
    A root that is not a folder (or an empty prefix) is a one-line :class:`DataError`."""

    def __init__(self, root: str, relative: list[str] | None = None):
        base, self.query = split_query(root)
        self.root = base.rstrip("/") if storage.is_uri(base) else str(Path(base))
        if relative is None:
            relative = self._listing()
        self.relative = relative

    def _listing(self) -> list[str]:
        from pyarrow import fs

        try:
            filesys, inner = storage.filesystem(self.root + self.query)
            if filesys.get_file_info(inner).type != fs.FileType.Directory:
                raise DataError(f"{self.root + self.query}: not a directory")
            infos = filesys.get_file_info(fs.FileSelector(inner, recursive=True))
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001  (pyarrow raises ArrowInvalid, OSError, ... for a URI it cannot reach)
            raise DataError(f"{self.root + self.query}: cannot list it ({str(exc).splitlines()[0]})") from None
        base = inner.rstrip("/") + "/"
        return sorted(i.path[len(base):] for i in infos if i.type == fs.FileType.File and i.path.startswith(base))

    @property
    def name(self) -> str:
        return PurePosixPath(self.root).name

    def path(self, relative: str) -> str:
        """The full path (or URI, with the root's options) of a file given relative to the root."""
        return f"{self.root}/{relative}{self.query}"

    def relative_name(self, path: str) -> str:
        """A full path made by :meth:`path` -> the path relative to the root (``a/b.jpg``)."""
        return split_query(path)[0][len(self.root) + 1:]

    def subfolders(self) -> list[str]:
        """The names of the folders directly below the root that hold files."""
        return sorted({r.split("/", 1)[0] for r in self.relative if "/" in r})

    def sub(self, name: str) -> Folder:
        """The folder ``name`` directly below the root."""
        return Folder(self.path(name), [r[len(name) + 1:] for r in self.relative if r.startswith(name + "/")])

    def files(self, suffixes, recursive: bool = True) -> list[str]:
        """Full paths of the files whose suffix (lower-cased) is one of ``suffixes``, sorted; only those
        directly in the root unless ``recursive``."""
        return [self.path(r) for r in self.relative if PurePosixPath(r).suffix.lower() in suffixes and (recursive or "/" not in r)]


def folder_parts(root: Folder) -> list[Folder]:
    """A user folder's parts: ``[train/, val/ or test/]`` when ``root`` holds ``train/`` and one of
    those beside it (its own split), else ``[root]`` (split by ``test_fraction``)."""
    names = root.subfolders()
    held_out = next((d for d in ("val", "test") if d in names), None)
    return [root.sub("train"), root.sub(held_out)] if "train" in names and held_out else [root]


def scan(root: Folder, suffixes) -> tuple[list[str], np.ndarray | None, list[str]]:
    """The files of a folder dataset: in class subfolders (labels by sorted folder name, files found
    at any depth below them) or directly in ``root`` (no labels). ``(paths, labels, classes)``."""
    by_class: dict[str, list[str]] = {}  # one pass over the listing (sorted, so each class's files are too)
    for r in root.relative:
        if "/" in r and PurePosixPath(r).suffix.lower() in suffixes:
            by_class.setdefault(r.split("/", 1)[0], []).append(root.path(r))
    if not by_class:
        return root.files(suffixes, recursive=False), None, []
    classes = sorted(by_class)
    files = [f for c in classes for f in by_class[c]]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(by_class[c]) for c in classes])
    return files, labels, classes


def open_binary(path: str):
    """``path`` opened for reading as a seekable binary file (a context manager): a local file, or
    an object read in ranges on demand."""
    if not storage.is_uri(path):
        return open(path, "rb")
    filesys, inner = storage.filesystem(path)
    return filesys.open_input_file(inner)


@contextlib.contextmanager
def local_copy(path: str, companions: list[str] = ()):
    """A local path of ``path`` for readers that take only file names (WFDB): itself when local, else
    a temporary copy of it and of the ``companions`` (file names beside it), removed afterwards."""
    if not storage.is_uri(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="selfsup-fetch-")
    try:
        base, query = split_query(path)
        parent, own = base.rsplit("/", 1)
        for name in [own, *companions]:
            (Path(folder) / name).write_bytes(storage.read_bytes(f"{parent}/{name}{query}"))
        yield str(Path(folder) / own)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
