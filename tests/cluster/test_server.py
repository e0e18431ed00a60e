"""`selfsup server` as a team runs it: basic auth on PostgreSQL, and its refusals."""

import contextlib
import os
import subprocess
import urllib.error
import urllib.request

from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.cluster import services


def private_folders(tmp: Path) -> set[Path]:
    return set(tmp.glob("selfsup-server-*"))


def job_runners(url: str) -> list[str]:
    """Command lines of MLflow job-runner processes (``huey_consumer``, ``_job_runner``) under the
    ``mlflow server`` serving ``url``."""
    port = url.rsplit(":", 1)[1]
    found = []
    for server in psutil.process_iter(["cmdline"]):
        cmd = server.info["cmdline"] or []
        if len(cmd) > 2 and cmd[1].endswith("/mlflow") and cmd[2] == "server" and port in cmd:
            for child in server.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    line = " ".join(child.cmdline())
                    if "huey" in line or "_job_runner" in line:
                        found.append(line)
    return found


def test_basic_auth_server_on_postgres(pg, tmp_path, monkeypatch):
    """Basic auth with an admin password holding a '%' (configparser's interpolation broke startup
    when the password was written into the config): 401 without credentials, a run and an artifact
    with them; the auth config's private folder is gone once the server stops."""
    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "s3cret-%(x)s-100%"}
    temp = tmp_path / "tmp"  # the server's temporary folder: only its own private folder lands there
    temp.mkdir()
    with services.tracking_server(pg, str(tmp_path / "artifacts"), env={**admin, "TMPDIR": str(temp)}, extra=("--auth",)) as url:
        assert len(private_folders(temp)) == 1
        assert job_runners(url) == [], "MLflow's job runner (eight processes, ~2 GiB) is off"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert refused.value.code == 401
        for k, v in admin.items():
            monkeypatch.setenv(k, v)
        client = MlflowClient(url)
        exp = client.create_experiment("auth-check")
        run = client.create_run(exp).info.run_id
        client.log_text(run, "through the server", "note.txt")
        assert client.get_run(run).info.artifact_uri.startswith("mlflow-artifacts:/")
        assert any((tmp_path / "artifacts").rglob("note.txt"))
    assert services.pg_rows(pg.rsplit("/", 1)[0] + "/mlflow_auth", "SELECT username FROM users") == [("admin",)]
    assert private_folders(temp) == set()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend-store-uri", "runs/", "--artifacts", "a"], "--backend-store-uri: 'runs/' is not a database URL"),
        (["--backend-store-uri", "sqlite:///x.db", "--artifacts", "s3://"], "--artifacts: 's3://' names no bucket"),
        (["--backend-store-uri", "sqlite:///x.db", "--artifacts", "a", "--auth"], "--auth: set MLFLOW_TRACKING_USERNAME"),
    ],
)
def test_bad_server_arguments_get_one_line_and_leave_nothing(args, message, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    out = subprocess.run([str(services.BIN / "selfsup"), "server", *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith(f"selfsup: error: {message}"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
