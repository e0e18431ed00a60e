"""Every private surface of Ray that selfsup relies on, in one place. Ray is pinned (==2.60.0) and
``tests/unit/test_ray_private.py`` checks each one against the installed Ray, failing with the
API's name when an upgrade changes it; nowhere else in selfsup imports ``ray.*._internal`` or
``ray._private``. Each has no public equivalent:

- Train V2's ``DatasetsCallback``, which ``TorchTrainer._create_default_callbacks`` adds to every
  run and which starts a Ray Data ``DatasetManager`` actor: :class:`Trainer` leaves it out of runs
  given no Ray Dataset (selfsup's workers load their data themselves), one process start less on
  the path to a run's first step.
- Train V2's checkpoint record, ``checkpoint_manager_snapshot.json`` in a run's storage folder
  (``CheckpointManager``'s ``_CheckpointManagerState`` as JSON): a record naming a checkpoint
  folder that is gone makes Train fail at restore, so :func:`record_folders` reads the folders it
  names and :func:`check_record` moves such a record aside first; a restarted worker reads the
  folders it names (:func:`tracked_folders`) so as not to write a checkpoint into one of them
  (``selfsup.train.checkpoints.restart_names``).
"""

from __future__ import annotations

import json
import time

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

from selfsup import storage

RECORD = "checkpoint_manager_snapshot.json"
"""Ray Train's record of a run's reported checkpoints, in the run's storage folder
(``ray.train.v2._internal.constants.CHECKPOINT_MANAGER_SNAPSHOT_FILENAME``)."""


class Trainer(TorchTrainer):
    """A ``TorchTrainer`` that starts no Ray Data ``DatasetManager`` actor when it is given no Ray
    Dataset: overrides Train V2's private ``_create_default_callbacks``."""

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        return callbacks if self.datasets else [c for c in callbacks if not isinstance(c, DatasetsCallback)]


def record_folders(text: str) -> list[str]:
    """The checkpoint folder names (``epoch-00003``) a checkpoint record's JSON ``text`` names, in
    its ``checkpoint_results`` and ``latest_checkpoint_result``. Raises ``ValueError`` for text that
    is not such a record."""
    state = json.loads(text)
    try:
        results = [*state["checkpoint_results"], *([state["latest_checkpoint_result"]] if state.get("latest_checkpoint_result") else [])]
        return sorted({r["checkpoint_dir_name"] for r in results})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a Ray Train checkpoint record: no {exc}") from None


def tracked_folders(run_dir: str) -> list[str]:
    """The checkpoint folder names Ray Train's record in ``run_dir`` holds (its controller tracks
    them, and deletes them when they fall out of ``checkpoints_to_keep``); none when there is no
    readable record."""
    try:
        return record_folders(storage.read_bytes(storage.join(run_dir, RECORD)).decode())
    except (OSError, ValueError):
        return []


def check_record(run_dir: str) -> str | None:
    """If Ray Train's checkpoint record in ``run_dir`` cannot be read or names a checkpoint folder
    that is gone, move it aside (``.damaged-<time>``) and return a warning; else ``None``."""
    record = storage.join(run_dir, RECORD)
    if not storage.is_file(record):
        return None
    try:
        missing = [n for n in record_folders(storage.read_bytes(record).decode()) if not storage.exists(storage.join(run_dir, n))]
        problem = f"it names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} gone" if missing else None
    except (OSError, ValueError) as exc:
        problem = f"it is unreadable ({type(exc).__name__})"
    if problem is None:
        return None
    aside = f"{record}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    storage.move(record, aside)
    return f"Ray Train's checkpoint record {record} was moved to {aside}: {problem}; the run resumes from its newest readable checkpoint folder"
