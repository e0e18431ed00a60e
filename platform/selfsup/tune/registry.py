"""The MLflow model registry of a sweep's picks.

:func:`register_pick` exports the picked trial's encoder (``train.export.export_run``), logs the
directory as the trial run's ``backbone/`` artifacts and registers it as a new version of the
registered model named after the sweep, with the trial's config and final metrics as version tags.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from selfsup.tracking import runs
from selfsup.train.export import export_run


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
