"""A run's checkpoints: ``epoch-NNNNN/`` folders under ``train.storage_path/<train run>`` (an
epoch trained again after a restart, while a folder of its name is still there, writes
``epoch-NNNNN-K/``: see :func:`restart_names`), each
holding ``state.pt`` (the engine state and the epoch, tensors and plain values only) and
``manifest.json`` (the epoch, and the size and SHA-256 of ``state.pt``).

A checkpoint is complete only when its manifest is there and ``state.pt`` matches it: Ray Train
copies a checkpoint's files into storage one by one, so a kill during the copy leaves a folder
whose manifest is missing or does not match, never one that reads as complete. Reading never
unpickles code (``torch.load(weights_only=True)``).

Resuming (see :func:`newest_readable`) takes the newest complete checkpoint and says which newer
ones it skipped and why (and ``selfsup.train.ray_private.check_record`` moves aside a Ray Train
checkpoint record that names a folder that is gone, so that the run resumes from its folders).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import re
from pathlib import Path
from typing import Callable

import torch

from selfsup import storage
from selfsup.errors import first_line

STATE, MANIFEST = "state.pt", "manifest.json"
_FOLDER = re.compile(r"^epoch-(\d{5,})(?:-(\d+))?$")
CHUNK = 16 << 20


class CheckpointError(Exception):
    """A checkpoint folder that is incomplete or unreadable (the message says which and why)."""


def folder_name(epoch: int, again: int = 0) -> str:
    """``epoch-00003``; ``epoch-00003-2`` for the second time epoch 3 is written again."""
    return f"epoch-{epoch:05d}" + (f"-{again}" if again else "")


def restart_names(run_dir: str, tracked: list[str]) -> Callable[[int], str]:
    """The folder name each epoch of a restarted run is written to: its plain name
    (:func:`folder_name`) unless a folder of that name is under ``run_dir`` or Ray Train's
    controller still tracks one (``tracked``: the names in its checkpoint record) — a damaged
    checkpoint resumed past, or one newer than the checkpoint resumed from — then the first free
    ``epoch-NNNNN-K``. Train deletes the checkpoints beyond ``train.checkpoints_to_keep`` folder by
    folder, so two of its checkpoints in one folder would delete each other's files. A tracked
    folder that is gone is made again, empty (it reads as incomplete), for Train's deletion of it to
    find: Ray Train 2.60 fails the run on one it cannot find
    (``checkpoint_manager._save_state_and_delete_old_checkpoints``, ``storage.delete_fs_path``)."""
    present = set(storage.subfolders(run_dir))
    for name in tracked:
        if name not in present:
            storage.make_folder(storage.join(run_dir, name))
    taken = present | set(tracked)

    def name(epoch: int) -> str:
        again = 0
        while folder_name(epoch, again) in taken:
            again += 1
        return folder_name(epoch, again)

    return name


def write(folder: Path, state: dict, epoch: int) -> None:
    """Write ``state`` (with ``epoch``) and, last, its manifest into the local ``folder``. The
    state is serialised straight into the file and hashed back from it in chunks: host memory
    holds the state once, not again as a buffer and a copy of it."""
    path = folder / STATE
    with open(path, "wb") as f:
        torch.save({**state, "epoch": epoch}, f)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    manifest = {"epoch": epoch, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def read(path: str, map_location="cpu") -> dict:
    """The state of the checkpoint folder ``path`` (local or a storage URI), verified against its
    manifest; :class:`CheckpointError` if it is incomplete or damaged. ``state.pt`` is hashed in
    chunks as it streams (from an object store into a local temporary file) and loaded memory-mapped
    (``torch.load(mmap=True)``): host memory holds the state once, as its tensors are read, not the
    file's bytes beside it."""
    try:
        manifest = json.loads(storage.read_bytes(storage.join(path, MANIFEST)))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete ({first_line(exc)})") from None
    source, remote = storage.join(path, STATE), not storage.is_local(path)
    with tempfile.TemporaryDirectory(prefix="selfsup-ckpt-") if remote else contextlib.nullcontext() as tmp:
        local = Path(tmp) / STATE if remote else Path(storage.local_path(source))
        digest, size = hashlib.sha256(), 0
        try:
            with storage.open_input(source) as src, open(local, "wb") if remote else contextlib.nullcontext() as copy:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if copy is not None:
                        copy.write(chunk)
        except OSError as exc:
            raise CheckpointError(f"{path}: incomplete ({first_line(exc)})") from None
        if size != manifest.get("bytes") or digest.hexdigest() != manifest.get("sha256"):
            raise CheckpointError(f"{path}: {STATE} does not match {MANIFEST} ({size} bytes, manifest says {manifest.get('bytes')})")
        try:
            return torch.load(local, map_location=map_location, weights_only=True, mmap=True)
        except Exception as exc:  # a file that matches its manifest but is not a state (written by something else)
            raise CheckpointError(f"{path}: {STATE} is not a selfsup state ({type(exc).__name__}: {exc})") from None


def folders(run_dir: str) -> list[tuple[int, str]]:
    """``(epoch, path)`` of every checkpoint folder under ``run_dir``, newest first (of one epoch,
    the one written last first)."""
    found = [((int(m.group(1)), int(m.group(2) or 0)), storage.join(run_dir, name)) for name in storage.subfolders(run_dir)
             if (m := _FOLDER.match(name))]
    return [(epoch, path) for (epoch, _), path in sorted(found, reverse=True)]


def newest_readable(run_dir: str) -> tuple[dict | None, str | None, list[str]]:
    """``(state, path, problems)``: the newest complete checkpoint folder under ``run_dir`` (read
    onto the CPU), or
    ``(None, None, problems)`` if there is none; ``problems`` says which newer ones were skipped
    and why. A folder newer than the last one Ray Train's controller took in (it polls its
    workers) is complete all the same once its manifest matches, so it is used."""
    problems: list[str] = []
    for _, path in folders(run_dir):
        try:
            return read(path), path, problems
        except CheckpointError as exc:
            problems.append(str(exc))
    return None, None, problems
