"""`selfsup sweep` on a real local Ray cluster (Tune + OptunaSearch + Train V2) with real MLflow."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from mlflow.tracking import MlflowClient
from ray.util.state import list_actors

from selfsup.cli import main
from selfsup.config import load_sweep
from selfsup.tune.sweep import run_sweep


def write_sweep(tmp, name, num_samples, epochs, scheduler="none", cpus_per_worker=0.5, extra=""):
    (tmp / "base.yaml").write_text(textwrap.dedent(f"""\
        name: base
        model: {{backbone: cnn, embed_dim: 32, width: 8, depth: 2}}
        method: {{name: vicreg, projector: [128, 128]}}
        train: {{epochs: {epochs}, batch_size: 128, storage_path: {tmp}/runs}}
        eval: {{subset_size: 256}}
        scaling: {{num_workers: 1, cpus_per_worker: {cpus_per_worker}}}
        tracking: {{uri: "sqlite:///{tmp}/mlflow.db", artifact_location: {tmp}/artifacts}}
        """))
    (tmp / "space.yaml").write_text("optim.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n"
                                    "method.sim_coeff: {type: uniform, low: 10.0, high: 40.0}\n")
    sweep = tmp / f"{name}.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        name: {name}
        base: base.yaml
        search_space: space.yaml
        num_samples: {num_samples}
        max_concurrent_trials: 2
        seed: 3
        scheduler: {{type: {scheduler}, grace_period: 1}}
        """) + extra)
    return sweep


def trial_runs(tmp, name):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'sweep'")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return client, parent, children


def test_sweep_records_every_trial_and_resume_adds_none(ray_cluster, workdir, capsys):
    path = write_sweep(workdir, "tiny", num_samples=3, epochs=2)
    table = run_sweep(load_sweep(path), str(path))
    assert "label_free/rankme picks trial" in table and "best probe acc" in table

    client, parent, children = trial_runs(workdir, "tiny")
    assert parent.info.status == "FINISHED"
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    lrs = {c.data.params["optim.lr"] for c in children}
    assert len(lrs) == 3, "each trial has its own sampled hyperparameters"
    for c in children:
        assert c.data.tags["selfsup.sweep"] == "tiny" and c.info.run_name.startswith("vicreg-")
        assert [m.step for m in client.get_metric_history(c.info.run_id, "label_free/rankme")] == [1, 2]
        assert "probe/linear_acc" in c.data.metrics
    arts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert "selection.txt" in arts and "search_space.yaml" in arts

    assert main(["report", str(path)]) == 0
    assert table.strip() in capsys.readouterr().out

    run_sweep(load_sweep(path), str(path), resume=True)
    assert len(trial_runs(workdir, "tiny")[2]) == 3


def test_asha_stops_trials_and_they_are_labelled(ray_cluster, workdir):
    path = write_sweep(workdir, "asha", num_samples=4, epochs=4, scheduler="asha",
                       extra="scheduler: {type: asha, grace_period: 1, reduction_factor: 4}\n")
    run_sweep(load_sweep(path), str(path))
    _, parent, children = trial_runs(workdir, "asha")
    status = sorted(c.info.status for c in children)
    assert len(children) == 4 and "FINISHED" in status
    for c in children:
        epochs = int(c.data.metrics["epoch"])
        if c.info.status == "KILLED":
            assert c.data.tags["selfsup.stopped_by"] == "scheduler" and epochs < 4
        else:
            assert c.info.status == "FINISHED" and epochs == 4


def test_interrupted_sweep_resumes_without_duplicate_runs(ray_cluster, workdir):
    """Ctrl-C the real CLI mid-sweep, then `selfsup sweep --resume` on the same cluster."""
    path = write_sweep(workdir, "interrupt", num_samples=3, epochs=4, cpus_per_worker=1.0)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "selfsup.cli", "sweep", str(path)]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    deadline = time.time() + 300
    while time.time() < deadline:
        exp = client.get_experiment_by_name("interrupt")
        runs = exp and client.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'trial'")
        if runs and any(r.data.metrics.get("epoch", 0) >= 1 for r in runs):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    first, _ = proc.communicate(timeout=300)
    assert "interrupted; continue it with" in first, first[-3000:]

    _, parent, children = trial_runs(workdir, "interrupt")
    assert parent.info.status == "KILLED"
    assert any(c.data.tags.get("selfsup.stopped_by") == "interrupted" for c in children)

    resumed = subprocess.run(cmd + ["--resume"], env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    _, parent, children = trial_runs(workdir, "interrupt")
    assert parent.info.status == "FINISHED"
    ids = [c.data.tags["selfsup.trial_id"] for c in children]
    assert len(ids) == 3 == len(set(ids)), "one MLflow run per trial, continued on resume"
    assert all(c.info.status == "FINISHED" and c.data.metrics["epoch"] == 4 for c in children)


def test_crashing_trial_does_not_take_the_sweep_down(ray_cluster, workdir):
    """A trial whose worker dies (no retries left) ends FAILED; the others and the table survive."""
    path = write_sweep(workdir, "crash", num_samples=3, epochs=12, cpus_per_worker=1.0)
    base = workdir / "base.yaml"
    base.write_text(base.read_text().replace("train: {", "train: {max_failures: 0, "))
    out = {}
    runner = threading.Thread(target=lambda: out.update(table=run_sweep(load_sweep(path), str(path))))
    runner.start()
    deadline = time.time() + 300
    workers = []
    while not workers and time.time() < deadline:
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    while not list((workdir / "runs").rglob("epoch-00002")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(workers[0].pid, signal.SIGKILL)
    runner.join(timeout=600)

    _, parent, children = trial_runs(workdir, "crash")
    assert parent.info.status == "FINISHED" and "picks trial" in out["table"]
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
    assert "FAILED" in out["table"]
