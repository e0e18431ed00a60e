"""`selfsup ui` serves the project's store through a real `mlflow server` on 127.0.0.1."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request

from selfsup.tracking import runs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(base, server):
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            return
        except OSError:
            assert server.poll() is None and time.time() < deadline, server.stdout.read().decode()[-2000:] if server.poll() is not None else "server did not start"
            time.sleep(0.5)


@contextlib.contextmanager
def ui(workdir, uri, artifacts):
    """`selfsup ui` over the store at ``uri`` on a free port: yields its base URL; stopped after."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "selfsup.cli", "ui", "--tracking-uri", uri, "--artifacts", str(artifacts), "--port", str(port)],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base, server)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ui_serves_runs_and_metrics(finished_sweep, sweep_ui):
    """Runs logged into the store while `selfsup ui` serves it read back through it."""
    folder = finished_sweep[0]
    uri, artifacts = f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts")
    exp_id = runs.experiment_id(uri, "browse", artifacts)
    run_id = runs.start_run(uri, exp_id, "vicreg-abc", {runs.ROLE: "trial"})
    runs.log_metrics(uri, run_id, {"label_free/rankme": 12.5}, step=1)
    runs.log_metrics(uri, run_id, {"label_free/rankme": 20.0}, step=2)
    runs.end_run(uri, run_id, "FINISHED")

    base = sweep_ui
    exps = get(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10})["experiments"]
    assert "browse" in [e["name"] for e in exps]
    found = get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
    assert [r["info"]["run_name"] for r in found] == ["vicreg-abc"] and found[0]["info"]["status"] == "FINISHED"
    hist = get(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=label_free/rankme")
    assert [(m["step"], m["value"]) for m in hist["metrics"]] == [(1, 12.5), (2, 20.0)]


def test_a_finished_sweep_reads_back_through_the_ui(sweep_ui):
    """What a user browses after `selfsup sweep`: the sweep run with its report, every trial (named
    after method and trial, tagged), their metric histories and artifacts, the registered model."""
    base = sweep_ui
    (exp,) = [e for e in get(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10})["experiments"] if e["name"] == "tiny"]
    found = get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found}
    (parent,) = [r for r in found if tags[r["info"]["run_id"]]["selfsup.role"] == "sweep"]
    trials = [r for r in found if tags[r["info"]["run_id"]]["selfsup.role"] == "trial"]
    assert len(trials) == 3 and parent["info"]["run_name"] == "sweep-tiny"
    assert tags[parent["info"]["run_id"]]["mlflow.note.content"].startswith("**tiny**: 3 trials")
    for t in trials:
        tt = tags[t["info"]["run_id"]]
        assert t["info"]["run_name"] == f"vicreg-{tt['selfsup.trial_id']}"
        assert tt["selfsup.method"] == "vicreg" and tt["selfsup.dataset"] == "digits" and tt["selfsup.sweep"] == "tiny"
        assert tt["selfsup.collapsed"] == "false" and tt["mlflow.parentRunId"] == parent["info"]["run_id"]
        hist = get(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={t['info']['run_id']}&metric_key=label_free/lidar")
        assert [m["step"] for m in hist["metrics"]] == [1, 2]
    listed = get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}")
    assert {"selection.csv", "selection.md", "selection_scatter.png"} <= {f["path"] for f in listed["files"]}
    with urllib.request.urlopen(f"{base}/get-artifact?path=selection.csv&run_uuid={parent['info']['run_id']}", timeout=10) as resp:
        assert resp.read().decode().startswith("trial,")
    versions = get(f"{base}/api/2.0/mlflow/model-versions/search?filter=name%3D%27tiny%27")["model_versions"]
    assert len(versions) == 1 and versions[0]["run_id"] in {t["info"]["run_id"] for t in trials}
