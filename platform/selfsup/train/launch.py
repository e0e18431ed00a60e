"""Launching a run: preflight checks, the ``TorchTrainer``, and the ``selfsup train`` verb."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from typing import NamedTuple

import ray
import yaml
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

from selfsup import storage
from selfsup.config import ConfigError, ExperimentConfig, flatten, resolve_paths
from selfsup.console import log_path, quiet
from selfsup.errors import first_line
from selfsup.tracking import runs
from selfsup.train import checkpoints
from selfsup.train.cluster import check_cluster, init_ray
from selfsup.train.ray_private import Trainer, check_record
from selfsup.train.progress import EpochProgress


def preflight(cfg: ExperimentConfig, source: str = "config"):
    """Everything that can be checked before Ray starts: the data loads, a global batch fits in
    the train split, and the model runs on one sample batch. Raises a one-line error; returns the
    loaded dataset (for :func:`fit` to share)."""
    import torch

    from selfsup.data.views import DistinctGroups, SeededBatch
    from selfsup.train.worker import build, load_data, make_collate, training_views

    data = load_data(cfg)
    n = len(data.train.x)
    if cfg.train.batch_size > n:
        raise ConfigError(f"{source}: train.batch_size: {cfg.train.batch_size} exceeds the {n} training samples of {data.name}")
    try:
        method = build(cfg, data.shape, data.groups, data.train.x)
        if method.batch_groups() is not None:
            DistinctGroups(method.batch_groups(), cfg.train.batch_size)  # enough groups for a batch
        samples = SeededBatch((x,) for x in data.train.x[:2])
        samples.indices = [0, 1]  # as the loader reads them: with their indices (InterCLR's bank)
        batch = make_collate(cfg, method, data)(samples)
        if cfg.data.augment_on == "device":
            batch["views"] = training_views(cfg, data)(batch["views"][0])
        with torch.no_grad():
            out = method.train()(batch)
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        first = first_line(exc)
        raise ConfigError(f"{source}: model: {cfg.model.backbone} + {cfg.method.name} fails on inputs {tuple(data.shape)}: {first}") from None
    if "loss" not in out:
        raise ConfigError(f"{source}: method.name: {cfg.method.name} returned no 'loss'")
    return data


FAULT_AFTER_EPOCH = "SELFSUP_FAULT_AFTER_EPOCH"
"""Fault injection, for the tests and the fault benchmarks: with ``N`` set in the environment of
the process that launches a run, the run's last worker exits abruptly (as if killed) right after
reporting epoch ``N``, once (a restart that resumes past ``N`` runs on). A kill at a known point,
where a timer would race the run."""


START_TIMEOUT = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
"""Ray Train's wait for a worker group's placement, per attempt (60 s unless set)."""


def placement_retries(timeout_s: float) -> int:
    """Ray Train's ``controller_failure_limit`` for ``scaling.placement_timeout_s``: the attempts to
    place the workers after the first (each waits :data:`START_TIMEOUT`) that fit in ``timeout_s``,
    rounded up. Then the run fails with Train's reason ("worker group startup timed out ...")."""
    per_attempt = float(os.environ.get(START_TIMEOUT, "60"))
    return max(0, math.ceil(timeout_s / per_attempt) - 1)


def train_loop(config: dict) -> None:
    """What each Ray Train worker runs: ``selfsup.train.worker.train_loop``, imported there, so that
    the process that launches a run (a sweep's trial) does not import the model and data stack."""
    from selfsup.train.worker import train_loop as loop

    loop(config)


def fit(cfg: ExperimentConfig, run_id: str | None, name: str, callbacks: list | None = None, data=None, continues: str | None = None) -> ray.train.Result:
    """Run ``cfg`` on ``scaling.num_workers`` Ray Train workers; a run ``name`` that already has
    checkpoints under ``train.storage_path`` resumes from the newest complete one. ``data``: the
    dataset ``cfg`` loads, in Ray's object store (an ``ObjectRef``), or None for each worker to load it.
    ``continues``: the checkpoint a run without checkpoints of its own starts from (``--from``)."""
    s = cfg.scaling
    fault = os.environ.get(FAULT_AFTER_EPOCH)
    warning = check_record(storage.join(cfg.train.storage_path, name))
    if warning:
        print(f"[selfsup] WARNING: {warning}", flush=True)
    trainer = Trainer(
        train_loop,
        train_loop_config={"experiment": cfg.model_dump(mode="json"), "run_id": run_id, "train_run": name, "data": data, "launched": time.time(),
                           "continues": continues, "fault_after_epoch": int(fault) if fault else None},
        scaling_config=ScalingConfig(num_workers=(s.min_workers, s.num_workers) if s.min_workers else s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker={"CPU": s.cpus_per_worker, **s.resources}),
        run_config=RunConfig(
            name=name,
            storage_path=cfg.train.storage_path,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures, controller_failure_limit=placement_retries(s.placement_timeout_s)),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
            callbacks=callbacks or [],
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    return trainer.fit()


def open_run(cfg: ExperimentConfig, run_name: str, tags: dict[str, str], experiment: str, key: dict[str, str] | None = None) -> str:
    """Create (or reopen by ``key``) the MLflow run of ``cfg`` with its params and config.yaml."""
    t = cfg.tracking
    exp_id = runs.experiment_id(t.uri, experiment, t.artifact_location)
    run_id = runs.start_run(t.uri, exp_id, run_name, tags={**tags, runs.METHOD: cfg.method.name, runs.DATASET: cfg.data.name}, key=key)
    dump = cfg.model_dump(mode="json")
    runs.log_params(t.uri, run_id, flatten(dump))
    runs.log_text(t.uri, run_id, yaml.safe_dump(dump, sort_keys=False), "config.yaml")
    return run_id


def run_tracked(cfg: ExperimentConfig, run_id: str, name: str, data=None, continues: str | None = None) -> runs.RunRecord:
    """:func:`fit` with the MLflow run ended truthfully: FINISHED, FAILED, KILLED on Ctrl-C, or
    KILLED with ``selfsup.stopped_by=collapse`` when it collapsed or diverged. Returns the run as
    MLflow holds it (Ray Train's result holds the metrics of the newest checkpoint, and a collapsed
    epoch has none)."""
    try:
        fit(cfg, run_id, name, data=data, continues=continues)
    except KeyboardInterrupt:
        runs.end_run(cfg.tracking.uri, run_id, "KILLED")
        raise
    except BaseException:
        runs.end_run(cfg.tracking.uri, run_id, "FAILED")
        raise
    record = runs.get_run(cfg.tracking.uri, run_id)
    status = "KILLED" if record.tags.get(runs.COLLAPSED) == "true" else "FINISHED"
    if status == "KILLED":  # as a sweep ends a collapsed trial
        runs.set_tags(cfg.tracking.uri, run_id, {runs.STOPPED: "collapse"})
    runs.end_run(cfg.tracking.uri, run_id, status)
    return replace(record, status=status)


class Continued(NamedTuple):
    """The run a ``--from`` run continues: its MLflow run, experiment and newest checkpoint."""

    run_id: str
    experiment: str
    checkpoint: str


def check_continuation(cfg: ExperimentConfig, from_run: str, source: str, allow_collapsed: bool = False) -> Continued:
    """What ``selfsup train --from RUN`` continues, checked before Ray starts: a FINISHED run of
    the tracking store with a readable checkpoint whose weights fit ``cfg``'s model and method,
    under the infinite schedule (a cosine schedule ends where its run ends). A run that collapsed
    or diverged is refused unless ``allow_collapsed``: then its latest checkpoint, the last
    healthy epoch's, is taken. One-line :class:`ConfigError` otherwise."""
    from selfsup.train.worker import build

    where = f"{source}: --from {from_run}"
    if cfg.optim.schedule != "infinite":
        raise ConfigError(f"{where}: continuing needs optim.schedule: infinite (a cosine schedule has decayed to its end with the run)")
    try:
        run = runs.client(cfg.tracking.uri).get_run(from_run)
    except Exception as exc:  # MLflow raises its own types for a run id it does not know
        raise ConfigError(f"{where}: no such run in {cfg.tracking.uri} ({type(exc).__name__})") from None
    try:
        path = runs.usable_checkpoint(run.data.tags, allow_collapsed)
    except LookupError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if run.info.status != "FINISHED" and run.data.tags.get(runs.COLLAPSED) != "true":
        raise ConfigError(f"{where}: the run is {run.info.status}, not FINISHED (resume it instead)")
    try:
        state = checkpoints.read(path)
    except checkpoints.CheckpointError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    shape = tuple(json.loads(run.data.tags.get(runs.INPUT_SHAPE, "[]")))
    groups = json.loads(run.data.tags.get(runs.GROUPS, "null"))
    try:
        build(cfg, shape, tuple(groups) if groups else None).load_state_dict(state["engine"]["method"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = first_line(exc)
        raise ConfigError(f"{where}: its checkpoint does not fit this config's model and method: {first}") from None
    experiment = runs.client(cfg.tracking.uri).get_experiment(run.info.experiment_id).name
    return Continued(from_run, experiment, path)


def storage_exists(path: str, source: str) -> bool:
    """Whether ``path`` (``train.storage_path`` or below) exists; a store this machine cannot reach
    (an object store's endpoint, keys or bucket) is a one-line :class:`ConfigError`."""
    try:
        return storage.exists(path)
    except OSError as exc:
        raise ConfigError(f"{source}: train.storage_path: {path}: cannot reach it ({first_line(exc)})") from None


def train(cfg: ExperimentConfig, source: str = "config", ray_temp_dir: str | None = None, verbose: bool = False, from_run: str | None = None,
          allow_collapsed: bool = False) -> dict:
    """The ``selfsup train`` verb: one tracked run; returns the final metrics. The console shows
    a bar per epoch; Ray's and Train's own output goes to ``train.log`` beside the run's
    checkpoints (a local storage path) or ``./selfsup-logs/`` (with ``verbose``: to the console).
    ``from_run``: an MLflow run id this run continues (``--from``): it starts from that run's
    newest checkpoint (weights, optimizer, EMA targets, the schedule's step), in that run's
    experiment as its child (``allow_collapsed``: even a run that collapsed, from its last healthy
    checkpoint). A run that collapses ends KILLED (``selfsup.stopped_by=collapse``) and says so."""
    cfg = resolve_paths(cfg)
    data = preflight(cfg, source)
    storage_exists(cfg.train.storage_path, source)
    previous = check_continuation(cfg, from_run, source, allow_collapsed) if from_run else None
    name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    log = log_path(cfg.train.storage_path, name, "train.log")
    continuing = f", continuing run {previous.run_id} from {previous.checkpoint}" if previous else ""
    header = (f"run {name}: {cfg.method.name} on {cfg.data.name}, {cfg.train.epochs} epochs{continuing}; Ray's and Train's output: {log} "
              f"(--verbose shows it here)")
    with quiet(log, header, verbose) as console:
        init_ray(ray_temp_dir)
        check_cluster(cfg, source)
        runs.set_patience(cfg.tracking.patience_s)
        tags = {runs.ROLE: "run"}
        if previous:
            tags.update({runs.PARENT: previous.run_id, runs.CONTINUES: previous.run_id})
        run_id = open_run(cfg, name, tags, previous.experiment if previous else cfg.tracking.experiment or cfg.name)
        with EpochProgress(console, cfg.tracking.uri, run_id, cfg.train.epochs):
            run = run_tracked(cfg, run_id, name, ray.put(data), previous.checkpoint if previous else None)
    metrics, tags = run.metrics, run.tags
    if run.status == "KILLED":
        print(f"\nrun {name} collapsed ({tags.get(runs.COLLAPSE, 'see its log')}): MLflow run {run_id} ended KILLED; its latest "
              f"checkpoint is the last healthy epoch's ({tags.get(runs.CHECKPOINT, 'none')}), which export and --from take only with --allow-collapsed")
    else:
        print(f"\nrun {name} finished: MLflow run {run_id}; checkpoint {tags.get(runs.CHECKPOINT, '-')}")
    for key in sorted(k for k in metrics if "/" in k or k == "epoch"):
        print(f"  {key:30s} {metrics[key]:.4f}" if isinstance(metrics[key], float) else f"  {key:30s} {metrics[key]}")
    return metrics
