"""cluster/ is ready to use: the launcher configs pass Ray's own validation, the KubeRay manifests
carry what KubeRay requires and run a sweep selfsup can parse and load, the image is on the Ray
version selfsup pins, and the MLflow deployments start `selfsup server` on PostgreSQL."""

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from selfsup.cli import parser
from selfsup.config import load_sweep
from selfsup.tune.sweep import base_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def pinned_ray() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [d for d in deps if d.startswith("ray[")]
    return re.fullmatch(r"ray\[[^\]]+\]==([\d.]+)", ray.split("#")[0].strip()).group(1)


def test_image_is_on_the_ray_selfsup_pins():
    import ray

    base = re.search(r"^FROM rayproject/ray:([\d.]+)-py311-gpu$", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert base and base.group(1) == pinned_ray() == ray.__version__
    assert "pip install --no-cache-dir -e ." in (CLUSTER / "Dockerfile").read_text()


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_config_passes_ray_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"]
    (gpu,) = [t for n, t in types.items() if n != config["head_node_type"]]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] == 0 and gpu["max_workers"] > 0
    spot = gpu["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" or any(
        s.get("provisioningModel") == "SPOT" for s in gpu["node_config"].get("scheduling", [])
    )
    assert spot and config["docker"]["image"].endswith("selfsup:0.1.0")
    assert any("pip install" in c and "selfsup" in c for c in config["setup_commands"])


def ray_cluster_spec_ok(spec: dict) -> None:
    """What KubeRay requires of a RayCluster spec (and what selfsup needs of it)."""
    assert spec["rayVersion"] == pinned_ray()
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    (container,) = head["template"]["spec"]["containers"]
    assert container["name"] and container["image"].endswith("selfsup:0.1.0")
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["groupName"] and isinstance(gpu["rayStartParams"], dict)
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1" and worker["image"] == container["image"]


def test_kuberay_raycluster():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    ray_cluster_spec_ok(doc["spec"])


def test_kuberay_rayjob_runs_a_sweep_selfsup_loads():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    ray_cluster_spec_ok(doc["spec"]["rayClusterSpec"])
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "selfsup"
    args = parser().parse_args(argv[1:])
    assert args.verb == "sweep"
    sweep = load_sweep(ROOT / args.sweep, args.set)
    cfg = base_config(sweep, args.sweep)
    assert cfg.tracking.uri == "http://mlflow:5000" and cfg.train.storage_path.startswith("s3://")
    assert cfg.tracking.artifact_location is None  # proxied by the server


def server_args(command: str):
    """``selfsup server ...`` from a shell command line, parsed by selfsup's own parser."""
    argv = shlex.split(re.sub(r"\$\{(\w+)[^}]*\}", r"\1", command))
    start = argv.index("selfsup")
    return parser().parse_args(argv[start + 1:])


def test_mlflow_deployments_run_selfsup_server_on_postgres():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "mlflow.yaml").read_text()))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert kinds >= {("StatefulSet", "mlflow-postgres"), ("Service", "mlflow-postgres"), ("Deployment", "mlflow"), ("Service", "mlflow")}
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    compose = yaml.safe_load((CLUSTER / "mlflow" / "compose.yaml").read_text())["services"]
    assert compose["postgres"]["image"].startswith("postgres:")
    for command in (container["args"][0], compose["mlflow"]["command"]):
        args = server_args(command)
        assert args.verb == "server" and args.backend_store_uri.startswith("postgresql://") and args.host == "0.0.0.0"
        assert args.artifacts.startswith("s3://") or args.artifacts == "ARTIFACTS"
