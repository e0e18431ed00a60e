"""The sweep half of the fault harness (`benchmarks/faults.py` runs it): `selfsup sweep` as a user
runs it, a real CLI process on the harness's Ray, its driver killed, its tracking server stopped,
its leftovers counted.

- driver kills: one sweep whose `selfsup sweep` process is SIGKILLed in each phase in turn, and
  resumed (`selfsup sweep --resume`) after each kill: in its `trials` (once a random number of
  trials have started, a random 0-3 s later), in its `report` (a random 0-1 s into writing the
  selection report, the resumed run having finished the trials) and in its `registration` (right
  after the pick's model version is created, before the sweep records it: the worst moment); then
  resumed to its end. Checked: it ends 0; one parent run, FINISHED; one run per trial; every epoch
  of every trial logged once; one registry version; the report whole (its text, table, summary and
  plots on the parent, the summary as the parent's description).
- tracking outage: the sweep logs to a `selfsup server` that is stopped (process killed) once a
  trial has logged an epoch and started again on the same port `outage_s` later. Checked: the sweep
  ends 0 with every trial FINISHED, every epoch once, the parent FINISHED, and it said it waited.
  Then a `selfsup train` against a server that stops for good (`tracking.patience_s` 10): it must
  exit 1 with one line naming the store, and its newest checkpoint must read back.
- leaks: an ASHA sweep of `leak_trials` trials; the driver's resident memory and child processes are
  sampled as trials end. Checked once it exits: no Ray actor alive, no placement group left, none of
  its child processes alive; every trial stopped before its last epoch is KILLED and labelled by what
  stopped it (`selfsup.stopped_by`: `scheduler`, or `collapse` at a rate that collapsed) and every
  other one FINISHED all its epochs (at least one); the driver's memory growth per 10 trials is
  reported.

The kills inside the report and the registration are made by a wrapper that runs the real CLI with
the named step replaced by one that SIGKILLs the process (`KILLER`); nothing else differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PHASES = ("trials", "report", "registration")
KILLER = textwrap.dedent("""\
    import os, signal, sys, threading
    import selfsup.tune.sweep as sweep
    from selfsup.cli import main
    phase, delay = sys.argv[1], float(sys.argv[2])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if phase == "report":
        publish = sweep.publish
        def in_report(*a, **k):
            threading.Timer(delay, die).start()
            return publish(*a, **k)
        sweep.publish = in_report
    elif phase == "registration":
        register_pick = sweep.register_pick
        def in_registration(*a, **k):
            register_pick(*a, **k)
            die()
        sweep.register_pick = in_registration
    sys.exit(main(sys.argv[3:]))
    """)
REPORT_FILES = {"selection.txt", "selection.csv", "selection.md", "selection_scatter.png", "selection_curves.png"}


def write_sweep(tmp: Path, name: str, trials: int, epochs: int, uri: str, scheduler: str = "none", extra: dict | None = None) -> Path:
    """A small digits VICReg sweep (two trials at a time on two cores) logging to ``uri``."""
    tmp.mkdir(parents=True, exist_ok=True)
    artifacts = "" if uri.startswith("http") else f", artifact_location: {tmp}/artifacts"
    (tmp / "base.yaml").write_text(textwrap.dedent(f"""\
        name: base
        data: {{views: light}}
        model: {{backbone: cnn, embed_dim: 32, width: 8, depth: 2}}
        method: {{name: vicreg, projector: [128, 128]}}
        train: {{epochs: {epochs}, batch_size: 128, storage_path: {tmp}/runs}}
        eval: {{subset_size: 256, lidar_samples: 64, lidar_views: 4, probe_every: 0}}
        scaling: {{num_workers: 1, cpus_per_worker: 0.5}}
        tracking: {{uri: "{uri}"{artifacts}}}
        """))
    (tmp / "space.yaml").write_text("optim.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n")
    sweep = tmp / f"{name}.yaml"
    body = {"name": name, "base": "base.yaml", "search_space": "space.yaml", "num_samples": trials, "max_concurrent_trials": 2,
            "seed": 0, "scheduler": {"type": scheduler, "grace_period": 1, "reduction_factor": 2}, **(extra or {})}
    sweep.write_text(json.dumps(body))
    if uri.startswith("sqlite"):
        client(uri).search_experiments()  # the store's tables made here: the harness reads it while the sweep writes
    return sweep


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "selfsup.cli", *args]


def environment() -> dict[str, str]:
    import ray

    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}


def client(uri: str):
    from selfsup.tracking import runs

    return runs.client(uri)


def sweep_runs(uri: str, name: str):
    """``(parents, children)`` of the sweep ``name`` (MLflow run objects)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return [], []
    parents = c.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'sweep'")
    children = c.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'trial'")
    return parents, children


def epochs_logged(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in client(uri).get_metric_history(run_id, "epoch"))


@dataclass
class SweepCheck:
    """What a finished sweep's records say."""

    exit_code: int
    parents: int
    parent_status: str
    runs: int
    trials: int
    epochs_lost: int
    epochs_doubled: int
    versions: int
    report_whole: bool
    notes: list[str] = field(default_factory=list)

    def good(self, trials: int) -> bool:
        return (self.exit_code == 0 and self.parents == 1 and self.parent_status == "FINISHED" and self.runs == trials == self.trials
                and not self.epochs_lost and not self.epochs_doubled and self.versions == 1 and self.report_whole)


def check_sweep(uri: str, name: str, trials: int, epochs: int, exit_code: int) -> SweepCheck:
    """The records of sweep ``name`` after its (last) command ended with ``exit_code``."""
    c = client(uri)
    parents, children = sweep_runs(uri, name)
    lost = doubled = 0
    for run in children:
        steps = epochs_logged(uri, run.info.run_id)
        last = int(run.data.metrics.get("epoch", 0))
        expected = set(range(1, (epochs if run.info.status == "FINISHED" else last) + 1))
        lost += len(expected - set(steps))
        doubled += len(steps) - len(set(steps))
    whole = False
    status = parents[0].info.status if parents else "-"
    if len(parents) == 1:
        parent = parents[0]
        files = {a.path for a in c.list_artifacts(parent.info.run_id)}
        whole = REPORT_FILES <= files and "sweep/trials" in parent.data.metrics and bool(parent.data.tags.get("mlflow.note.content"))
    versions = len(c.search_model_versions(f"name = '{name}'")) if parents else 0
    trial_ids = {r.data.tags.get("selfsup.trial_id") for r in children}
    return SweepCheck(exit_code, len(parents), status, len(children), len(trial_ids), lost, doubled, versions, whole)


def wait(check, what: str, timeout: float = 600, every: float = 0.5):
    deadline = time.time() + timeout
    while True:
        try:
            found = check()
        except Exception:  # the store is not there yet
            found = None
        if found:
            return found
        if time.time() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


def run_logged(cmd: list[str], log, env: dict, cwd: Path, timeout: float = 1200, shown: str | None = None) -> int:
    log.write(f"\n$ {shown or ' '.join(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout).returncode


@dataclass
class DriverKills:
    """One sweep killed in each of :data:`PHASES` in turn: ``(phase, moment, killed)`` per kill,
    and its records once the last ``--resume`` ended."""

    kills: list[tuple[str, str, bool]]
    check: SweepCheck
    wall_s: float


def driver_kills(tmp: Path, trials: int, epochs: int, rng: random.Random, log) -> DriverKills:
    """One sweep SIGKILLed in its trials, then (resumed) in its report, then (resumed) in its
    registration, then resumed to its end."""
    name = "kill"
    uri = f"sqlite:///{tmp}/mlflow.db"
    sweep = write_sweep(tmp, name, trials, epochs, uri)
    env = environment()
    t0 = time.time()
    kills = []
    for phase in PHASES:
        resume = ["--resume"] if kills else []
        if phase == "trials":
            started = rng.randint(1, trials)
            delay = rng.uniform(0, 3)
            moment = f"{delay:.1f} s after trial {started} started"
            log.write(f"\n$ selfsup sweep {sweep}  (killed {moment})\n")
            log.flush()
            proc = subprocess.Popen(cli("sweep", str(sweep)), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
            try:
                wait(lambda: len(sweep_runs(uri, name)[1]) >= started or proc.poll() is not None, f"{name}: trial {started}")
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
            finally:
                code = proc.wait(timeout=600)
        else:
            delay = rng.uniform(0, 1) if phase == "report" else 0.0
            moment = f"{delay:.2f} s into the report" if phase == "report" else "after the model version was created"
            code = run_logged([sys.executable, "-c", KILLER, phase, str(delay), "sweep", str(sweep), *resume], log, env, tmp,
                              shown=f"selfsup sweep {sweep} {' '.join(resume)}  (killed {moment})")
        kills.append((phase, moment, code == -signal.SIGKILL))
    code = run_logged(cli("sweep", str(sweep), "--resume"), log, env, tmp)
    return DriverKills(kills, check_sweep(uri, name, trials, epochs, code), time.time() - t0)


@dataclass
class Outage:
    outage_s: float
    waited: bool
    check: SweepCheck
    down_exit: int
    down_line: str
    checkpoint_epoch: int | None
    wall_s: float


def start_server(where: Path, port: int, log) -> subprocess.Popen:
    cmd = cli("server", "--backend-store-uri", f"sqlite:///{where}/server.db", "--artifacts", str(where / "served"), "--port", str(port),
              "--workers", "1")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    import urllib.request

    wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200, "selfsup server", timeout=120)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Kill the server and every process it started, as a crash would."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outage(tmp: Path, trials: int, epochs: int, outage_s: float, log) -> Outage:
    """A sweep whose tracking server is down for ``outage_s`` mid-sweep; then a run whose server
    stays down."""
    from selfsup.train import checkpoints

    where = tmp / "outage"
    where.mkdir(parents=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    sweep = write_sweep(where, "outage", trials, epochs, uri, extra={"overrides": {"tracking.patience_s": 300}})
    env = environment()
    t0 = time.time()
    server = start_server(where, port, log)
    log.write(f"\n$ selfsup sweep {sweep}  (server down {outage_s:g} s)\n")
    log.flush()
    out = where / "sweep.out"
    with open(out, "w") as console:
        proc = subprocess.Popen(cli("sweep", str(sweep)), stdout=console, stderr=subprocess.STDOUT, env=env, cwd=where)
        try:
            wait(lambda: any(r.data.metrics.get("epoch", 0) >= 1 for r in sweep_runs(uri, "outage")[1]), "outage: a first epoch")
            stop(server)
            time.sleep(outage_s)
            server = start_server(where, port, log)
            code = proc.wait(timeout=1200)
        finally:
            if proc.poll() is None:
                proc.kill()
    printed = out.read_text()
    log.write(printed)
    check = check_sweep(uri, "outage", trials, epochs, code)
    waited = "unreachable" in printed or "unreachable" in (where / "runs" / "outage" / "sweep.log").read_text()

    # the server goes away for good under a single run
    run_cfg = where / "down.yaml"
    base = (where / "base.yaml").read_text().replace(f"{where}/runs", f"{where}/down-runs")
    run_cfg.write_text(base.replace("name: base", "name: down") + "\n")
    cmd = cli("train", str(run_cfg), "--set", "tracking.patience_s=10", "--set", "train.max_failures=0", "--set", f"train.epochs={epochs + 20}")
    with open(where / "down.out", "w") as console:
        proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, env=env, cwd=where)
        try:
            wait(lambda: list((where / "down-runs").glob("*/epoch-00002")), "down: a checkpoint of epoch 2")
            stop(server)
            down_exit = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = (where / "down.out").read_text().strip().splitlines()
    log.write("\n".join(lines) + "\n")
    runs_dir = next((where / "down-runs").glob("*/epoch-*")).parent
    state, _, _ = checkpoints.newest_readable(str(runs_dir))
    return Outage(outage_s, waited, check, down_exit, lines[-1] if lines else "", state["epoch"] if state else None, time.time() - t0)


@dataclass
class Leaks:
    trials: int
    actors: int
    groups: int
    children: int
    rss_mb: list[tuple[int, float]]
    check: SweepCheck
    wall_s: float
    stopped: int
    labelled: bool

    def growth_per_10(self) -> float:
        """Least-squares slope of the driver's RSS against trials ended, per 10 trials: from the
        first trial's end (the driver has imported and started everything by then), from the 5th
        in a sweep of 10 trials or more."""
        pts = [(n, mb) for n, mb in self.rss_mb if n >= (5 if self.trials >= 10 else 1)]
        if len({n for n, _ in pts}) < 2:
            return 0.0
        mx = sum(n for n, _ in pts) / len(pts)
        my = sum(mb for _, mb in pts) / len(pts)
        return 10 * sum((n - mx) * (mb - my) for n, mb in pts) / sum((n - mx) ** 2 for n, _ in pts)


def ray_state(detached: bool = True) -> tuple[set[str], set[str]]:
    """The live actors (as ``Class id``) and placement groups of the Ray this process is connected
    to; without ``detached``, not the detached actors (cluster-wide for good, as Ray Train's state
    actor that the first run on a cluster starts)."""
    from ray.util.state import list_actors, list_placement_groups

    actors = {f"{a.class_name} {a.actor_id}" for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True) if detached or not a.is_detached}
    return actors, {g.placement_group_id for g in list_placement_groups() if g.state != "REMOVED"}


def running(pids) -> list[int]:
    """Those of ``pids`` whose process still runs (a zombie does not)."""
    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):  # gone meanwhile
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


def leaks(tmp: Path, trials: int, epochs: int, log) -> Leaks:
    """An ASHA sweep of ``trials`` trials; what it leaves behind and how its driver's memory grows."""
    where = tmp / "leaks"
    uri = f"sqlite:///{where}/mlflow.db"
    sweep = write_sweep(where, "leaks", trials, epochs, uri, scheduler="asha")
    env = environment()
    actors_before, groups_before = ray_state()  # Ray's own, or an earlier test's
    t0 = time.time()
    log.write(f"\n$ selfsup sweep {sweep}  (leaks)\n")
    log.flush()
    proc = subprocess.Popen(cli("sweep", str(sweep)), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=where)
    driver = psutil.Process(proc.pid)
    seen, samples, ended = set(), [], -1
    try:
        while proc.poll() is None:
            try:
                seen |= {c.pid for c in driver.children(recursive=True)}
                _, children = sweep_runs(uri, "leaks")
                done = sum(r.info.status != "RUNNING" for r in children)
                if done != ended:
                    ended = done
                    samples.append((done, driver.memory_info().rss / 2**20))
            except Exception:  # the store is created by the sweep, the driver may just have exited
                pass
            time.sleep(1.0)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(5)  # Ray reaps the job's actors once its driver has gone
    actors, groups = ray_state()
    actors, groups, alive = actors - actors_before, groups - groups_before, running(seen)
    _, children = sweep_runs(uri, "leaks")
    stopped = [r for r in children if r.info.status == "KILLED"]
    finished = [r for r in children if r.info.status == "FINISHED"]
    labelled = (len(stopped) + len(finished) == trials and bool(finished) and all(r.data.metrics.get("epoch") == epochs for r in finished)
                and all(r.data.tags.get("selfsup.stopped_by") in ("scheduler", "collapse") and r.data.metrics.get("epoch", 0) < epochs
                        for r in stopped))
    return Leaks(trials, len(actors), len(groups), len(alive), samples, check_sweep(uri, "leaks", trials, epochs, code), time.time() - t0,
                 len(stopped), labelled)
