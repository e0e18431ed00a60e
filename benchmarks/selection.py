"""The label-free selection benchmark: every selector judged on the same fully trained trials.

A matrix of cells, each a real ``selfsup sweep`` (Ray Tune + Ray Train, one MLflow parent run per
cell, experiment ``selection-benchmark``) of one method on one dataset over the method's search
space (``search_spaces/<method>.yaml``), sampled uniformly at random (so that no selector steers
which trials exist) and trained to the end (no ASHA). Probes are cross-validated over every
labelled sample (``eval.probe_folds``), so that a cell's test noise is that of its whole dataset;
the best trials of each cell are trained again with another seed (a one-trial sweep each),
which measures how far a trial's probe accuracy moves with the seed alone. Then, from MLflow alone:

- every rule of :mod:`selfsup.report.rules` per cell and overall (pick, regret, Kendall tau,
  Spearman rho, top-3 hit), and each cell's probe range against its noise (test set and seed);
- the default rule chosen by leave-one-dataset-out, with its held-out regrets;
- ASHA replayed on the trials' logged metric histories (:mod:`selfsup.report.asha`): how often it
  would have stopped the label-based best trial;

written to ``docs/selection.md`` with plots under ``docs/selection/``, onto a ``benchmark`` run
in the same experiment, and, per method family and modality, to the record every sweep report
quotes (``selfsup/report/benchmark.json``).

    python benchmarks/selection.py                      # the full matrix: 20 cells x (6 + 1) trials
    python benchmarks/selection.py --budget smoke       # 2 cells x 2 trials x 2 epochs (the test)
    python benchmarks/selection.py --cells digits       # cells whose name contains 'digits'
    RAY_ADDRESS=auto python benchmarks/selection.py --max-concurrent 12   # on a cluster

A cell that already finished in the same experiment (same name and budget) is read back, not
rerun, unless ``--fresh``: an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # selection_summary beside this file, also when a test loads it by path
EXPERIMENT = "selection-benchmark"
RECORD = ROOT / "platform" / "selfsup" / "report" / "benchmark.json"
"""The record every sweep report quotes (package data)."""


@dataclass(frozen=True)
class CellSpec:
    """One cell: ``base`` (an example experiment under examples/) with ``overrides``, trained for
    ``epochs`` per trial."""

    dataset: str
    method: str
    base: str
    epochs: int
    overrides: dict = field(default_factory=dict)
    collapse_rankme: float | None = 1.5
    """The sweep's collapse threshold (its default); None for methods whose healthy embeddings sit
    near a RankMe of 1-2 on these small data in their first epochs (MAE, IICC), which the
    threshold would stop at epoch 1."""
    samples: int | None = None
    """``data.samples`` of a generated dataset: enough that a probe's test noise is under a point
    (cross-validated over all of them); None keeps the dataset's own count."""

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.method}"

    def sweep_name(self, budget: str) -> str:
        return (f"selbench-{budget}-{self.name}" + ("-no-collapse-stop" if self.collapse_rankme is None else "")
                + (f"-{self.samples}-samples" if self.samples else ""))


GENERATED = 4800
"""The generated datasets' size in the benchmark (``data.samples``; 1,000-1,200 by default, whose
test noise stayed 1.1-1.6 points even cross-validated), trained 2 epochs (as many steps as 6-8
epochs of the default size)."""

CELLS = [
    CellSpec("digits", "vicreg", "digits_vicreg.yaml", 10),
    CellSpec("mnist1d", "vicreg", "mnist1d_vicreg.yaml", 8),
    CellSpec("breast_cancer", "simclr", "breast_cancer_scarf.yaml", 20),
    CellSpec("moving_digits", "cvrl", "moving_digits_cvrl.yaml", 6),
    CellSpec("synthetic_volumes", "vicreg", "synthetic_volumes_vicreg.yaml", 2, samples=GENERATED),
    CellSpec("synthetic_scenes", "vicreg", "synthetic_scenes_vicreg.yaml", 2, samples=GENERATED),
    CellSpec("synthetic_activities", "collossl", "synthetic_activities_collossl.yaml", 2, samples=GENERATED),
    CellSpec("pendulum", "actjepa", "pendulum_actjepa.yaml", 2, samples=GENERATED),
    CellSpec("digits", "simclr", "digits_simclr.yaml", 10),
    CellSpec("mnist1d", "simclr", "mnist1d_vicreg.yaml", 8, {"method": {"name": "simclr", "temperature": 0.2, "projector": [256, 128]}}),
    CellSpec("breast_cancer", "tjepa", "breast_cancer_tjepa.yaml", 15),
    CellSpec("moving_digits", "mae", "moving_digits_videomae.yaml", 6, collapse_rankme=None),
    CellSpec("synthetic_volumes", "iicc", "synthetic_volumes_iicc.yaml", 2, collapse_rankme=None, samples=GENERATED),
    CellSpec("synthetic_scenes", "adljepa", "synthetic_scenes_adljepa.yaml", 2, samples=GENERATED),
    CellSpec("digits", "byol", "digits_byol.yaml", 10),
    CellSpec("mnist1d", "sjepa", "mnist1d_sjepa.yaml", 8),
    CellSpec("digits", "mae", "digits_mae.yaml", 10, collapse_rankme=None),
    CellSpec("digits", "depict", "digits_depict.yaml", 10),
    CellSpec("mnist1d", "timedrl", "mnist1d_timedrl.yaml", 8),
    CellSpec("digits", "dino", "digits_dino.yaml", 6),
]
"""The full matrix: 20 cells of 15 methods on 8 datasets of every modality (digits images,
MNIST-1D signals, the breast-cancer table, moving-digits videos, synthetic volumes, LiDAR-like
scenes, body-worn sensor activities and pendulum trajectories) and every method family
(contrastive, distillation, redundancy reduction, JEPA, masked modelling, clustering), ordered so
that an interrupted run has covered every modality first."""

BUDGETS = {
    "full": {"trials": 6, "replicates": 1, "epochs": None, "cells": None},
    "small": {"trials": 4, "replicates": 1, "epochs": 0.5, "cells": None},
    "smoke": {"trials": 2, "replicates": 1, "epochs": 2, "cells": ["digits-vicreg", "breast_cancer-simclr"]},
}
"""``full``: every cell, 6 trials and the best again with another seed, the cells' epochs (about
80 min on 2 cores); ``small``: 4 trials and 1 replicate at half the epochs; ``smoke``: 2
cells x 2 trials x 2 epochs and one replicate each (seconds of training each)."""
PROBE_FOLDS = 5
"""Folds of the cross-validated probes (``eval.probe_folds``): every labelled sample is scored."""
REPLICATE_SEED = 1
"""The seed of the replicates (the cells' trials run with their base config's seed, 0)."""


def sweep_config(spec: CellSpec, budget: str, args, storage: str):
    from selfsup.config import SweepConfig
    from selfsup.report.selection import SELECTORS, DEFAULT

    b = BUDGETS[budget]
    epochs = spec.epochs if b["epochs"] is None else max(2, round(spec.epochs * b["epochs"])) if b["epochs"] < 1 else b["epochs"]
    overrides = {
        "train.epochs": epochs,
        "train.storage_path": storage,
        "eval.probe_every": 0,
        "eval.probe_folds": PROBE_FOLDS,
        "scaling.cpus_per_worker": args.cpus_per_worker,
        "tracking.experiment": EXPERIMENT,
        **({"tracking.uri": args.tracking_uri} if args.tracking_uri else {}),
        **({"data.samples": spec.samples} if spec.samples else {}),
        **spec.overrides,
    }
    return SweepConfig(
        name=spec.sweep_name(budget),
        collapse_rankme=spec.collapse_rankme,
        base=str(ROOT / "examples" / spec.base),
        search_space=str(ROOT / "search_spaces" / f"{spec.method}.yaml"),
        overrides=overrides,
        num_samples=args.trials or b["trials"],
        max_concurrent_trials=args.max_concurrent,
        metric=SELECTORS[DEFAULT].metric,
        sampler="random",
        registry=False,
        seed=args.seed,
        scheduler={"type": "none"},
    )


def finished_sweep(uri: str, name: str):
    """``(experiment id, parent run id, parent run)`` of the newest sweep ``name`` in the experiment
    if it finished, else None."""
    from selfsup.report.selection import find_sweep
    from selfsup.tracking import runs

    try:
        exp_id, parent = find_sweep(uri, name, EXPERIMENT)
    except LookupError:
        return None
    run = runs.get_run(uri, parent)
    return (exp_id, parent, run) if run.status == "FINISHED" else None


def run_sweep_once(sweep, uri: str, label: str, args) -> tuple[str, str, float]:
    """Run ``sweep`` unless a finished one of that name is in the experiment (``--fresh`` reruns
    it); ``(experiment id, parent run id, wall s)``, the wall time kept on the parent run."""
    from selfsup.config import ConfigError
    from selfsup.report.selection import find_sweep
    from selfsup.tracking import runs
    from selfsup.tune.sweep import run_sweep

    done = None if args.fresh else finished_sweep(uri, sweep.name)
    print(f"{label}: " + ("finished before, read back from MLflow" if done else f"{sweep.num_samples} trial(s)"), flush=True)
    if done:
        exp_id, parent, run = done
        return exp_id, parent, float(run.tags.get("selfsup.benchmark_wall_s", "nan"))
    t0 = time.perf_counter()
    try:
        print(run_sweep(sweep, f"benchmarks/selection.py ({label})", ray_temp_dir=args.ray_temp_dir), flush=True)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    exp_id, parent = find_sweep(uri, sweep.name, EXPERIMENT)
    wall = time.perf_counter() - t0
    runs.set_tags(uri, parent, {"selfsup.benchmark_wall_s": f"{wall:.0f}"})
    return exp_id, parent, wall


def replicate_name(sweep, trial) -> str:
    return f"{sweep.name}-seed{REPLICATE_SEED}-{trial.trial}"


def replicate_config(sweep, trial, keys: list[str], folder: str):
    """A one-trial sweep of ``trial``'s searched values with the seed :data:`REPLICATE_SEED` (its
    search space that seed alone)."""
    import yaml

    space = Path(folder) / f"{sweep.name}-{trial.trial}-seed.yaml"
    space.write_text(yaml.safe_dump({"seed": {"type": "choice", "values": [REPLICATE_SEED]}}))
    searched = {k: yaml.safe_load(trial.params[k]) for k in keys}
    return sweep.model_copy(update={
        "name": replicate_name(sweep, trial), "search_space": str(space), "overrides": {**sweep.overrides, **searched}, "num_samples": 1,
    })


def run_cells(specs: list[CellSpec], args):
    """Run (or read back) every cell and its seed replicates: a ``selection_summary.Ran`` each."""
    from selection_summary import Ran

    from selfsup.methods import METHODS
    from selfsup.report import rules
    from selfsup.report.selection import finished, rows
    from selfsup.tune.sweep import base_config

    storage = tempfile.mkdtemp(prefix="selbench-", dir=args.storage)
    replicates = BUDGETS[args.budget]["replicates"] if args.replicates is None else args.replicates
    out = []
    for i, spec in enumerate(specs, 1):
        sweep = sweep_config(spec, args.budget, args, storage)
        base = base_config(sweep, spec.base)
        uri = base.tracking.uri
        label = f"[{i}/{len(specs)}] {spec.name}"
        exp_id, parent, wall = run_sweep_once(sweep, uri, label, args)
        table, keys = rows(uri, exp_id, parent)
        best = sorted((r for r in finished(table) if rules.finite(r.metrics.get(rules.PROBE))), key=lambda r: -r.metrics[rules.PROBE])
        seeds = []
        for rank, trial in enumerate(best):
            if rank < replicates:
                _, rep, rep_wall = run_sweep_once(replicate_config(sweep, trial, keys, storage), uri,
                                                  f"{label} seed {REPLICATE_SEED} of {trial.trial}", args)
            elif done := finished_sweep(uri, replicate_name(sweep, trial)):  # beyond the budget's: one an earlier call ran
                _, rep, run = done
                rep_wall = float(run.tags.get("selfsup.benchmark_wall_s", "nan"))
            else:
                continue
            seeds.append((trial.trial, rep))
            wall += rep_wall
        print(f"{label}: done in {wall:.0f} s", flush=True)
        out.append(Ran(spec.name, spec.dataset, spec.method, METHODS[spec.method].family, base.data.modality, uri, exp_id, parent, wall, seeds))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=BUDGETS, default="full", help="full (20 cells x 6 trials + 1 seed replicate), small, or smoke")
    ap.add_argument("--cells", nargs="*", help="run only cells whose name contains one of these (e.g. digits mnist1d-sjepa)")
    ap.add_argument("--trials", type=int, help="trials per cell (default: the budget's)")
    ap.add_argument("--replicates", type=int, help="best trials of each cell trained again with another seed (default: the budget's)")
    ap.add_argument("--max-concurrent", type=int, default=2, help="trials of a cell at once (a cluster: its CPUs / 1)")
    ap.add_argument("--cpus-per-worker", type=float, default=0.75, help="CPUs of each trial's Ray Train worker")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random search")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the example configs' sqlite:///selfsup-mlflow.db)")
    ap.add_argument("--storage", default=None, help="folder for the trials' checkpoints (default: the system temp dir)")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="where selection.md and selection/*.png go")
    ap.add_argument("--record", help="where the sweep reports' record goes (default: selfsup/report/benchmark.json for the full "
                    "budget, beside the summary otherwise)")
    ap.add_argument("--fresh", action="store_true", help="rerun cells that already finished in the experiment")
    ap.add_argument("--ray-temp-dir", help="temp dir of the local Ray (tests)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from selection_summary import load_cells, write_summary

    names = BUDGETS[args.budget]["cells"]
    specs = [c for c in CELLS if (names is None or c.name in names) and (not args.cells or any(p in c.name for p in args.cells))]
    if not specs:
        sys.exit(f"error: --cells {' '.join(args.cells)}: no cell matches; cells: {', '.join(c.name for c in CELLS)}")
    t0 = time.perf_counter()
    done = run_cells(specs, args)
    wall = time.perf_counter() - t0
    cells = load_cells(done)
    command = "python benchmarks/selection.py" + ("" if args.budget == "full" else f" --budget {args.budget}") + "".join(
        f" --{k} {v}" for k, v in (("trials", args.trials), ("replicates", args.replicates)) if v is not None)
    record = Path(args.record) if args.record else RECORD if args.budget == "full" else Path(args.out) / "selection" / "benchmark.json"
    print(write_summary(cells, Path(args.out), command=command, wall_s=wall, record_path=record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
