"""Faults, measured: runs of `selfsup train` that lose a worker, some with their newest checkpoint
damaged at the same moment, each checked against the same run without a fault.

A real local Ray (Train V2) and a real sqlite MLflow store in a temporary directory; a small
VICReg run on digits (a 16-wide CNN, `--epochs` epochs of 11 steps). First a reference run
without a fault. Then:

- worker kills (`--worker-kills N`, default 20): each run SIGKILLs its Ray Train worker at a random
  moment of a random epoch (2 .. epochs-1): after the previous epoch's checkpoint folder is in
  storage whole, a random fraction of an epoch's time later, so the kill lands at a random step (or in the
  epoch's evaluation).
- damaged checkpoints (`--damaged N`, default 6): the same kill (in epochs 3 .. epochs-1, so that
  an older checkpoint exists), and in the same instant the run's newest complete checkpoint folder
  is damaged (a newer one the kill left half-copied is damaged already), in turn: its `state.pt`
  truncated to half (a kill mid-copy), `state.pt` deleted, the whole folder deleted.

The faulty runs make their views in `--loader-workers` DataLoader processes, in turn (default 0
and 2: persistent processes, which drew their views from a stream seeded once when they started,
until every batch got a seed of its own); the reference makes them in the worker's own process.

Then the sweep faults of `benchmarks/sweep_faults.py` (see there): `--killed-sweeps N` sweeps whose
`selfsup sweep` process is SIGKILLed during its trials, its report and its registration in turn,
resumed after each kill (default 1); `--outages N` sweeps whose tracking server is down `--outage-s` seconds
(default 1 of 30 s), plus one run whose server stays down; `--leak-trials N`, an ASHA sweep whose
leftovers and driver memory are measured (default 30; 0 skips it).

Every run must finish, resume from a checkpoint (never from scratch, and past a damaged one, with
a warning: printed, and recorded on the run as `selfsup.skipped_checkpoints`), hold every epoch in
MLflow exactly once, and end with weights equal to the reference's. The
tolerance is zero (bitwise equality): on the CPU with one thread per worker every kernel is
deterministic, every epoch reseeds from (seed, epoch, rank), the data order is a function of
(seed, epoch), and a checkpoint holds the exact optimizer state, so a resumed run repeats the
reference's arithmetic exactly. (On a GPU, nondeterministic kernels would need a tolerance.)

Ray's, Train's and the runs' own output go to a log file named first; then one line per run, a
table, and last one summary line. Exits 1 if any run fails a check.

    python benchmarks/faults.py [--worker-kills 20] [--damaged 6] [--epochs 6] [--killed-sweeps 1] [--outages 1]
                                [--outage-s 30] [--leak-trials 30] [--sweep-trials 3] [--sweep-epochs 3] [--loader-workers 0,2] [--seed 0] [--log FILE]

With ``RAY_ADDRESS`` set it runs on that Ray instead of starting one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DAMAGE = ("truncated state.pt", "deleted state.pt", "deleted folder")


@dataclass
class Outcome:
    run: str
    loader_workers: int
    kill_epoch: int
    into_epoch_s: float
    damage: str
    damaged_epoch: int | None
    starts: list[int]
    epochs: list[int]
    max_diff: float | None
    wall_s: float
    status: str
    warned: bool

    def resumed(self) -> bool:
        """Restarted at least once, every time from a checkpoint, and past the damaged one."""
        later = self.starts[1:]
        past = self.damaged_epoch is None or all(s < self.damaged_epoch for s in later)
        return bool(later) and all(s >= 1 for s in later) and past

    def lost(self, epochs: int) -> int:
        return len(set(range(1, epochs + 1)) - set(self.epochs))

    def doubled(self) -> int:
        return len(self.epochs) - len(set(self.epochs))

    def equal(self) -> bool:
        return self.max_diff == 0.0


def config(tmp: Path, name: str, epochs: int, loader_workers: int = 0):
    from selfsup.config import ExperimentConfig

    return ExperimentConfig.model_validate({
        "name": name,
        "data": {"name": "digits", "views": "light", "loader_workers": loader_workers},
        "model": {"backbone": "cnn", "embed_dim": 32, "width": 16, "depth": 2},
        "method": {"name": "vicreg", "projector": [64, 64]},
        "optim": {"lr": 3e-3},
        "train": {"epochs": epochs, "batch_size": 128, "storage_path": str(tmp / "runs" / name), "max_failures": 3},
        "eval": {"subset_size": 256, "lidar_samples": 64, "lidar_views": 4, "probe_every": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "artifact_location": str(tmp / "artifacts")},
    })


def the_run(uri: str, name: str):
    from selfsup.tracking import runs

    client = runs.client(uri)
    exp = client.get_experiment_by_name(name)
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def weights(path: str) -> dict:
    from selfsup.train import checkpoints

    return checkpoints.read(path)["engine"]["method"]


def complete(folder: Path) -> bool:
    """Whether Ray Train has copied the checkpoint ``folder`` into storage whole (its manifest and
    a ``state.pt`` of the manifest's size): a kill can land mid-copy."""
    try:
        return (folder / "state.pt").stat().st_size == json.loads((folder / "manifest.json").read_text())["bytes"]
    except (OSError, ValueError, KeyError):
        return False


def newest_complete(storage: Path) -> Path | None:
    found = [f for f in sorted(storage.glob("*/epoch-*")) if complete(f)]
    return found[-1] if found else None


def wait_folder(storage: Path, epoch: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not any(complete(f) for f in storage.glob(f"*/epoch-{epoch:05d}")):
        if time.time() > deadline:
            raise TimeoutError(f"no complete checkpoint of epoch {epoch} under {storage} after {timeout:.0f} s")
        time.sleep(0.02)


def kill_worker() -> None:
    from ray.util.state import list_actors

    deadline = time.time() + 60
    while time.time() < deadline:
        alive = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        if alive:
            os.kill(alive[0].pid, signal.SIGKILL)
            return
        time.sleep(0.1)
    raise TimeoutError("no live Ray Train worker to kill")


def damage(folder: Path, how: str) -> None:
    state = folder / "state.pt"
    if how == "truncated state.pt":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif how == "deleted state.pt":
        state.unlink()
    else:
        shutil.rmtree(folder)


def faulty_run(tmp: Path, name: str, epochs: int, epoch_s: float, rng: random.Random, reference: dict, how: str, loader_workers: int) -> Outcome:
    """One run of ``name``, its worker killed mid-epoch (its newest checkpoint damaged ``how``),
    its views made by ``loader_workers`` DataLoader processes. A run that fails writes its error
    and its own log (Ray's and Train's lines of it) to the harness's log (stdout, meanwhile)."""
    import traceback

    from selfsup.errors import one_line
    from selfsup.tracking import runs
    from selfsup.train.launch import train

    cfg = config(tmp, name, epochs, loader_workers)
    storage = Path(cfg.train.storage_path)
    # a damaged run needs a checkpoint older than the one damaged to fall back to
    kill_epoch, fraction = rng.randint(2 if how == "none" else 3, epochs - 1), rng.random()
    errors: list[BaseException] = []
    t0 = time.time()

    def target():
        try:
            train(cfg)
        except BaseException as exc:  # reported in the table, not raised in this thread
            errors.append(exc)

    runner = threading.Thread(target=target)
    runner.start()
    damaged_epoch = None
    try:
        wait_folder(storage, kill_epoch - 1)
        time.sleep(fraction * epoch_s)
        kill_worker()
        if how != "none":  # the newest complete one: a newer one the kill left half-copied is skipped as well
            folder = newest_complete(storage)
            damaged_epoch = int(folder.name.split("-")[1])
            damage(folder, how)
    finally:  # a harness error waits for the run, so as not to delete its store under it
        runner.join(timeout=600)
    wall = time.time() - t0
    client, run = the_run(cfg.tracking.uri, name)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
    starts = json.loads(run.data.tags.get(runs.STARTS, "[]"))
    warned = bool(json.loads(run.data.tags.get(runs.SKIPPED, "[]")))
    diff = None
    if not errors and runs.CHECKPOINT in run.data.tags:
        final = weights(run.data.tags[runs.CHECKPOINT])
        diff = max(float((final[k].double() - v.double()).abs().max()) if v.numel() else 0.0 for k, v in reference.items())
    status = run.info.status if not errors else f"{run.info.status}: {one_line(errors[0])[:120]}"
    if errors:
        print(f"--- {name} failed ---\n{''.join(traceback.format_exception(errors[0]))}")
        for own in storage.glob("*/train.log"):
            print(f"--- {own} ---\n{own.read_text()}")
    return Outcome(name, loader_workers, kill_epoch, fraction * epoch_s, how, damaged_epoch, starts, sorted(steps), diff, wall, status, warned)


def table(rows: list[Outcome], epochs: int) -> str:
    head = (f"{'run':10s} {'loaders':>7s} {'kill in epoch':>13s} {'+s':>5s}  {'damaged (epoch)':26s} {'warned':6s} {'starts':10s} {'lost':>4s} {'dup':>4s} "
            f"{'max |dw|':>9s} {'wall s':>7s}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        damaged = f"{r.damage} ({r.damaged_epoch})" if r.damaged_epoch else "-"
        warned = ("yes" if r.warned else "NO") if r.damaged_epoch else "-"
        diff = "-" if r.max_diff is None else f"{r.max_diff:.1e}" if r.max_diff else "0"
        lines.append(f"{r.run:10s} {r.loader_workers:>7d} {r.kill_epoch:>13d} {r.into_epoch_s:5.2f}  {damaged:26s} {warned:6s} {json.dumps(r.starts):10s} "
                     f"{r.lost(epochs):>4d} {r.doubled():>4d} {diff:>9s} {r.wall_s:7.1f}  {r.status}")
    return "\n".join(lines)


def sweep_table(drivers, outages, leaks) -> str:
    head = f"{'sweep fault':34s} {'exit':>4s} {'parent':9s} {'runs':>4s} {'lost':>4s} {'dup':>4s} {'versions':>8s} {'report':6s} {'wall s':>7s}  notes"
    lines = [head, "-" * len(head)]

    def row(label, c, wall, notes):
        lines.append(f"{label:34s} {c.exit_code:>4d} {c.parent_status:9s} {c.runs:>4d} {c.epochs_lost:>4d} {c.epochs_doubled:>4d} "
                     f"{c.versions:>8d} {'whole' if c.report_whole else 'NO':6s} {wall:7.1f}  {notes}")

    for d in drivers:
        row("driver killed 3 times", d.check, d.wall_s,
            "; ".join(f"{phase}: {moment}{'' if killed else ' (ended before the kill)'}" for phase, moment, killed in d.kills))
    for o in outages:
        row(f"server down {o.outage_s:g} s", o.check, o.wall_s, f"{'waited' if o.waited else 'NO wait reported'}; down for good: exit "
            f"{o.down_exit}, checkpoint of epoch {o.checkpoint_epoch} readable: {o.down_line[:90]}")
    for lk in leaks:
        rss = ", ".join(f"{n}: {mb:.0f}" for n, mb in lk.rss_mb[:: max(1, len(lk.rss_mb) // 6)])
        row(f"ASHA sweep, {lk.trials} trials", lk.check, lk.wall_s, f"left: {lk.actors} actors, {lk.groups} placement groups, "
            f"{lk.children} child processes; driver MB by trials ended: {rss}")
    return "\n".join(lines)


def down_ok(o) -> bool:
    return o.down_exit == 1 and o.checkpoint_epoch is not None and "unreachable" in o.down_line and o.down_line.startswith("selfsup: error:")


def sweep_summary(drivers, outages, leaks, trials: int) -> list[str]:
    parts = []
    if drivers:
        kills = [k for d in drivers for k in d.kills]
        phases = ", ".join(dict.fromkeys(phase for phase, _, killed in kills if killed))
        n = len(drivers)
        parts.append(f"driver kills {sum(killed for _, _, killed in kills)}/{len(kills)} ({phases}) in {n} sweep(s), resumed after each: "
                     f"{sum(d.check.good(trials) for d in drivers)}/{n} ended 0, {sum(d.check.runs - trials for d in drivers)} duplicate runs, "
                     f"{sum(d.check.parent_status == 'FINISHED' for d in drivers)}/{n} parents FINISHED, "
                     f"{sum(d.check.versions == 1 for d in drivers)}/{n} one registry version, {sum(d.check.report_whole for d in drivers)}/{n} reports whole")
    if outages:
        parts.append(f"tracking outages {sum(o.check.good(trials) and o.waited for o in outages)}/{len(outages)} sweeps finished "
                     f"({outages[0].outage_s:g} s down), {sum(o.check.epochs_lost for o in outages)} epochs lost, "
                     f"{sum(o.check.epochs_doubled for o in outages)} doubled, server gone for good {sum(map(down_ok, outages))}/{len(outages)} "
                     f"failed in one line with checkpoints intact")
    for lk in leaks:
        labels = "each labelled" if lk.labelled else "NOT all labelled as stopped or finished"
        parts.append(f"leaks after {lk.trials} ASHA trials ({lk.stopped} stopped early, {labels}): {lk.actors} actors, {lk.groups} "
                     f"placement groups, {lk.children} child processes left, driver memory {lk.growth_per_10():+.1f} MB per 10 trials")
    return parts


def summary(kills: list[Outcome], damaged: list[Outcome], epochs: int) -> str:
    def part(label: str, rows: list[Outcome]) -> str:
        n = len(rows)
        return (f"{label} {sum(r.resumed() for r in rows)}/{n} resumed, {sum(r.lost(epochs) for r in rows)} epochs lost, "
                f"{sum(r.doubled() for r in rows)} doubled, {sum(r.equal() for r in rows)}/{n} weights equal")

    parts = [part("worker kills", kills)] if kills else []
    if damaged:
        warned = f"{sum(r.warned for r in damaged)}/{len(damaged)} warned"
        parts.append(part("damaged checkpoints", damaged).replace(" resumed,", f" resumed past the damage, {warned},"))
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker-kills", type=int, default=20, help="runs whose Train worker is SIGKILLed mid-epoch")
    ap.add_argument("--damaged", type=int, default=6, help="runs whose newest checkpoint is damaged as the worker dies")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per run (at least 4)")
    ap.add_argument("--killed-sweeps", type=int, default=1,
                    help="sweeps whose driver is SIGKILLed in each phase in turn (trials, report, registration), resumed after each kill")
    ap.add_argument("--outages", type=int, default=1, help="sweeps whose tracking server goes down mid-sweep")
    ap.add_argument("--outage-s", type=float, default=30.0, help="how long the server is down")
    ap.add_argument("--leak-trials", type=int, default=30, help="trials of the ASHA sweep whose leftovers are counted (0: none)")
    ap.add_argument("--sweep-trials", type=int, default=3, help="trials of each driver-kill and outage sweep")
    ap.add_argument("--sweep-epochs", type=int, default=3, help="epochs of each driver-kill sweep's trials (one more in the outage "
                    "and ASHA sweeps)")
    ap.add_argument("--loader-workers", default="0,2", help="data.loader_workers of the faulty runs, in turn (comma-separated; the "
                    "reference run has 0: a batch's views do not depend on how many processes make them)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--log", help="file for Ray's, Train's and the runs' own output (default: a new file in the temp dir)")
    args = ap.parse_args()
    if args.epochs < 4:
        ap.error("--epochs: at least 4 (a kill lands in epochs 2 .. epochs-1, 3 .. epochs-1 with damage)")
    try:
        loader_workers = [int(n) for n in args.loader_workers.split(",")]
    except ValueError:
        ap.error(f"--loader-workers: {args.loader_workers!r} is not a comma-separated list of counts")

    import ray

    import sweep_faults
    from selfsup.console import to_log
    from selfsup.tracking import runs
    from selfsup.train.cluster import init_ray
    from selfsup.train.launch import train

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="flt", dir="/tmp"))
    log = Path(args.log or tempfile.mkstemp(prefix="selfsup-faults-", suffix=".log")[1])
    log.touch()
    print(f"Ray's, Train's and each run's own output: {log}", flush=True)
    rows: list[Outcome] = []
    drivers, outages, leaks = [], [], []
    try:
        with to_log(log) as console:
            init_ray(str(tmp / "ray"))
            plan = [(f"kill-{i + 1:02d}", "none") for i in range(args.worker_kills)]
            plan += [(f"damage-{i + 1:02d}", DAMAGE[i % len(DAMAGE)]) for i in range(args.damaged)]
            if plan:
                print(f"reference run ({args.epochs} epochs, no fault) ...", file=console)
                cfg = config(tmp, "reference", args.epochs)
                train(cfg)
                _, ref = the_run(cfg.tracking.uri, "reference")
                reference = weights(ref.data.tags[runs.CHECKPOINT])
                epoch_s = sum(v for _, v in runs.metric_history(cfg.tracking.uri, ref.info.run_id, "perf/epoch_s")) / args.epochs
            for i, (name, how) in enumerate(plan):
                rows.append(faulty_run(tmp, name, args.epochs, epoch_s, rng, reference, how, loader_workers[i % len(loader_workers)]))
                r = rows[-1]
                print(f"  {r.run} ({r.loader_workers} loader processes): killed in epoch {r.kill_epoch}{f', {how} (epoch {r.damaged_epoch})' if r.damaged_epoch else ''}; "
                      f"starts {r.starts}, {r.status}", file=console)
            sweep_epochs = args.sweep_epochs
            for i in range(args.killed_sweeps):
                print("sweep, driver killed during its trials, its report and its registration ...", file=console)
                drivers.append(sweep_faults.driver_kills(tmp / f"d{i}", args.sweep_trials, sweep_epochs, rng, sys.stdout))
            for i in range(args.outages):
                print(f"sweep, tracking server down {args.outage_s:g} s ...", file=console)
                outages.append(sweep_faults.outage(tmp / f"o{i}", args.sweep_trials, sweep_epochs + 1, args.outage_s, sys.stdout))
            if args.leak_trials:
                print(f"ASHA sweep of {args.leak_trials} trials (leaks) ...", file=console)
                leaks.append(sweep_faults.leaks(tmp / "leaks", args.leak_trials, sweep_epochs + 1, sys.stdout))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    kills, damaged = [r for r in rows if r.damage == "none"], [r for r in rows if r.damage != "none"]
    if rows:
        print()
        print(table(rows, args.epochs))
    if drivers or outages or leaks:
        print()
        print(sweep_table(drivers, outages, leaks))
    print()
    line = "; ".join(p for p in [summary(kills, damaged, args.epochs), *sweep_summary(drivers, outages, leaks, args.sweep_trials)] if p)
    print(line)
    good = all(r.resumed() and r.equal() and not r.lost(args.epochs) and not r.doubled() for r in rows) and all(r.warned for r in damaged)
    good &= all(all(killed for _, _, killed in d.kills) and d.check.good(args.sweep_trials) for d in drivers)
    good &= all(o.check.good(args.sweep_trials) and o.waited and down_ok(o) for o in outages)
    good &= all(not (lk.actors or lk.groups or lk.children) and lk.labelled and lk.check.exit_code == 0 for lk in leaks)
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
