"""Real services for the cluster tests, each a context manager that starts it on loopback ports in a
temporary directory and stops it (and every process it started) on the way out, even on failure:

- :func:`postgres`: PostgreSQL from its server binaries (``initdb`` + ``pg_ctl``, run as the
  ``postgres`` user when we are root), one database; yields its ``postgresql://`` URL.
- :func:`s3_server`: moto's standalone S3-compatible server; yields its endpoint URL.
- :func:`tracking_server`: ``selfsup server`` (MLflow on PostgreSQL, proxied artifacts); yields its URL.
- :func:`ray_nodes`: a Ray cluster of real nodes started with the ``ray`` CLI (``ray start --head``,
  then ``ray start --address``), each with its own ports and temp dir; yields a :class:`RayNodes`.

And :func:`readme_sweep`, the README's main sweep laid out as a job's working directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
README_SWEEP = ROOT / "examples" / "mnist1d_vicreg_sweep.yaml"
"""The README's main sweep (``make sweep``): 8 VICReg trials on MNIST-1D, ASHA, 8 epochs."""
PG_BINARIES = ("initdb", "pg_ctl", "postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 60.0, every: float = 0.25):
    """Call ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:  # the service is not up yet
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(every)


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and all its descendants (SIGTERM, then SIGKILL what is left after 5 s)."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def pg_binaries() -> dict[str, str]:
    """Paths of PostgreSQL's server binaries (on PATH or in Debian's versioned folder)."""
    found = {}
    for name in PG_BINARIES:
        where = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None)
        if where is None:
            raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install -y postgresql)")
        found[name] = str(where)
    return found


@contextlib.contextmanager
def postgres(database: str = "mlflow"):
    """A PostgreSQL server on a free loopback port with an empty ``database``; yields its URL."""
    bins = pg_binaries()
    root = tempfile.mkdtemp(prefix="pg", dir="/tmp")
    data, port = Path(root) / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(bins["initdb"], "-D", str(data), "-U", "selfsup", "--auth=trust", "-E", "UTF8")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
        run(bins["pg_ctl"], "-D", str(data), "-l", f"{root}/log", "-o", opts, "-w", "start")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="selfsup", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        yield f"postgresql://selfsup@127.0.0.1:{port}/{database}"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            if (data / "postmaster.pid").exists():
                run(bins["pg_ctl"], "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def pg_rows(url: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(*buckets: str):
    """moto's S3-compatible server on a free loopback port with ``buckets`` made; yields the
    endpoint URL (use it as ``AWS_ENDPOINT_URL`` with :data:`S3_ENV`)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="moto", suffix=".log", delete=False)
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{url}/moto-api/"), "moto S3 server")
        s3 = s3_client(url)
        for b in buckets:
            s3.create_bucket(Bucket=b)
        yield url
    finally:
        kill_tree(proc.pid)
        os.unlink(log.name)


def s3_client(endpoint: str):
    """A boto3 S3 client of the test server, with :data:`S3_ENV`'s keys."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"], region_name=S3_ENV["AWS_REGION"],
    )


def s3_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    s3 = s3_client(endpoint)
    keys, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


@contextlib.contextmanager
def tracking_server(backend: str, artifacts: str, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()):
    """``selfsup server`` on a free loopback port over ``backend`` with proxied ``artifacts``."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="mlflow", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [str(BIN / "selfsup"), "server", "--backend-store-uri", backend, "--artifacts", artifacts, "--port", str(port), "--workers", "2", *extra],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(lambda: proc.poll() is None and http_ok(f"{url}/health"), "MLflow server", timeout=120)
        except TimeoutError:
            raise RuntimeError(f"selfsup server did not start:\n{Path(log.name).read_text()[-3000:]}") from None
        yield url
    finally:
        kill_tree(proc.pid)
        os.unlink(log.name)


@dataclass
class RayNodes:
    """A running cluster: the GCS ``address``, the Jobs API ``dashboard`` URL and, per node, the
    ``ray start --block`` process and its temp dir (``nodes[0]`` is the head)."""

    address: str
    dashboard: str
    env: dict[str, str]
    nodes: list[subprocess.Popen] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)

    def raylet(self, index: int) -> psutil.Process:
        """The raylet process of node ``index``."""
        return next(p for p in psutil.Process(self.nodes[index].pid).children(recursive=True) if p.name() == "raylet")

    def lose(self, index: int) -> None:
        """Node ``index`` disappears as a machine would: its raylet is killed, then every other
        process of the node (workers, agents) in the same instant."""
        root = psutil.Process(self.nodes[index].pid)
        procs = [self.raylet(index), root, *root.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=10)

    def node_id(self, index: int) -> str:
        """Node ``index``'s Ray node id (its raylet's ``--node_id``)."""
        return next(a.split("=", 1)[1] for a in self.raylet(index).cmdline() if a.startswith("--node_id="))


def node_ports() -> list[str]:
    worker = free_port()
    return [
        "--node-manager-port", str(free_port()),
        "--object-manager-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--min-worker-port", str(worker), "--max-worker-port", str(worker + 40),
    ]


RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    # A lost node is declared dead after ~3 s instead of ~30 s.
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


@contextlib.contextmanager
def ray_nodes(count: int = 3, cpus: int = 1, env: dict[str, str] | None = None):
    """``count`` Ray nodes on this machine started with the ``ray`` CLI, ``cpus`` CPUs each."""
    # Nothing that points at another Ray of this machine (a local one's address or state API).
    mine = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env = {**mine, **RAY_ENV, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **(env or {})}
    cluster = RayNodes("", "", env)
    try:
        for i in range(count):
            start_node(cluster, i, cpus)
        wait_nodes(cluster, count, f"{count} Ray nodes")
        yield cluster
    finally:
        for proc in reversed(cluster.nodes):
            kill_tree(proc.pid)
        for temp in cluster.temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)


def start_node(cluster: RayNodes, i: int, cpus: int, tries: int = 2, shared_temp: str | None = None, resources: dict | None = None) -> None:
    """Start node ``i`` (0: the head) with fresh ports and a temp dir of its own (or
    ``shared_temp``, one another node has: the two then share a session folder) and custom
    ``resources``; once more on new ports if it exits before its raylet is up (a port taken
    meanwhile by another process)."""
    for attempt in range(tries):
        temp = shared_temp or tempfile.mkdtemp(prefix=f"rn{i}", dir="/tmp")
        if not shared_temp:
            cluster.temp_dirs.append(temp)
        if i == 0:
            port, dash = free_port(), free_port()
            cluster.address, cluster.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
            # Ray Train's placement-group cleaner asks the state API whether a run's controller
            # lives; unpinned, the API finds this machine's newest Ray, which may be another one.
            cluster.env["RAY_API_SERVER_ADDRESS"] = cluster.dashboard
            args = ["--head", "--port", str(port), "--dashboard-port", str(dash), "--include-dashboard", "true",
                    "--ray-client-server-port", str(free_port())]
        else:
            args = ["--address", cluster.address]
        cmd = [str(BIN / "ray"), "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--temp-dir", temp,
               *node_ports(), "--block", "--disable-usage-stats", *(["--resources", json.dumps(resources)] if resources else [])]
        log = Path(temp) / "ray-start.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=cluster.env, start_new_session=True)
        cluster.nodes.append(proc)
        try:
            wait_for(lambda: cluster.raylet(i) if proc.poll() is None else "exited", f"ray node {i}", timeout=120)
            if proc.poll() is None and (i > 0 or wait_for(lambda: http_ok(f"{cluster.dashboard}/api/version"), "Ray dashboard", timeout=120)):
                return
        except TimeoutError:
            pass
        kill_tree(proc.pid)
        cluster.nodes.pop()
        if attempt == tries - 1:
            raise RuntimeError(f"ray node {i} did not start: {' '.join(cmd)}\n{log.read_text()[-3000:]}")


def alive_nodes(cluster: RayNodes) -> int:
    import json

    with urllib.request.urlopen(f"{cluster.dashboard}/nodes?view=summary", timeout=5) as r:
        summary = json.load(r)["data"]["summary"]
    return sum(1 for n in summary if n["raylet"]["state"] == "ALIVE")


def wait_nodes(cluster: RayNodes, count: int, what: str, timeout: float = 180) -> None:
    """Wait until the cluster's dashboard counts ``count`` alive nodes (a node's raylet is up when
    :func:`start_node` returns, but registers with the head later, a minute or more on a busy
    2-core machine); the timeout names the last count seen."""
    seen = []

    def check():
        seen.append(alive_nodes(cluster))
        return seen[-1] == count

    try:
        wait_for(check, what, timeout=timeout)
    except TimeoutError:
        raise TimeoutError(f"{what}: {count} alive Ray nodes wanted, {seen[-1] if seen else 'none'} seen after {timeout:.0f} s") from None


def live_placement_groups(cluster: RayNodes) -> set[str]:
    """The ids of the placement groups the cluster holds (not yet removed): a finished driver's
    groups are removed a moment after it exits, and until then hold their nodes' resources."""
    import json

    with urllib.request.urlopen(f"{cluster.dashboard}/api/v0/placement_groups?limit=1000", timeout=10) as r:
        groups = json.load(r)["data"]["result"]["result"]
    return {g["placement_group_id"] for g in groups if g["state"] != "REMOVED"}


def readme_sweep(work: Path, sweep: Path = README_SWEEP, trials: int | None = None, **overrides) -> Path:
    """``work/examples/<sweep>``: a sweep of the repository's ``examples/`` (the README's main sweep
    unless named) with ``trials`` (unless None) and ``overrides`` (dotted config keys) added, beside
    copies of the repository's examples and search spaces, so that its relative paths resolve as in
    the repository: ``work`` is what ``ray job submit --working-dir .`` sends from the repository."""
    shutil.copytree(ROOT / "examples", work / "examples", dirs_exist_ok=True)
    shutil.copytree((ROOT / "search_spaces").resolve(), work / "search_spaces", dirs_exist_ok=True)
    tree = yaml.safe_load(sweep.read_text())
    if trials is not None:
        tree["num_samples"] = trials
    tree["overrides"] = {**(tree.get("overrides") or {}), **overrides}
    path = work / "examples" / sweep.name
    path.write_text(yaml.safe_dump(tree))
    return path
