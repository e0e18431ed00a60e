"""The label-free selection benchmark: every selector judged on the same fully trained trials.

A matrix of cells, each a real ``selfsup sweep`` (Ray Tune + Ray Train, one MLflow parent run per
cell, experiment ``selection-benchmark``) of one method on one dataset over the method's search
space (``search_spaces/<method>.yaml``), sampled uniformly at random (so that no selector steers
which trials exist) and trained to the end (no ASHA). Then, from MLflow alone:

- every rule of :mod:`selfsup.report.rules` per cell and overall (pick, regret, Kendall tau,
  Spearman rho, top-3 hit), and each cell's probe range against its test set's noise;
- the default rule chosen by leave-one-dataset-out, with its held-out regrets;
- ASHA replayed on the trials' logged metric histories (:mod:`selfsup.report.asha`): how often it
  would have stopped the label-based best trial;

written to ``docs/selection.md`` with plots under ``docs/selection/`` and onto a ``benchmark`` run
in the same experiment.

    python benchmarks/selection.py                      # the full matrix: 12 cells x 12 trials
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
EXPERIMENT = "selection-benchmark"


@dataclass(frozen=True)
class CellSpec:
    """One cell: ``base`` (an example experiment under examples/) with ``overrides``, trained for
    ``epochs`` per trial."""

    dataset: str
    method: str
    base: str
    epochs: int
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.method}"


OSULEAF = {"data.path": "OSULeaf", "data.channel_dropout": 0.0, "train.batch_size": 32, "eval.subset_size": 200, "optim.warmup_epochs": 2}
CELLS = [
    CellSpec("digits", "vicreg", "digits_vicreg.yaml", 10),
    CellSpec("digits", "simclr", "digits_simclr.yaml", 10),
    CellSpec("digits", "byol", "digits_byol.yaml", 10),
    CellSpec("digits", "dino", "digits_dino.yaml", 10),
    CellSpec("mnist1d", "vicreg", "mnist1d_vicreg.yaml", 8),
    CellSpec("mnist1d", "simclr", "mnist1d_vicreg.yaml", 8, {"method": {"name": "simclr", "temperature": 0.2, "projector": [256, 128]}}),
    CellSpec("mnist1d", "byol", "mnist1d_vicreg.yaml", 8, {"method": {"name": "byol", "projector": [512, 128], "predictor": [512, 128]}}),
    CellSpec("mnist1d", "sjepa", "mnist1d_sjepa.yaml", 8),
    CellSpec("osuleaf", "vicreg", "basicmotions_vicreg.yaml", 20, OSULEAF),
    CellSpec("osuleaf", "simclr", "basicmotions_vicreg.yaml", 20, {**OSULEAF, "method": {"name": "simclr", "temperature": 0.2, "projector": [256, 128]}}),
    CellSpec("breast_cancer", "simclr", "breast_cancer_scarf.yaml", 30),
    CellSpec("breast_cancer", "tjepa", "breast_cancer_tjepa.yaml", 20),
]
"""The full matrix: 5 methods (VICReg, SimCLR, BYOL, DINO; the signal JEPA and T-JEPA) on 4
datasets of 3 modalities (digits images, MNIST-1D and the UCR OSULeaf signals, the breast-cancer
table)."""

BUDGETS = {
    "full": {"trials": 12, "epochs": None, "cells": None},
    "small": {"trials": 6, "epochs": 0.5, "cells": None},
    "smoke": {"trials": 2, "epochs": 2, "cells": ["digits-vicreg", "breast_cancer-simclr"]},
}
"""``full``: every cell, 12 trials, the cells' epochs (under 90 min on 2 cores); ``small``: 6 trials
at half the epochs; ``smoke``: 2 cells x 2 trials x 2 epochs (seconds of training each)."""


def sweep_config(spec: CellSpec, budget: str, args, storage: str):
    from selfsup.config import SweepConfig
    from selfsup.report.selection import SELECTORS, DEFAULT

    b = BUDGETS[budget]
    epochs = spec.epochs if b["epochs"] is None else max(2, round(spec.epochs * b["epochs"])) if b["epochs"] < 1 else b["epochs"]
    overrides = {
        "train.epochs": epochs,
        "train.storage_path": storage,
        "eval.probe_every": 0,
        "scaling.cpus_per_worker": args.cpus_per_worker,
        "tracking.experiment": EXPERIMENT,
        **({"tracking.uri": args.tracking_uri} if args.tracking_uri else {}),
        **spec.overrides,
    }
    return SweepConfig(
        name=f"selbench-{budget}-{spec.name}",
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


def run_cells(specs: list[CellSpec], args) -> list[tuple[str, str, str, str, str, str, float]]:
    """Run (or read back) every cell; ``(name, dataset, method, tracking uri, experiment id,
    parent run id, wall s)`` each."""
    from selfsup.config import ConfigError
    from selfsup.report.selection import find_sweep
    from selfsup.tracking import runs
    from selfsup.tune.sweep import base_config, run_sweep

    storage = tempfile.mkdtemp(prefix="selbench-", dir=args.storage)
    out = []
    for i, spec in enumerate(specs, 1):
        sweep = sweep_config(spec, args.budget, args, storage)
        uri = base_config(sweep, spec.base).tracking.uri
        try:
            exp_id, parent = find_sweep(uri, sweep.name, EXPERIMENT)
            done = not args.fresh and runs.get_run(uri, parent).status == "FINISHED"
        except LookupError:
            done = False
        print(f"[{i}/{len(specs)}] {spec.name}: " + ("finished before, read back from MLflow" if done else f"{sweep.num_samples} trials"), flush=True)
        t0 = time.perf_counter()
        if not done:
            try:
                print(run_sweep(sweep, f"benchmarks/selection.py ({spec.name})", ray_temp_dir=args.ray_temp_dir), flush=True)
            except ConfigError as exc:
                sys.exit(f"error: {exc}")
            exp_id, parent = find_sweep(uri, sweep.name, EXPERIMENT)
        wall = time.perf_counter() - t0
        if not done:
            runs.set_tags(uri, parent, {"selfsup.benchmark_wall_s": f"{wall:.0f}"})
        else:
            wall = float(runs.get_run(uri, parent).tags.get("selfsup.benchmark_wall_s", "nan"))
        print(f"[{i}/{len(specs)}] {spec.name}: done in {wall:.0f} s", flush=True)
        out.append((spec.name, spec.dataset, spec.method, uri, exp_id, parent, wall))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=BUDGETS, default="full", help="full (12 cells x 12 trials), small, or smoke")
    ap.add_argument("--cells", nargs="*", help="run only cells whose name contains one of these (e.g. digits mnist1d-sjepa)")
    ap.add_argument("--trials", type=int, help="trials per cell (default: the budget's)")
    ap.add_argument("--max-concurrent", type=int, default=2, help="trials of a cell at once (a cluster: its CPUs / 1)")
    ap.add_argument("--cpus-per-worker", type=float, default=0.75, help="CPUs of each trial's Ray Train worker")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random search")
    ap.add_argument("--tracking-uri", help="MLflow store (default: the example configs' sqlite:///selfsup-mlflow.db)")
    ap.add_argument("--storage", default=None, help="folder for the trials' checkpoints (default: the system temp dir)")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="where selection.md and selection/*.png go")
    ap.add_argument("--fresh", action="store_true", help="rerun cells that already finished in the experiment")
    ap.add_argument("--ray-temp-dir", help="temp dir of the local Ray (tests)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    sys.path.insert(0, str(Path(__file__).parent))  # beside this file, also when a test loads it by path
    from selection_summary import load_cells, write_summary

    names = BUDGETS[args.budget]["cells"]
    specs = [c for c in CELLS if (names is None or c.name in names) and (not args.cells or any(p in c.name for p in args.cells))]
    if not specs:
        sys.exit(f"error: --cells {' '.join(args.cells)}: no cell matches; cells: {', '.join(c.name for c in CELLS)}")
    t0 = time.perf_counter()
    done = run_cells(specs, args)
    wall = time.perf_counter() - t0
    cells = load_cells(done)
    command = "python benchmarks/selection.py" + ("" if args.budget == "full" else f" --budget {args.budget}")
    print(write_summary(cells, Path(args.out), command=command, wall_s=wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
