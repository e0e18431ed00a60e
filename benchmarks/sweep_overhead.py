"""Where a sweep's time goes: training steps vs. the platform's fixed costs.

Runs a real sweep (local Ray, Tune + Optuna, Train V2, sqlite MLflow) in a temporary directory,
one trial at a time so that trials do not share the CPUs, on a digits-like image set made
larger (``--scale`` copies of digits, each shifted by up to one pixel) so that an epoch has a
realistic number of steps. Per trial it prints, from the run's MLflow record:

- wall: the trial's run open -> close (trial function start to Tune completing it),
- train: time inside the epoch loops (data collation, views, forward, backward, step),
- eval: label-free metrics and probes, ckpt: writing the checkpoint,
- other: the rest: worker-group start, process group, ray.train.report, MLflow logging.

And the whole sweep's wall time (Ray start and trial actors included) against its training time.

``--short`` instead runs the README's main job the way it runs (``examples/mnist1d_vicreg_sweep.yaml``:
MNIST-1D, 8 epochs, two trials at a time; here without ASHA, so that every trial runs its 8 epochs)
and prints last one line, ``fixed cost per trial: X.X s (training Y.Y s)``: the trial slots' time
while Tune ran (its wall time x trials at a time) less the time inside epochs (training, label-free
metrics, probes, checkpoint: ``perf/epoch_s``), per trial, next to the time inside epochs per trial.
Before the sweep it times Ray Train's own floor on the same Ray: ``fit()`` of a ``TorchTrainer`` (as
selfsup launches it) whose function does nothing, three times, one at a time: the controller and
worker processes Ray Train starts for every run, which no trial can go below.

    python benchmarks/sweep_overhead.py [--trials 3] [--epochs 12] [--scale 8]
    python benchmarks/sweep_overhead.py --short [--trials 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def make_data(path: Path, scale: int) -> None:
    rng = np.random.default_rng(0)
    bunch = load_digits()
    x = np.pad(bunch.images / 16.0, ((0, 0), (1, 1), (1, 1)))
    xs, ys = [], []
    for _ in range(scale):
        dx, dy = rng.integers(-1, 2, size=2)
        xs.append(np.roll(x, (dy, dx), axis=(1, 2))[:, 1:-1, 1:-1])
        ys.append(bunch.target)
    np.savez(path, x=np.concatenate(xs).astype(np.float32), y=np.concatenate(ys))


ROOT = Path(__file__).resolve().parents[1]


def nothing(config: dict) -> None:
    """The function of the floor measurement's runs."""


def floor(tmp: Path, runs_: int = 3) -> list[float]:
    """Seconds of ``fit()`` of a selfsup ``Trainer`` whose function does nothing, ``runs_`` times."""
    from ray.train import RunConfig, ScalingConfig

    from selfsup.train.ray_private import Trainer

    out = []
    for i in range(runs_):
        t0 = time.time()
        Trainer(nothing, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.75}),
                run_config=RunConfig(name=f"floor-{i}", storage_path=str(tmp / "floor"))).fit()
        out.append(time.time() - t0)
    return out


def short(trials: int) -> None:
    """The main job's trials, timed: see the module docstring."""
    from ray import tune

    from selfsup.console import to_log
    from selfsup.train.cluster import init_ray

    from selfsup.config import load_sweep
    from selfsup.tracking import runs
    from selfsup.tune.sweep import run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="sso", dir="/tmp"))
    fits: list[float] = []
    fit = tune.Tuner.fit

    def timed_fit(self):
        t0 = time.time()
        try:
            return fit(self)
        finally:
            fits.append(time.time() - t0)

    tune.Tuner.fit = timed_fit
    try:
        with to_log(tmp / "floor.log"):
            init_ray(str(tmp / "ray"))
            empty = floor(tmp)
        sweep = load_sweep(ROOT / "examples" / "mnist1d_vicreg_sweep.yaml", [f"num_samples={trials}", "scheduler.type=none"])
        sweep.overrides.update({"train.storage_path": f"{tmp}/runs", "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
                                "tracking.artifact_location": f"{tmp}/artifacts"})
        t0 = time.time()
        run_sweep(sweep, "main job", ray_temp_dir=str(tmp / "ray"))
        wall = time.time() - t0
        uri = f"sqlite:///{tmp}/mlflow.db"
        exp = runs.find_experiment(uri, sweep.name)
        parent = runs.find_run(uri, exp, {runs.ROLE: "sweep"})
        trials_ = runs.child_runs(uri, exp, parent)
        part = {k: [sum(v for _, v in runs.metric_history(uri, r.run_id, f"perf/{k}_s")) for r in trials_] for k in ("launch", "setup", "epoch")}
        epochs = part["epoch"]
        slots = fits[0] * sweep.max_concurrent_trials
        mean = {k: sum(v) / len(v) for k, v in part.items()}
        print(f"\n{len(epochs)} trials, {sweep.max_concurrent_trials} at a time: Tune ran {fits[0]:.1f} s "
              f"(whole command {wall:.1f} s); inside epochs {sum(epochs):.1f} s in all")
        print(f"per trial: launch {mean['launch']:.1f} s (Train controller, worker group, imports), setup {mean['setup']:.1f} s "
              f"(data, model, checkpoint, MLflow), epochs {mean['epoch']:.1f} s, the rest "
              f"{slots / len(epochs) - sum(mean.values()):.1f} s (trial actor, MLflow run, Train teardown, Tune)")
        print(f"Ray Train's floor: fit() of a run that does nothing takes {min(empty):.1f} s (best of {len(empty)}: "
              f"{', '.join(f'{t:.1f}' for t in empty)}), one at a time")
        print(f"fixed cost per trial: {(slots - sum(epochs)) / len(epochs):.1f} s (training {sum(epochs) / len(epochs):.1f} s)")
    finally:
        import ray

        tune.Tuner.fit = fit
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=None, help="trials (default 3; 8 with --short)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--scale", type=int, default=8, help="copies of digits in the data set")
    ap.add_argument("--short", action="store_true", help="the README's main job's trials: print the fixed cost per trial")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.short:
        short(args.trials or 8)
        return
    args.trials = args.trials or 3

    tmp = Path(tempfile.mkdtemp(prefix="ssb", dir="/tmp"))
    try:
        make_data(tmp / "data.npz", args.scale)
        (tmp / "base.yaml").write_text(textwrap.dedent(f"""\
            name: bench
            data: {{name: npz, path: {tmp}/data.npz}}
            model: {{backbone: cnn, embed_dim: 128, width: 32, depth: 3}}
            method: {{name: vicreg}}
            train: {{epochs: {args.epochs}, batch_size: 256, storage_path: {tmp}/runs}}
            eval: {{subset_size: 512, probe_every: 0}}
            scaling: {{num_workers: 1, cpus_per_worker: 1.5}}
            tracking: {{uri: "sqlite:///{tmp}/mlflow.db", artifact_location: {tmp}/artifacts}}
            """))
        (tmp / "sweep.yaml").write_text(textwrap.dedent(f"""\
            name: bench
            base: base.yaml
            num_samples: {args.trials}
            max_concurrent_trials: 1
            scheduler: {{type: none}}
            """))
        from selfsup.config import load_sweep
        from selfsup.tracking import runs
        from selfsup.tune.sweep import run_sweep

        t0 = time.time()
        run_sweep(load_sweep(tmp / "sweep.yaml"), "bench", ray_temp_dir=str(tmp / "ray"))
        sweep_wall = time.time() - t0

        uri = f"sqlite:///{tmp}/mlflow.db"
        client = runs.client(uri)
        exp = runs.find_experiment(uri, "bench")
        parent = runs.find_run(uri, exp, {runs.ROLE: "sweep"})
        print(f"\n{'trial':10s} {'wall s':>8s} {'train':>8s} {'eval':>8s} {'ckpt':>8s} {'other':>8s} {'train %':>8s}")
        total_train = 0.0
        for rec in runs.child_runs(uri, exp, parent):
            info = client.get_run(rec.run_id).info
            wall = (info.end_time - info.start_time) / 1000
            part = {k: sum(v for _, v in runs.metric_history(uri, rec.run_id, f"perf/{k}_s")) for k in ("train", "eval", "checkpoint")}
            other = wall - sum(part.values())
            total_train += part["train"]
            print(f"{rec.tags[runs.TRIAL_ID]:10s} {wall:8.1f} {part['train']:8.1f} {part['eval']:8.1f} {part['checkpoint']:8.2f} {other:8.1f} {100 * part['train'] / wall:7.1f}%")
        print(f"\nwhole sweep: {sweep_wall:.1f} s wall (Ray start, Tune, trial actors included), "
              f"{total_train:.1f} s in training = {100 * total_train / sweep_wall:.1f}%")
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
