"""``selfsup export``: a run's trained encoder out of its checkpoint.

:func:`export_run` rebuilds the encoder a run evaluates (``Method.encoder``: the backbone, or the
EMA target encoder of the JEPAs) from the run's latest checkpoint (tag ``selfsup.checkpoint``: a
local folder or an object-store URI such as ``s3://bucket/...``), its ``config.yaml`` and its input
shape, and writes it with ``selfsup.models.saved.save_backbone`` (safetensors + JSON), so that
``load_backbone`` gives an identical module anywhere. It lives beside the checkpoints it reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from selfsup import storage
from selfsup.errors import first_line
from selfsup.tracking import runs
from selfsup.train import checkpoints


def export_run(uri: str, run_id: str, out: str | Path, allow_collapsed: bool = False) -> Path:
    """Write the run's trained encoder to ``out`` (``backbone.safetensors`` + ``backbone.json``); a
    run that collapsed is refused (:class:`LookupError`) unless ``allow_collapsed``, which takes its
    last healthy checkpoint."""
    from selfsup.methods import METHODS
    from selfsup.models.backbones import build_backbone
    from selfsup.models.saved import backbone_kwargs, save_backbone

    from mlflow.exceptions import MlflowException

    runs.require_store(uri)
    try:
        run = runs.get_run(uri, run_id)
    except MlflowException:
        raise LookupError(f"run {run_id!r} not found in {uri}") from None
    try:
        where = runs.usable_checkpoint(run.tags, allow_collapsed)
    except LookupError as exc:
        raise LookupError(f"run {run_id}: {exc}") from None
    try:
        found = storage.is_file(storage.join(where, checkpoints.STATE))
    except OSError as exc:  # an object store this machine cannot reach (endpoint, keys)
        raise FileNotFoundError(f"run {run_id}: cannot read {where}: {first_line(exc)}") from None
    if not found:
        raise FileNotFoundError(f"run {run_id}: no checkpoint readable from here ({where})")
    try:
        state = checkpoints.read(where)["engine"]["method"]
    except checkpoints.CheckpointError as exc:
        raise FileNotFoundError(f"run {run_id}: {exc}") from None
    text = runs.read_text(uri, run_id, "config.yaml")
    if text is None or runs.INPUT_SHAPE not in run.tags:
        raise LookupError(f"run {run_id}: not a selfsup training run (no config.yaml or input shape)")
    cfg = yaml.safe_load(text)
    in_shape, groups = json.loads(run.tags[runs.INPUT_SHAPE]), json.loads(run.tags.get(runs.GROUPS, "null"))
    prefix = METHODS[cfg["method"]["name"]].encoder + "."
    net = build_backbone(**backbone_kwargs(cfg["model"], in_shape, groups))
    net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    source = {"run_id": run_id, "run_name": run.name, "checkpoint": where, "method": cfg["method"]["name"], "dataset": cfg["data"]["name"]}
    return save_backbone(net, out, cfg["model"], in_shape, groups, source)
