"""The Ray cluster a command runs on: connecting (or starting a local Ray), what the job's workers
inherit from this process's environment, and the check that a config can work across its nodes.

A multi-node cluster needs places every node reaches: an MLflow *server* (workers on any node log
over HTTP, artifacts proxied by the server) and checkpoints on an object store or a filesystem
mounted on every node. A config that names a store or a folder only one node sees is refused
before any run is opened, with a one-line error that says what to use instead.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from selfsup import storage
from selfsup.config import ConfigError, ExperimentConfig, is_server

FORWARDED = ("MLFLOW_TRACKING_", "AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "RAY_TRAIN_")
"""Variables (by prefix) that every worker of the job needs as the driver has them: the MLflow
server's address and user, the object store's endpoint and region, and Ray Train's settings."""
SECRET = ("PASSWORD", "TOKEN", "SECRET", "ACCESS_KEY")
"""Parts of a variable's name that make it a secret (``MLFLOW_TRACKING_PASSWORD``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ACCESS_KEY_ID``, ``AWS_SESSION_TOKEN``, ...): not forwarded, since a
job's runtime env is shown to anyone who reaches Ray's dashboard or Jobs API. Workers take them
from their node's own environment (instance profiles, Kubernetes secrets, the shell that ran
``ray start``), unless :data:`FORWARD_SECRETS` is set."""
FORWARD_SECRETS = "SELFSUP_FORWARD_SECRETS"
"""Set to 1 to forward the secrets too (warned about: they become readable in the job's metadata)."""
RAY_TRAIN_DEFAULTS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
"""Ray Train settings selfsup changes unless the environment sets them: no preemption watcher (an
actor process more per run, started before training, whose only use is to report a preempted
node; a lost worker is restarted from its checkpoint either way)."""
JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def job_runtime_env() -> dict:
    """The runtime env of the job this process is the driver of under ``ray job submit`` ({} otherwise)."""
    return json.loads(os.environ.get(JOB_CONFIG, "{}")).get("runtime_env") or {}


def is_secret(name: str) -> bool:
    return any(part in name.upper() for part in SECRET)


def forwarded_env() -> dict[str, str]:
    """This process's MLflow and object-store variables that are not secrets (:data:`SECRET`; all
    of them with ``SELFSUP_FORWARD_SECRETS=1``), less those the submitted job's runtime env already
    sets (``ray job submit --runtime-env-json``: Ray refuses to merge a key twice)."""
    taken = set(job_runtime_env().get("env_vars") or {})
    secrets = os.environ.get(FORWARD_SECRETS) == "1"
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED) and k not in taken and (secrets or not is_secret(k))}


def secrets_warning(env: dict[str, str]) -> str | None:
    """The warning :func:`init_ray` prints when ``env`` forwards secrets (``SELFSUP_FORWARD_SECRETS=1``)."""
    names = sorted(k for k in env if is_secret(k))
    if not names:
        return None
    return (f"[selfsup] warning: {FORWARD_SECRETS}=1 forwards {', '.join(names)} to the job's workers in its runtime env, which "
            "anyone who reaches Ray's dashboard or Jobs API can read; prefer the nodes' own environment (instance profiles, Kubernetes secrets)")


def init_ray(temp_dir: str | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` if set, else start a local Ray (no-op if already connected); the
    job's workers on every node get :func:`forwarded_env` (no secrets unless asked for, and then
    with a warning).

    A local Ray's Train controllers poll their workers every 0.5 s instead of Ray's 2 s (unless
    ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` is set): each run ends sooner after its last epoch,
    and a worker that dies loses at most that much of its reports.

    Several local commands can run at once, each on its own Ray: a local Ray's dashboard gets a
    port chosen here, and its processes ``RAY_API_SERVER_ADDRESS`` naming it. Without that, Ray
    Train's placement-group cleaner asks Ray's state API whether a run's controller is alive, the
    API finds the newest local Ray, which is another command's, the controller is not there, and
    the cleaner removes the placement group of a live run: its workers never start ("worker group
    startup timed out")."""
    if ray.is_initialized():
        return
    for key, value in RAY_TRAIN_DEFAULTS.items():
        os.environ.setdefault(key, value)
    address = os.environ.get("RAY_ADDRESS")
    dashboard = {}
    if not address:
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        port = free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by this Ray's processes
        dashboard = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
    env = forwarded_env()
    warning = secrets_warning(env)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    # a temp dir names a local Ray's session folder; a running cluster has its own. "local": not the
    # cluster of this machine's last `ray start`, which Ray joins by default, even one long dead
    ray.init(address=address or "local", _temp_dir=None if address else temp_dir, log_to_driver=True,
             runtime_env={"env_vars": env} if env else None, **dashboard)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"]]


def check_cluster(cfg: ExperimentConfig, source: str = "config") -> None:
    """In a job submitted with ``--working-dir``, refuse local paths inside that directory (Ray
    deletes its copy after the job). On a cluster of more than one node, refuse what only one node
    can reach: a local MLflow store, a local artifact folder, a checkpoint folder some node does not see.
    Refuse custom resources (``data.preprocess_resource``, ``scaling.resources``) that no node offers:
    what asks for them would wait for ever."""
    nodes = alive_nodes()
    check_job_paths(cfg, source, nodes)
    wanted = {"data.preprocess_resource": [cfg.data.preprocess_resource] if cfg.data.uses_ray_data and cfg.data.preprocess_resource else [],
              "scaling.resources": list(cfg.scaling.resources)}
    for key, names in wanted.items():
        for name in names:
            if not any(n["Resources"].get(name, 0) > 0 for n in nodes):
                raise ConfigError(f"{source}: {key}: no node of the Ray cluster offers resource {name!r} "
                                  f"(start one with `ray start --resources '{{\"{name}\": N}}'`)")
    if len(nodes) < 2:
        return
    t, where = cfg.tracking, f"the Ray cluster has {len(nodes)} nodes"
    if not is_server(t.uri):
        raise ConfigError(
            f"{source}: tracking.uri: {t.uri} is a store on this machine and {where}: run `selfsup server` "
            "(PostgreSQL, proxied artifacts) and set tracking.uri: http://HOST:PORT"
        )
    if t.artifact_location and storage.is_local(t.artifact_location):
        raise ConfigError(
            f"{source}: tracking.artifact_location: {t.artifact_location} is a folder on this node and {where}: "
            "remove it (the tracking server proxies artifacts as mlflow-artifacts:/) or use s3://BUCKET/PREFIX"
        )
    if storage.is_local(cfg.train.storage_path):
        try:
            blind = nodes_not_seeing(cfg.train.storage_path, nodes)
        except OSError as exc:
            raise ConfigError(f"{source}: train.storage_path: {cfg.train.storage_path}: cannot write there ({exc.strerror})") from None
        if blind:
            raise ConfigError(
                f"{source}: train.storage_path: {cfg.train.storage_path} is not visible from node {blind[0]} "
                f"({len(blind)} of {len(nodes)} nodes): use s3://BUCKET/PREFIX or a filesystem mounted at the same path on every node"
            )


def check_job_paths(cfg: ExperimentConfig, source: str, nodes: list[dict]) -> None:
    """In a job submitted with ``--working-dir``: refuse ``nodes`` of one machine that share a
    session folder (:func:`shared_sessions`), and local paths inside the job's working directory
    (Ray deletes that copy)."""
    if not job_runtime_env().get("working_dir"):
        return
    shared = shared_sessions(nodes)
    if shared:
        folder, ids = next(iter(shared.items()))
        raise ConfigError(
            f"{source}: Ray nodes {', '.join(ids)} run on one machine in one session folder ({folder}): each node unpacks the "
            "job's --working-dir there anew, deleting the copy this job runs in, so it would fail at its end: "
            "start each node of that machine with its own `ray start --temp-dir DIR` (cluster/README.md)"
        )
    here = os.getcwd().rstrip("/") + "/"
    t = cfg.tracking
    paths = {
        "train.storage_path": cfg.train.storage_path,
        "tracking.uri": t.uri.removeprefix("sqlite:///") if t.uri.startswith("sqlite:///") else "",
        "tracking.artifact_location": t.artifact_location or "",
    }
    for key, path in paths.items():
        if storage.is_local(path) and storage.local_path(path).startswith(here):
            raise ConfigError(
                f"{source}: {key}: {path} is inside the job's working directory, which Ray deletes after the job: "
                "use s3://BUCKET/PREFIX, an absolute path on shared storage, or (tracking) an MLflow server"
            )


def shared_sessions(nodes: list[dict]) -> dict[str, list[str]]:
    """The session folders that several of ``nodes`` (``ray.nodes()`` rows) on one host share,
    each with those nodes' short ids.

    Nodes started on one machine without their own ``--temp-dir`` join the head's session folder,
    and with it one ``runtime_resources/working_dir_files``. Ray's runtime-env agent of each node
    unpacks a job's ``--working-dir`` with ``overwrite=True`` the first time that node needs it
    (``ray/_private/runtime_env/working_dir.py``, ``WorkingDirPlugin.create``): it deletes the
    folder the job's driver, started by another node's agent, has as its working directory, and
    unpacks a new one at the same path. The driver notices only when it next asks for its working
    directory: a sweep ran all its trials, then Tune's final ``ExperimentAnalysis``
    (``os.path.relpath``) raised ``FileNotFoundError``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for n in nodes:
        folder = str(Path(n["RayletSocketName"]).parent.parent)
        groups.setdefault((n["NodeManagerHostname"], folder), []).append(n["NodeID"][:8])
    return {folder: ids for (_, folder), ids in groups.items() if len(ids) > 1}


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    return os.path.exists(path)


def nodes_not_seeing(folder: str, nodes: list[dict], timeout: float = 120.0) -> list[str]:
    """Addresses of the ``nodes`` on which a file this process writes at ``folder`` (or, if it
    does not exist yet, its nearest existing parent) does not exist: a folder local to this
    machine, or a shared mount missing on some node. Creates nothing that outlives the check."""
    path = Path(storage.local_path(folder))
    base = next(p for p in (path, *path.parents) if p.is_dir())
    probe = base / f".selfsup-visible-{uuid.uuid4().hex}"
    probe.touch()
    try:
        checks = [
            _sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe)) for n in nodes
        ]
        seen = ray.get(checks, timeout=timeout)
    finally:
        probe.unlink()
    return [f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})" for n, ok in zip(nodes, seen) if not ok]
