"""Storage locations (local folders and filesystem URIs) and what a job's workers inherit."""

import json

from selfsup import storage
from selfsup.config import ExperimentConfig, resolve_paths
from selfsup.train.cluster import JOB_CONFIG, forwarded_env, shared_sessions


def test_local_paths_and_uris(tmp_path):
    assert storage.is_local("runs") and storage.is_local(str(tmp_path)) and storage.is_local("file:///x")
    assert not storage.is_local("s3://bucket/runs") and not storage.is_local("gs://b/p")
    assert storage.join("s3://bucket/runs/", "sweep", "trials") == "s3://bucket/runs/sweep/trials"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "state.pt").write_bytes(b"x1")
    assert storage.exists(str(tmp_path / "a")) and not storage.is_file(str(tmp_path / "a"))
    assert storage.is_file(f"file://{tmp_path}/a/state.pt") and storage.read_bytes(str(tmp_path / "a" / "state.pt")) == b"x1"
    assert not storage.exists(str(tmp_path / "b"))


def test_artifacts_local_for_a_local_store_and_left_to_a_server(tmp_path):
    local = resolve_paths(ExperimentConfig(), tmp_path)
    assert local.tracking.artifact_location == str(tmp_path / "selfsup-artifacts")
    served = resolve_paths(ExperimentConfig.model_validate({"tracking": {"uri": "http://mlflow:5000"}}), tmp_path)
    assert served.tracking.artifact_location is None
    assert served.train.storage_path == str(tmp_path / "selfsup-runs")


SECRETS = {"MLFLOW_TRACKING_PASSWORD": "pw-1", "MLFLOW_TRACKING_TOKEN": "tok-2", "AWS_ACCESS_KEY_ID": "key-3",
           "AWS_SECRET_ACCESS_KEY": "secret-4", "AWS_SESSION_TOKEN": "session-5"}


def test_workers_inherit_settings_the_job_does_not_set_but_no_secret(monkeypatch):
    """Endpoints, user names and regions reach the workers through the job's runtime env; the
    secrets do not (Ray's dashboard and Jobs API show a job's runtime env to anyone who reaches
    them) unless SELFSUP_FORWARD_SECRETS=1 asks for them, which is warned about."""
    from selfsup.train.cluster import FORWARD_SECRETS, secrets_warning

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("UNRELATED", "x")
    monkeypatch.delenv(JOB_CONFIG, raising=False)
    monkeypatch.delenv(FORWARD_SECRETS, raising=False)
    env = forwarded_env()
    assert {"MLFLOW_TRACKING_USERNAME", "AWS_ENDPOINT_URL", "AWS_REGION"} <= set(env) and "UNRELATED" not in env
    assert not set(SECRETS) & set(env) and not set(SECRETS.values()) & set(env.values())
    assert secrets_warning(env) is None
    monkeypatch.setenv(JOB_CONFIG, json.dumps({"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://elsewhere"}}}))
    assert "AWS_ENDPOINT_URL" not in forwarded_env() and forwarded_env()["AWS_REGION"] == "us-east-1"
    monkeypatch.setenv(FORWARD_SECRETS, "1")
    env = forwarded_env()
    assert set(SECRETS) <= set(env)
    warning = secrets_warning(env)
    assert warning.startswith("[selfsup] warning: SELFSUP_FORWARD_SECRETS=1 forwards AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY") and "\n" not in warning


def ray_node(host: str, temp: str, socket: str, node_id: str) -> dict:
    """A ``ray.nodes()`` row, as Ray 2.60 gives it, with the keys :func:`shared_sessions` reads."""
    session = f"{temp}/session_2026-12-02_05-02-36_902897_31564"
    return {"NodeID": node_id * 7, "Alive": True, "NodeManagerHostname": host, "RayletSocketName": f"{session}/sockets/{socket}"}


def test_nodes_of_one_machine_in_one_session_folder_are_found():
    """Nodes on one host that share a session folder (a node started without its own --temp-dir)
    are found; the same folder path on other hosts (every KubeRay pod has /tmp/ray) is not shared."""
    head = ray_node("vm", "/tmp/ray", "raylet", "7d1adf84")
    joined = ray_node("vm", "/tmp/ray", "raylet.1", "5660e449")
    own = ray_node("vm", "/tmp/rn2x", "raylet", "aa11bb22")
    pod = ray_node("pod-2", "/tmp/ray", "raylet", "cc33dd44")
    assert shared_sessions([head, joined, own, pod]) == {"/tmp/ray/session_2026-12-02_05-02-36_902897_31564": ["7d1adf84", "5660e449"]}
    assert shared_sessions([head, own, pod]) == {}


def test_server_warns_when_bound_beyond_loopback():
    from selfsup.tracking.server import exposure_warning, redact

    assert exposure_warning("127.0.0.1", 5000, False) is None and exposure_warning("::1", 5000, False) is None
    assert exposure_warning("0.0.0.0", 5000, False) == (
        "serving on 0.0.0.0: anyone who can reach port 5000 can read and write every run (add --auth for MLflow basic auth)"
    )
    assert "with a user and password" in exposure_warning("10.0.0.5", 80, True)
    assert redact("postgresql://u:pw@db:5432/m") == "postgresql://u:***@db:5432/m"
