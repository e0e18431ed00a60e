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

    python benchmarks/sweep_overhead.py [--trials 3] [--epochs 12] [--scale 8]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--scale", type=int, default=8, help="copies of digits in the data set")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

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
