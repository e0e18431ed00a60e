"""MLflow run layout.

- One experiment per run or sweep name (``tracking.experiment`` overrides it), artifacts under
  ``tracking.artifact_location`` (a local store) or proxied by the tracking server.
- ``selfsup train``: one run. ``selfsup sweep``: a parent run for the sweep (tag
  ``selfsup.role=sweep``) and one child run per trial (``mlflow.parentRunId``), found again by
  its tag ``selfsup.trial_id`` so that a resumed trial continues its run instead of adding one.
- Params: the flattened config (``optim.lr``, ...). Metrics: every epoch, ``step = epoch``, names as
  in DESIGN.md. Artifact: ``config.yaml``. Status: FINISHED, FAILED or KILLED as it really ended.
- A store that cannot be reached (a tracking server down or restarting) is waited out: every call
  made through :func:`client` is retried every :data:`RETRY_S` seconds for up to
  ``tracking.patience_s`` (:func:`set_patience`), then fails with :class:`TrackingUnreachable`,
  one line naming the store. Retried writes land once: a metric is keyed by (key, step,
  timestamp, value), a tag or param by its key, and a run is created only after a search for its
  key found none.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from selfsup import console

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
PREPROCESS_NODES = "selfsup.preprocess_nodes"
"""The Ray node ids whose Ray Data tasks made rank 0's batches in its first epoch since its latest
(re)start (JSON list; ``data.ingest: ray_data``)."""
SPECTRUM = "spectrum.json"
"""Artifact of a run's last epoch: singular values of its backbone embeddings of the evaluation subset."""
KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
"""MLflow's experiment kind: without it MLflow 3's UI opens an experiment on its GenAI pages
(traces, evaluation runs); a model-training experiment opens on its runs table."""
NOTE = "mlflow.note.content"
"""The tag MLflow's UI shows as a run's description."""
COLLAPSED = "selfsup.collapsed"
COLLAPSED_METRIC = "collapsed"
"""The metric of every epoch (1.0 or 0.0) when collapse detection is on (``eval.collapse_rankme``)."""
COLLAPSE = "selfsup.collapse"
"""Where and why a run collapsed (``epoch 3: loss not finite``); that epoch has no checkpoint."""
SKIPPED = "selfsup.skipped_checkpoints"
"""Checkpoints a restart found damaged or missing and skipped, with why (JSON list)."""
CHECKPOINT = "selfsup.checkpoint"
"""The run's latest checkpoint directory (``state.pt``), updated every epoch."""
CONTINUES = "selfsup.continues"
"""The run a ``selfsup train --from`` run continues (also its MLflow parent)."""
COMPILE = "selfsup.compile"
"""Whether the run's step is compiled (``train.compile``): ``on``, ``off``, or ``fallback: <reason>``."""
INPUT_SHAPE, GROUPS = "selfsup.input_shape", "selfsup.table_groups"
"""One sample's shape and a table's column widths (JSON): what rebuilding the backbone needs."""
_BATCH = 100
RETRY_S = 2.0
_patience_s = 300.0


class TrackingUnreachable(RuntimeError):
    """The tracking store stayed unreachable for longer than ``tracking.patience_s``."""


def set_patience(seconds: float) -> None:
    """How long calls wait out an unreachable store in this process (``tracking.patience_s``)."""
    global _patience_s
    _patience_s = float(seconds)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached (as opposed to refusing the request)."""
    text = str(exc)
    return (
        "failed with exception" in text  # MLflow's REST client: connection refused, reset, timed out
        or any(f"error code {code}" in text for code in (502, 503, 504))  # a proxy in front of a restarting server
        or "database is locked" in text  # sqlite under heavy concurrent writes
    )


_down_since: float | None = None
"""When this process found the store unreachable (``None``: it is reachable): said once per outage."""


def patiently(uri: str, what: str, call):
    """``call()``, retried while the store at ``uri`` is :func:`unreachable`; after the patience
    runs out, :class:`TrackingUnreachable`. The console hears once when an outage begins and ends."""
    global _down_since
    first = None
    while True:
        try:
            result = call()
        except Exception as exc:
            if not unreachable(exc):
                raise
            now = time.monotonic()
            first = first or now
            if _down_since is None:
                _down_since = now
                print(f"[selfsup] WARNING: MLflow tracking store {uri} unreachable ({what}); retrying every {RETRY_S:g} s "
                      f"for up to {_patience_s:g} s", file=console.current(), flush=True)
            if now - first >= _patience_s:
                reason = str(exc).split(" (Caused by")[0].splitlines()[0]
                raise TrackingUnreachable(f"MLflow tracking store {uri}: unreachable for {now - first:.0f} s ({what}: {reason}); "
                                          f"checkpoints are kept: resume once it is back (tracking.patience_s sets the wait)") from None
            time.sleep(RETRY_S)
            continue
        if _down_since is not None:
            print(f"[selfsup] MLflow tracking store {uri} reachable again after {time.monotonic() - _down_since:.0f} s",
                  file=console.current(), flush=True)
            _down_since = None
        return result


class PatientClient:
    """An :class:`MlflowClient` whose every call goes through :func:`patiently`."""

    def __init__(self, uri: str):
        self.uri, self.inner = uri, MlflowClient(tracking_uri=uri)

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: patiently(self.uri, name, lambda: attr(*args, **kwargs))


def client(uri: str) -> PatientClient:
    # MLflow's own retries (7, backoff up to minutes) would hide an outage from the patience above:
    # a few quick ones, then ours at a steady pace (an explicit setting of these wins).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    return PatientClient(uri)


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
    """Create a run, or reopen (status RUNNING) the newest run matching ``key`` tags. With a
    ``key``, a retried create looks for its run first (a reply lost after the create was done)."""
    inner = client(uri).inner

    def create() -> str:
        found = find_run(uri, exp_id, key) if key else None
        return found or inner.create_run(exp_id, run_name=run_name, tags=tags).info.run_id

    run_id = find_run(uri, exp_id, key) if key else None
    if run_id is None:
        return patiently(uri, "create_run", create)
    client(uri).update_run(run_id, status="RUNNING")
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


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int, timestamp_ms: int | None = None,
                tags: dict[str, str] | None = None) -> None:
    """Log ``metrics`` at ``step`` (at ``timestamp_ms``, default now: logging the same values again
    at the same step and timestamp adds nothing), and ``tags`` in the same request."""
    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    extra = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    c = client(uri)
    for i in range(0, max(len(items), 1), _BATCH):
        c.log_batch(run_id, metrics=items[i : i + _BATCH], tags=extra if i == 0 else [])


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


def sqlite_file(uri: str) -> Path:
    """The absolute path of a ``sqlite:///FILE`` store: ``sqlite:///runs.db`` is ``runs.db`` in the
    current directory, ``sqlite:////abs/runs.db`` is absolute (SQLAlchemy's reading)."""
    path = urlsplit(uri).path
    return Path(path[1:] if path.startswith("/") else path).resolve()


def require_store(uri: str, timeout_s: float = 10.0) -> None:
    """For the verbs that only read (``export``, ``report``): a sqlite store must already exist
    (MLflow would create an empty one), and a tracking server must answer within ``timeout_s``
    (any HTTP answer will do, an auth challenge too): :class:`LookupError` otherwise, at once,
    where a run's writes wait out ``tracking.patience_s``."""
    if uri.startswith("sqlite:") and not sqlite_file(uri).is_file():
        raise LookupError(f"no tracking store at {uri} (the file does not exist; --tracking-uri names another)")
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:
            pass  # it answered
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LookupError(f"tracking server {uri} cannot be reached ({reason}); is it running? --tracking-uri names another") from None


def find_experiment(uri: str, name: str) -> str | None:
    exp = client(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else None


def usable_checkpoint(tags: dict[str, str], allow_collapsed: bool = False) -> str:
    """The checkpoint a finished run with ``tags`` hands on to ``export`` and ``--from``: its
    :data:`CHECKPOINT`. A run that collapsed or diverged raises :class:`LookupError` (its
    weights are not a result) unless ``allow_collapsed``; its checkpoint is then the last healthy
    epoch's (a collapsed epoch is never checkpointed)."""
    collapsed = tags.get(COLLAPSED) == "true"
    if collapsed and not allow_collapsed:
        raise LookupError(f"the run collapsed ({tags.get(COLLAPSE, 'selfsup.collapsed=true')}): its weights are not a result; "
                          "--allow-collapsed takes its last healthy checkpoint")
    path = tags.get(CHECKPOINT)
    if not path:
        raise LookupError(f"the run has no checkpoint{' from before it collapsed' if collapsed else ''} ({CHECKPOINT} tag)")
    return path
