"""Pretrained backbones out of runs: ``selfsup export`` and the MLflow model registry.

``export_run`` rebuilds the encoder a run evaluates (``Method.encoder``: the backbone, or the EMA
target encoder of the JEPAs) from the run's latest checkpoint (tag ``selfsup.checkpoint``: a local
folder or an object-store URI such as ``s3://bucket/...``), its
``config.yaml`` and its input shape, and writes it with ``selfsup.models.saved.save_backbone``
(safetensors + JSON), so that ``load_backbone`` gives an identical module anywhere.

``register_pick`` does that for a sweep's picked trial, logs the directory as the trial run's
``backbone/`` artifacts and registers it as a new version of the registered model named after the
sweep, with the trial's config and final metrics as version tags.
"""

from __future__ import annotations

import json
import tempfile
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


def register_pick(uri: str, run_id: str, model_name: str, description: str = "") -> str:
    """Export ``run_id``'s encoder, log it on the run as ``backbone/`` and register it under
    ``model_name``; returns the new version number, or the version that already holds this run
    (registering again after an interruption adds none)."""
    from mlflow.exceptions import MlflowException

    c = runs.client(uri)
    done = c.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if done:
        return str(max(int(v.version) for v in done))
    with tempfile.TemporaryDirectory() as tmp:
        export_run(uri, run_id, Path(tmp) / "backbone")
        c.log_artifacts(run_id, str(Path(tmp) / "backbone"), "backbone")
    try:
        c.create_registered_model(model_name, description=description)
    except MlflowException:
        pass  # registered by an earlier sweep of the same name
    run = runs.get_run(uri, run_id)
    tags = {f"metric.{k}": f"{v:.6g}" for k, v in run.metrics.items() if not k.startswith("perf/")}
    tags.update({"selfsup.trial_id": run.tags.get(runs.TRIAL_ID, ""), "selfsup.method": run.tags.get(runs.METHOD, "")})
    config = runs.read_text(uri, run_id, "config.yaml") or ""
    if len(config) < 5000:  # MLflow's limit on a tag value
        tags["selfsup.config"] = config
    artifact_uri = c.get_run(run_id).info.artifact_uri
    version = c.create_model_version(model_name, f"{artifact_uri}/backbone", run_id=run_id, tags=tags, description=description)
    return str(version.version)
