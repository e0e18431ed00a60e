"""One Tune trial of ``selfsup sweep``: the function each trial's actor runs.

Kept apart from ``tune/sweep.py`` so that a trial's process imports only what a trial needs
(config, MLflow, Ray Train): not Optuna, the report's plotting, nor the model and data stack,
which the Ray Train workers import themselves. Each trial pays its imports afresh.
"""

from __future__ import annotations

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from selfsup.config import ExperimentConfig, apply_overrides, build_experiment, flatten
from selfsup.tracking import runs
from selfsup.train.launch import fit, open_run


def run_trial(params: dict, *, base_tree: dict, sweep_name: str, parent_run_id: str, experiment: str, train_storage: str, data=None) -> None:
    """One Tune trial: the base config with the sampled ``params`` applied, run on Ray Train.
    ``data`` is the base config's dataset in Ray's object store, used when the trial's sampled
    values leave its loading unchanged (they usually do: views, optimiser, method)."""
    trial_id = tune.get_context().get_trial_id()
    cfg = build_experiment(apply_overrides(base_tree, flatten(params)), f"trial {trial_id}")
    if cfg.data.load_args() != ExperimentConfig.model_validate(base_tree).data.load_args():
        data = None
    cfg.train.storage_path = train_storage
    runs.set_patience(cfg.tracking.patience_s)
    tags = {runs.ROLE: "trial", runs.TRIAL_ID: trial_id, runs.SWEEP: sweep_name, runs.PARENT: parent_run_id, runs.COLLAPSED: "false"}
    key = {runs.TRIAL_ID: trial_id, runs.PARENT: parent_run_id}
    run_id = open_run(cfg, f"{cfg.method.name}-{trial_id}", tags, experiment, key=key)
    runs.set_tags(cfg.tracking.uri, run_id, {runs.TRIAL_NODE: ray.get_runtime_context().get_node_id()})
    fit(cfg, run_id, trial_id, callbacks=[TuneReportCallback()], data=data)
