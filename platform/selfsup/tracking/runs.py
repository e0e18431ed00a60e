"""MLflow run layout.

- One experiment per run or sweep name (``tracking.experiment`` overrides it), artifacts under
  ``tracking.artifact_location`` (a local store) or proxied by the tracking server.
- ``selfsup train``: one run. ``selfsup sweep``: a parent run for the sweep (tag
  ``selfsup.role=sweep``) and one child run per trial (``mlflow.parentRunId``), found again by
  its tag ``selfsup.trial_id`` so that a resumed trial continues its run instead of adding one.
- Params: the flattened config (``optim.lr``, ...). Metrics: every epoch, ``step = epoch``, names as
  in DESIGN.md. Artifact: ``config.yaml``. Status: FINISHED, FAILED or KILLED as it really ended.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

ROLE, TRIAL_ID, SWEEP, METHOD, DATASET = "selfsup.role", "selfsup.trial_id", "selfsup.sweep", "selfsup.method", "selfsup.dataset"
PARENT = "mlflow.parentRunId"
STOPPED = "selfsup.stopped_by"
SEARCHED = "selfsup.searched"
RESUMED = "selfsup.resumed_from_epoch"
STARTS = "selfsup.starts"
"""Every start of a run's worker loop, as the epoch it started after (JSON list): ``[0]`` never
restarted, ``[0, 2]`` resumed once from the checkpoint of epoch 2, ``[0, 0]`` restarted from scratch."""
NODES, TRIAL_NODE = "selfsup.nodes", "selfsup.trial_node"
"""The Ray node ids of a run's workers (JSON list, rank order) and of a trial's Tune function (and
so its Train controller) since their latest (re)start."""
SPECTRUM = "spectrum.json"
"""Artifact of a run's last epoch: singular values of its backbone embeddings of the evaluation subset."""
KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
"""MLflow's experiment kind: without it MLflow 3's UI opens an experiment on its GenAI pages
(traces, evaluation runs); a model-training experiment opens on its runs table."""
NOTE = "mlflow.note.content"
"""The tag MLflow's UI shows as a run's description."""
COLLAPSED = "selfsup.collapsed"
SKIPPED = "selfsup.skipped_checkpoints"
"""Checkpoints a restart found damaged or missing and skipped, with why (JSON list)."""
CHECKPOINT = "selfsup.checkpoint"
"""The run's latest checkpoint directory (``state.pt``), updated every epoch."""
INPUT_SHAPE, GROUPS = "selfsup.input_shape", "selfsup.table_groups"
"""One sample's shape and a table's column widths (JSON): what rebuilding the backbone needs."""
_BATCH = 100


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str, artifact_location: str | None) -> str:
    """Get or create the experiment ``name``, tagged a model-training experiment (:data:`KIND`):
    artifacts under ``artifact_location/name``, or with none given where the tracking server puts
    them (its proxied ``mlflow-artifacts:/``)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        if exp.tags.get(KIND) != MODEL_TRAINING:
            c.set_experiment_tag(exp.experiment_id, KIND, MODEL_TRAINING)
        return exp.experiment_id
    if artifact_location is None:
        return c.create_experiment(name, tags={KIND: MODEL_TRAINING})
    location = artifact_location if "://" in artifact_location else f"file://{artifact_location}"
    return c.create_experiment(name, artifact_location=f"{location.rstrip('/')}/{name}", tags={KIND: MODEL_TRAINING})


def find_run(uri: str, exp_id: str, tags: dict[str, str]) -> str | None:
    """Newest run of the experiment whose tags include all of ``tags``, or ``None``."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client(uri).search_runs([exp_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def start_run(uri: str, exp_id: str, run_name: str, tags: dict[str, str], key: dict[str, str] | None = None) -> str:
    """Create a run, or reopen (status RUNNING) the newest run matching ``key`` tags."""
    c = client(uri)
    run_id = find_run(uri, exp_id, key) if key else None
    if run_id is None:
        return c.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    c.update_run(run_id, status="RUNNING")
    return run_id


def log_params(uri: str, run_id: str, params: dict[str, object]) -> None:
    """Log params (values stringified), skipping those the run already has with the same value."""
    c = client(uri)
    have = c.get_run(run_id).data.params
    todo = [Param(k, str(v)) for k, v in params.items() if have.get(k) != str(v)]
    for i in range(0, len(todo), _BATCH):
        c.log_batch(run_id, params=todo[i : i + _BATCH])


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    client(uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def add_start(uri: str, run_id: str, epoch: int) -> list[int]:
    """Append ``epoch`` to the run's :data:`STARTS` record; returns the whole record."""
    starts = [*json.loads(client(uri).get_run(run_id).data.tags.get(STARTS, "[]")), epoch]
    set_tags(uri, run_id, {STARTS: json.dumps(starts)})
    return starts


def log_text(uri: str, run_id: str, text: str, name: str) -> None:
    client(uri).log_text(run_id, text, name)


def log_file(uri: str, run_id: str, path: str) -> None:
    client(uri).log_artifact(run_id, path)


def read_text(uri: str, run_id: str, name: str) -> str | None:
    """The text artifact ``name`` of a run, or ``None`` if it has none."""
    import os
    import tempfile
    from pathlib import Path

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in the report
    if name not in {a.path for a in client(uri).list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client(uri).download_artifacts(run_id, name, tmp)).read_text()


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    c = client(uri)
    for i in range(0, len(items), _BATCH):
        c.log_batch(run_id, metrics=items[i : i + _BATCH])


def end_run(uri: str, run_id: str, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED."""
    client(uri).set_terminated(run_id, status=status)


@dataclass
class RunRecord:
    """What the report needs of one run, as plain data."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def child_runs(uri: str, exp_id: str, parent_run_id: str) -> list[RunRecord]:
    """All trial runs of a sweep, oldest first."""
    runs = client(uri).search_runs(
        [exp_id], filter_string=f"tags.`{PARENT}` = '{parent_run_id}'", order_by=["attributes.start_time ASC"], max_results=5000
    )
    return [
        RunRecord(r.info.run_id, r.info.run_name, r.info.status, dict(r.data.params), dict(r.data.metrics), dict(r.data.tags))
        for r in runs
    ]


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of one metric, by step."""
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def metric_timeline(uri: str, run_id: str, key: str) -> list[tuple[int, float, float]]:
    """``[(step, value, logged at (s since the epoch)), ...]`` of one metric, by time."""
    return sorted(((m.step, m.value, m.timestamp / 1000) for m in client(uri).get_metric_history(run_id, key)), key=lambda e: (e[2], e[0]))


def last_step(uri: str, run_id: str, key: str) -> int:
    """The highest step logged for metric ``key`` (0 when none)."""
    return max((m.step for m in client(uri).get_metric_history(run_id, key)), default=0)


def get_run(uri: str, run_id: str) -> RunRecord:
    r = client(uri).get_run(run_id)
    return RunRecord(r.info.run_id, r.info.run_name, r.info.status, dict(r.data.params), dict(r.data.metrics), dict(r.data.tags))


def find_experiment(uri: str, name: str) -> str | None:
    exp = client(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else None
