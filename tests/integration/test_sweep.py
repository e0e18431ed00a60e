"""`selfsup sweep` on a real local Ray cluster (Tune + OptunaSearch + Train V2) with real MLflow."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
from mlflow.tracking import MlflowClient
from ray.util.state import list_actors

from selfsup.cli import main
from selfsup.config import SweepConfig, load_sweep
from selfsup.report.selection import DEFAULT
from selfsup.tune.sweep import run_sweep


def write_sweep(tmp, name, num_samples, epochs, scheduler="none", cpus_per_worker=0.5, extra="", seed=3, views="auto"):
    """A tiny digits VICReg sweep; ``views: light`` where its trials' metrics do not matter (cheaper,
    but its trials then probe alike, leaving no ranking to judge)."""
    (tmp / "base.yaml").write_text(textwrap.dedent(f"""\
        name: base
        model: {{backbone: cnn, embed_dim: 32, width: 8, depth: 2}}
        data: {{views: {views}}}
        method: {{name: vicreg, projector: [128, 128]}}
        train: {{epochs: {epochs}, batch_size: 128, storage_path: {tmp}/runs}}
        eval: {{subset_size: 256, lidar_samples: 64, lidar_views: 4}}
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
        seed: {seed}
        scheduler: {{type: {scheduler}, grace_period: 1}}
        """) + extra)
    return sweep


def trial_runs(tmp, name):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'sweep'")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return client, parent, children


def test_sweep_records_every_trial_and_resume_adds_none(finished_sweep, capfd, monkeypatch):
    """The shared finished sweep, as `selfsup sweep` printed it, as MLflow holds it and what it left
    behind (nothing); then `selfsup report` prints its table again and `--resume` of the finished
    sweep adds nothing."""
    workdir, path, lines, leftovers = finished_sweep
    assert leftovers == {"actors": [], "placement groups": [], "processes": []}, leftovers
    monkeypatch.chdir(workdir)
    progress = lines[:lines.index(next(ln for ln in lines if ln.startswith("trial ")))]  # up to the table's header
    table = "\n".join(lines[len(progress):])
    assert f"{SweepConfig.model_fields['metric'].default} picks trial" in table and "best probe acc" in table
    log = workdir / "runs" / "tiny" / "sweep.log"
    assert progress[0].startswith("sweep tiny: 3 trials of vicreg on digits") and str(log) in progress[0]
    assert sum("started" in ln for ln in progress) == 3 and sum("finished at epoch 2" in ln for ln in progress) == 3
    events = [ln for ln in progress if "trials ended" not in ln]  # the status line comes every 30 s, more on a busy machine
    assert len(events) <= 10 and not any("core_worker" in ln or "INFO" in ln for ln in lines), lines
    assert log.stat().st_size > 0, "Ray's and Tune's own output went to the sweep's log"

    client, parent, children = trial_runs(workdir, "tiny")
    assert client.get_experiment_by_name("tiny").tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/trials_finished"] == 3 and parent.data.metrics["sweep/trials_collapsed"] == 0
    pick = parent.data.tags["selfsup.pick_run"]
    assert parent.data.metrics["pick/probe/linear_acc"] == next(c for c in children if c.info.run_id == pick).data.metrics["probe/linear_acc"]
    assert {"pick/regret_points", "pick/kendall_tau", "pick/label_free/lidar"} <= set(parent.data.metrics)
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    lrs = {c.data.params["optim.lr"] for c in children}
    assert len(lrs) == 3, "each trial has its own sampled hyperparameters"
    for c in children:
        assert c.data.tags["selfsup.sweep"] == "tiny" and c.info.run_name.startswith("vicreg-")
        assert [m.step for m in client.get_metric_history(c.info.run_id, "label_free/rankme")] == [1, 2]
        assert "probe/linear_acc" in c.data.metrics
        assert c.data.metrics["collapsed"] == 0.0 and c.data.tags["selfsup.collapsed"] == "false"
    arts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    for name in ("selection.txt", "selection.csv", "selection.md", "search_space.yaml",
                 "selection_scatter.png", "selection_curves.png", "selection_spectra.png"):
        assert name in arts, name
    assert parent.data.tags["mlflow.note.content"].startswith("**tiny**: 3 trials, 3 finished")
    assert "Kendall tau" in table and f"* {DEFAULT}" in table
    for c in children:
        assert {"label_free/lidar", "label_free/alpha_req", "label_free/rankme_projector"} <= set(c.data.metrics)
        assert "spectrum.json" in [a.path for a in client.list_artifacts(c.info.run_id)]
    (version,) = client.search_model_versions("name='tiny'")
    picked = next(c for c in children if c.info.run_id == version.run_id)
    assert "backbone" in [a.path for a in client.list_artifacts(picked.info.run_id)]
    assert f"trial {picked.data.tags['selfsup.trial_id']} registered as 'tiny' version 1" in table

    assert main(["report", str(path)]) == 0
    assert table.split("\nmodel registry")[0].strip() in capfd.readouterr().out

    run_sweep(load_sweep(path), str(path), resume=True)
    assert len(trial_runs(workdir, "tiny")[2]) == 3
    assert len(client.search_model_versions("name='tiny'")) == 1, "a resumed, finished sweep registers nothing new"


def test_collapsed_and_crashing_trials_end_labelled_and_the_others_survive(ray_cluster, workdir):
    """One sweep of four trials (seed 24 draws them in this order): a 4-wide embedding that can never
    reach RankMe 5 (the sweep's threshold), views with infinite noise that make the loss non-finite at
    the first step, both stopped at their first epoch and labelled collapsed; two healthy trials, one
    of which loses its worker in its last epoch with no retries left (none in Train, none in Tune)
    and ends FAILED, while the other, the table and the pick survive."""
    path = write_sweep(workdir, "faults", num_samples=4, epochs=3, seed=24, extra="collapse_rankme: 5.0\ntrial_retries: 0\n", views="light")
    (workdir / "space.yaml").write_text("model.embed_dim: {type: choice, values: [4, 32]}\n"
                                        "data.noise_std: {type: choice, values: [0.05, .inf]}\n")
    base = workdir / "base.yaml"
    base.write_text(base.read_text().replace("train: {", "train: {max_failures: 0, "))
    out = {}
    runner = threading.Thread(target=lambda: out.update(table=run_sweep(load_sweep(path), str(path))))
    runner.start()
    deadline, killed = time.time() + 600, None
    while killed is None and runner.is_alive() and time.time() < deadline:
        done = [p.parent.name for p in (workdir / "runs").rglob("epoch-00002")]
        for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]) if done else []:
            with contextlib.suppress(psutil.Error):
                if any(trial in psutil.Process(actor.pid).cwd() for trial in done):  # Train runs a trial's workers in a folder named after it
                    os.kill(actor.pid, signal.SIGKILL)
                    killed = done
        time.sleep(0.05)
    runner.join(timeout=600)
    assert killed, "no healthy trial reached its second epoch"

    client, parent, children = trial_runs(workdir, "faults")
    assert parent.info.status == "FINISHED" and "picks trial" in out["table"] and "FAILED" in out["table"]
    kinds = []
    for c in children:
        noisy, narrow = float(c.data.params["data.noise_std"]) > 1, c.data.params["model.embed_dim"] == "4"
        epochs = [m.step for m in client.get_metric_history(c.info.run_id, "epoch")]
        if noisy or narrow:
            kinds.append("noise" if noisy else "narrow")
            assert c.info.status == "KILLED" and c.data.tags["selfsup.stopped_by"] == "collapse"
            assert c.data.tags["selfsup.collapsed"] == "true" and c.data.metrics["collapsed"] == 1.0
            assert epochs == [1], "stopped at the first epoch that collapsed"
            if noisy:
                assert c.data.metrics["train/loss"] != c.data.metrics["train/loss"]  # NaN
        elif c.info.status == "FAILED":
            kinds.append("crashed")
            assert c.data.tags["selfsup.trial_id"] in killed and epochs == [1, 2]
        else:
            kinds.append("healthy")
            assert c.info.status == "FINISHED" and epochs == [1, 2, 3] and c.data.metrics["collapsed"] == 0.0
    assert sorted(kinds) == ["crashed", "healthy", "narrow", "noise"], kinds
    assert "trials collapsed and were pruned" in out["table"]


def test_interrupted_sweep_resumes_without_duplicate_runs(ray_cluster, workdir):
    """Ctrl-C the real CLI mid-sweep, then `selfsup sweep --resume` on the same cluster."""
    path = write_sweep(workdir, "interrupt", num_samples=2, epochs=3, views="light")
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
    assert len(ids) == 2 == len(set(ids)), "one MLflow run per trial, continued on resume"
    assert all(c.info.status == "FINISHED" and c.data.metrics["epoch"] == 3 for c in children)
