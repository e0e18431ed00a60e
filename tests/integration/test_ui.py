"""`selfsup ui` serves the project's store through a real `mlflow server` on 127.0.0.1."""

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


def test_ui_serves_runs_and_metrics(workdir):
    uri, artifacts = f"sqlite:///{workdir}/mlflow.db", str(workdir / "artifacts")
    exp_id = runs.experiment_id(uri, "browse", artifacts)
    run_id = runs.start_run(uri, exp_id, "vicreg-abc", {runs.ROLE: "trial"})
    runs.log_metrics(uri, run_id, {"label_free/rankme": 12.5}, step=1)
    runs.log_metrics(uri, run_id, {"label_free/rankme": 20.0}, step=2)
    runs.end_run(uri, run_id, "FINISHED")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "selfsup.cli", "ui", "--tracking-uri", uri, "--artifacts", artifacts, "--port", str(port)],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.stdout.read().decode()[-2000:] if server.poll() is not None else "server did not start"
                time.sleep(0.5)
        exps = get(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10})["experiments"]
        assert "browse" in [e["name"] for e in exps]
        found = get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
        assert [r["info"]["run_name"] for r in found] == ["vicreg-abc"] and found[0]["info"]["status"] == "FINISHED"
        hist = get(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=label_free/rankme")
        assert [(m["step"], m["value"]) for m in hist["metrics"]] == [(1, 12.5), (2, 20.0)]
    finally:
        server.terminate()
        server.wait(timeout=30)
