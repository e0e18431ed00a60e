"""``selfsup sweep``: Ray Tune + OptunaSearch (TPE, seeded) + ASHA over Ray Train runs.

Each Tune trial is a function that builds the trial's config, opens its MLflow child run (keyed by
trial id) and launches a ``TorchTrainer`` with ``TuneReportCallback`` (the Train V2 pattern). The
Train run is named after the trial id, so a trial restarted by ``--resume``, or by Tune after its
node was lost (``trial_retries``), resumes from its own checkpoints and continues its own MLflow
run. A collapsed trial stops itself and is told to Optuna
as pruned; at the end the selection report goes onto the sweep's MLflow run and the default rule's
pick into the model registry.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from selfsup.config import (
    ConfigError,
    ExperimentConfig,
    SweepConfig,
    apply_overrides,
    build_experiment,
    flatten,
    is_server,
    load_space,
    read_yaml,
    resolve_paths,
)
from selfsup.methods import METHODS
from selfsup.metrics import LABEL_FREE, LIDAR_AUG, PROBES
from selfsup.report.publish import publish
from selfsup.report.selection import DEFAULT, sweep_report
from selfsup.tracking.server import runs_view
from selfsup.tracking import runs
from selfsup import storage
from selfsup.console import log_path, quiet
from selfsup.train.cluster import check_cluster, init_ray
from selfsup.train.launch import preflight, storage_exists
from selfsup.tune.trial import run_trial
from selfsup.tune.progress import LiveProgress
from selfsup.tune.registry import register_pick
from selfsup.tune.space import check_space, space_path, to_tune


class TrialRunStatus(tune.Callback):
    """Ends each trial's MLflow run with its true status, from the driver, as Tune decides it.

    The trial function cannot do this itself: Tune stops a trial the moment the scheduler says
    so (ASHA also says stop at the last epoch), often before the function returns. So: an
    errored trial FAILED; a collapsed one (its last result says ``collapsed``) KILLED with
    ``selfsup.stopped_by=collapse``; a completed one that trained all ``epochs`` FINISHED; a completed
    one with fewer epochs was stopped early by the scheduler: KILLED, ``selfsup.stopped_by=scheduler``.
    """

    def __init__(self, uri: str, exp_id: str, parent: str, epochs: int):
        self.uri, self.exp_id, self.parent, self.epochs = uri, exp_id, parent, epochs

    def _end(self, trial, status: str, stopped_by: str | None = None) -> None:
        run_id = runs.find_run(self.uri, self.exp_id, {runs.TRIAL_ID: trial.trial_id, runs.PARENT: self.parent})
        if run_id is None:
            return
        if stopped_by:
            runs.set_tags(self.uri, run_id, {runs.STOPPED: stopped_by})
        runs.end_run(self.uri, run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if last.get(runs.COLLAPSED_METRIC):
            self._end(trial, "KILLED", "collapse")
        elif last.get("epoch", 0) >= self.epochs:
            self._end(trial, "FINISHED")
        else:
            self._end(trial, "KILLED", "scheduler")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")


class CollapsePruningSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a collapsed trial was *pruned*: its last metric value
    describes a collapsed run, not the configuration, so TPE must not learn from it as a result."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and result.get(runs.COLLAPSED_METRIC):
            result = {k: v for k, v in result.items() if k != self.metric}  # no value -> PRUNED
        super().on_trial_complete(trial_id, result, error)


def base_config(sweep: SweepConfig, source: str) -> ExperimentConfig:
    """The sweep's base experiment with its overrides applied, the sweep's collapse threshold and
    local paths made absolute."""
    try:
        base = read_yaml(sweep.base)
    except ConfigError as exc:
        raise ConfigError(f"{source}: base: {exc}") from None
    tree = apply_overrides(base, sweep.overrides, f"{source}: overrides")
    cfg = build_experiment(tree, sweep.base)
    cfg.eval.collapse_rankme = sweep.collapse_rankme
    return resolve_paths(cfg)


def check_metric(sweep: SweepConfig, method: str, source: str) -> None:
    """The sweep's objective must be a metric its trials log: the label-free panel (and
    ``label_free/lidar_aug`` for masked methods), the method's own, the probes, or the loss."""
    m = METHODS[method]
    known = [*LABEL_FREE, *([LIDAR_AUG] if m.masked else []), *m.own_metrics, *PROBES, "train/loss"]
    if sweep.metric not in known:
        raise ConfigError(f"{source}: metric: {sweep.metric!r} is not a metric {method} trials log (one of: {', '.join(known)})")


def prepare(sweep: SweepConfig, source: str):
    """Validate everything a sweep needs before Ray starts: base config, objective, overrides,
    search space, data and model. Returns ``(base_cfg, base_tree, space, space_file, data)`` with absolute paths
    and the base config's loaded dataset."""
    base_cfg = base_config(sweep, source)
    check_metric(sweep, base_cfg.method.name, source)
    base_tree = base_cfg.model_dump(mode="json")
    space_file = space_path(sweep.search_space, base_cfg.method.name)
    space = load_space(space_file)
    check_space(space, base_tree, str(space_file))
    data = preflight(base_cfg, sweep.base)
    return base_cfg, base_tree, space, space_file, data


def grace_period(sweep: SweepConfig, epochs: int) -> int:
    """ASHA's grace period: the configured one (at most ``epochs``), else half the epochs."""
    grace = sweep.scheduler.grace_period
    return min(grace, epochs) if grace is not None else max(1, epochs // 2)


def preprocess_cpus(data) -> float:
    """The CPUs a trial's Ray Data preprocessing needs beside its workers' (``data.ingest:
    ray_data`` with no ``preprocess_resource``: on any node, so counted against the trial; pinned
    to nodes of their own, not): room for one task at a time."""
    return data.preprocess_cpus if data.uses_ray_data and not data.preprocess_resource else 0.0


def concurrency(sweep: SweepConfig, cpus_per_trial: float, cluster_cpus: float) -> int:
    """Trials that fit at once: each holds ``trial_cpus`` for its function plus its workers'
    CPUs (and its Ray Data preprocessing's), so a limit above what the cluster holds would leave
    trials waiting on each other, or their preprocessing tasks on the trials."""
    fit = math.floor(cluster_cpus / cpus_per_trial + 1e-9)
    if fit < 1:
        raise ConfigError(f"scaling: a trial needs {cpus_per_trial:g} CPUs (trial_cpus + workers + Ray Data preprocessing) but the Ray "
                          f"cluster has {cluster_cpus:g}")
    return min(sweep.max_concurrent_trials, fit)


def run_sweep(sweep: SweepConfig, source: str, resume: bool = False, ray_temp_dir: str | None = None, verbose: bool = False) -> str:
    """Run (or with ``resume`` continue) a sweep; returns the printed selection table. The console
    shows :class:`LiveProgress`; Ray's and Tune's own output goes to ``sweep.log`` (see
    :func:`selfsup.console.log_path`; with ``verbose``, to the console as it comes)."""
    base_cfg, base_tree, space, space_file, data = prepare(sweep, source)
    root = base_cfg.train.storage_path
    sweep_dir = storage.join(root, sweep.name)
    if resume and not tune.Tuner.can_restore(sweep_dir):
        raise ConfigError(f"{source}: --resume: no interrupted sweep {sweep.name!r} under {root}")
    if not resume and storage_exists(sweep_dir, source):
        raise ConfigError(f"{source}: name: sweep {sweep.name!r} already exists at {sweep_dir}; use --resume, or --set name=<new>")
    log = log_path(root, sweep.name, "sweep.log")
    header = (f"sweep {sweep.name}: {sweep.num_samples} trials of {base_cfg.method.name} on {base_cfg.data.name}, "
              f"objective {sweep.metric} ({sweep.mode}); Ray's and Tune's output: {log} (--verbose shows it here)")
    with quiet(log, header, verbose):
        return tracked_sweep(sweep, source, resume, ray_temp_dir, base_cfg, base_tree, space, space_file, data)


def tracked_sweep(sweep: SweepConfig, source: str, resume: bool, ray_temp_dir: str | None, base_cfg: ExperimentConfig,
                  base_tree: dict, space: dict, space_file, data) -> str:
    """The sweep itself, after :func:`run_sweep`'s checks: Ray, the MLflow parent, Tune (its
    progress on the console), the report, the registry. ``data`` (the base config's dataset) goes
    into Ray's object store once, for every trial."""
    root = base_cfg.train.storage_path
    sweep_dir = storage.join(root, sweep.name)
    init_ray(ray_temp_dir)
    check_cluster(base_cfg, source)
    per_trial = sweep.trial_cpus + base_cfg.scaling.num_workers * base_cfg.scaling.cpus_per_worker + preprocess_cpus(base_cfg.data)
    limit = concurrency(sweep, per_trial, ray.cluster_resources().get("CPU", 0))

    t = base_cfg.tracking
    runs.set_patience(t.patience_s)
    experiment = t.experiment or sweep.name
    exp_id = runs.experiment_id(t.uri, experiment, t.artifact_location)
    parent_key = {runs.ROLE: "sweep", runs.SWEEP: sweep.name}
    parent = runs.start_run(t.uri, exp_id, f"sweep-{sweep.name}", parent_key, key=parent_key if resume else None)
    runs.set_tags(t.uri, parent, {runs.SEARCHED: json.dumps(sorted(space)), runs.METHOD: base_cfg.method.name, runs.DATASET: base_cfg.data.name})
    runs.log_params(t.uri, parent, {f"sweep.{k}": v for k, v in flatten(sweep.model_dump(mode="json")).items()})
    runs.log_text(t.uri, parent, Path(space_file).read_text(), "search_space.yaml")

    try:
        trainable = tune.with_resources(
            partial(
                run_trial,
                base_tree=base_tree,
                sweep_name=sweep.name,
                parent_run_id=parent,
                experiment=experiment,
                train_storage=storage.join(sweep_dir, "trials"),
                data=ray.put(data),
            ),
            {"cpu": sweep.trial_cpus},
        )
        run_config = tune.RunConfig(
            name=sweep.name,
            storage_path=root,
            failure_config=tune.FailureConfig(max_failures=sweep.trial_retries),
            callbacks=[
                TrialRunStatus(t.uri, exp_id, parent, base_cfg.train.epochs),
                LiveProgress(sweep.metric, sweep.mode, base_cfg.train.epochs, sweep.num_samples),
            ],
            verbose=0,
        )
        if resume:
            tuner = tune.Tuner.restore(str(sweep_dir), trainable)
        else:
            if sweep.scheduler.type == "asha":
                scheduler = ASHAScheduler(
                    time_attr="epoch",
                    max_t=base_cfg.train.epochs,
                    grace_period=grace_period(sweep, base_cfg.train.epochs),
                    reduction_factor=sweep.scheduler.reduction_factor,
                )
            else:
                scheduler = FIFOScheduler()
            sampler = optuna.samplers.TPESampler if sweep.sampler == "tpe" else optuna.samplers.RandomSampler
            search = CollapsePruningSearch(sampler=sampler(seed=sweep.seed))
            tuner = tune.Tuner(
                trainable,
                param_space=to_tune(space),
                tune_config=tune.TuneConfig(
                    metric=sweep.metric,
                    mode=sweep.mode,
                    search_alg=search,
                    scheduler=scheduler,
                    num_samples=sweep.num_samples,
                    max_concurrent_trials=limit,
                ),
                run_config=run_config,
            )
        results = tuner.fit()
    except KeyboardInterrupt:
        close_trials(t.uri, exp_id, parent, "interrupted")
        runs.end_run(t.uri, parent, "KILLED")
        raise
    except BaseException:
        close_trials(t.uri, exp_id, parent, "sweep-failed")
        runs.end_run(t.uri, parent, "FAILED")
        raise
    # Ctrl-C: Tune stops the running trials and may count them terminated, but never completes them,
    # so their runs are still open (TrialRunStatus ends every trial Tune completes or fails)
    still_open = any(run.status == "RUNNING" for run in runs.child_runs(t.uri, exp_id, parent))
    if still_open or results.num_terminated + results.num_errors < sweep.num_samples:
        close_trials(t.uri, exp_id, parent, "interrupted")
        runs.end_run(t.uri, parent, "KILLED")
        return f"sweep {sweep.name!r} interrupted; continue it with: selfsup sweep {source} --resume"
    close_trials(t.uri, exp_id, parent, "sweep-ended")
    table = publish(t.uri, exp_id, parent, sweep.name, sweep.metric, sweep.mode)
    if sweep.registry:
        table += "\n" + register(t.uri, exp_id, parent, sweep.name)
    where = t.uri.rstrip("/") if is_server(t.uri) else "selfsup ui, then http://127.0.0.1:5000"
    table += f"\nbrowse: {where}/{runs_view(exp_id)}"
    runs.end_run(t.uri, parent, "FINISHED")
    return table


REGISTERED_VERSION, REGISTERED_RUN = "selfsup.registered_version", "selfsup.registered_run"


def register(uri: str, exp_id: str, parent: str, sweep: str) -> str:
    """Register the default rule's pick in the model registry under the sweep's name; a line saying
    what was registered (or why not: the pick's checkpoint must be readable from here)."""
    verdict = sweep_report(uri, exp_id, parent).verdicts[DEFAULT]
    if verdict.pick is None:
        return "model registry: nothing registered (no trial picked)"
    done = runs.get_run(uri, parent).tags
    if done.get(REGISTERED_RUN) == verdict.pick.run_id:  # a resumed sweep that had already finished
        return f"model registry: trial {verdict.pick.trial} is {sweep!r} version {done.get(REGISTERED_VERSION)}"
    try:
        version = register_pick(uri, verdict.pick.run_id, sweep, f"selfsup sweep {sweep}: the {DEFAULT} pick")
    except (FileNotFoundError, LookupError) as exc:
        return f"model registry: nothing registered ({exc})"
    runs.set_tags(uri, parent, {REGISTERED_VERSION: version, REGISTERED_RUN: verdict.pick.run_id})
    return f"model registry: trial {verdict.pick.trial} registered as {sweep!r} version {version}; selfsup export {verdict.pick.run_id} --out DIR"


def close_trials(uri: str, exp_id: str, parent: str, reason: str) -> None:
    """Once Tune has returned, a trial run still RUNNING was stopped from outside without Tune
    completing it (the sweep was interrupted): mark it KILLED with ``selfsup.stopped_by = reason``."""
    for run in runs.child_runs(uri, exp_id, parent):
        if run.status == "RUNNING":
            runs.set_tags(uri, run.run_id, {runs.STOPPED: reason})
            runs.end_run(uri, run.run_id, "KILLED")

