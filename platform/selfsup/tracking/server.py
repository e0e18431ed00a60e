"""MLflow tracking servers: ``selfsup ui`` (a viewer on 127.0.0.1 over the project's local store)
and ``selfsup server`` (the team's server that every node of a cluster logs to).

``selfsup server`` runs ``mlflow server`` the way a team runs it: the backend store on a database
(``postgresql://...``; sqlite only for one machine), artifacts *proxied* by the server
(``--serve-artifacts``: runs get ``mlflow-artifacts:/`` URIs and every client uploads and downloads
over HTTP) into ``--artifacts`` (a shared folder or ``s3://bucket/prefix``, the endpoint from the
standard ``AWS_*`` variables), bound to 127.0.0.1 unless ``--host`` says otherwise, and with
``--auth`` MLflow's basic auth (admin from ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``,
the variables the clients use too, handed to MLflow in its environment; users and permissions in a
database of their own).
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from selfsup import storage
from selfsup.config import ConfigError
from selfsup.errors import first_line
from selfsup.tracking.runs import sqlite_file

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def runs_view(experiment_id: str | None = None) -> str:
    """The UI path of the experiments list, or of one experiment's runs table. MLflow 3's UI shows
    its GenAI pages (traces, evaluation runs) unless a link asks for its model-training view or the
    user picks 'Model training' (top left) once; selfsup's links ask for it."""
    return f"#/experiments{'/' + experiment_id if experiment_id else ''}?workflowType=machine_learning"


STORES = ("postgresql", "mysql", "mssql", "sqlite")
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""What the ``mlflow server`` that ``selfsup ui`` and ``selfsup server`` start gets unless the
environment sets it: no job runner. MLflow 3 starts one by default for its GenAI jobs (evaluation,
trace roll-ups), which selfsup never submits: eight more processes, about 2 GiB of memory, per
server."""


def mlflow_executable() -> str:
    return shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")


def server_command(
    uri: str,
    artifacts: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    proxied: bool = False,
    auth: bool = False,
    allowed_hosts: str | None = None,
    workers: int | None = None,
) -> list[str]:
    """The ``mlflow server`` command line: artifacts at ``artifacts`` as the runs' root, or with
    ``proxied`` served by the server itself from that destination."""
    where = ["--serve-artifacts", "--artifacts-destination", artifacts] if proxied else ["--default-artifact-root", artifacts]
    return [
        mlflow_executable(), "server",
        "--backend-store-uri", uri,
        *where,
        "--host", host,
        "--port", str(port),
        *(["--app-name", "basic-auth"] if auth else []),
        *(["--allowed-hosts", allowed_hosts] if allowed_hosts else []),
        *(["--workers", str(workers)] if workers else []),
    ]


def serve(uri: str, artifact_location: str, host: str = "127.0.0.1", port: int = 5000) -> None:
    """``selfsup ui``: replace this process with an MLflow server over the local store (warned
    about when ``host`` is not a loopback address, as ``selfsup server`` does)."""
    cmd = server_command(uri, artifact_location, host, port)
    for key, value in SERVER_ENV.items():
        os.environ.setdefault(key, value)
    warning = exposure_warning(host, port, False)
    if warning:
        print(f"[selfsup] warning: {warning}", file=sys.stderr, flush=True)
    print(f"MLflow UI: http://{host}:{port}/{runs_view()}  (store {uri})", flush=True)
    os.execv(cmd[0], cmd)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_store(uri: str) -> None:
    """A database MLflow can use as its backend store, checked before the server starts: a
    database URL whose driver is installed, and a server that answers (a sqlite file's folder must
    exist; the file is not created here). Else a one-line :class:`ConfigError` naming the store."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme not in STORES:
        raise ConfigError(f"--backend-store-uri: {uri!r} is not a database URL (postgresql://USER@HOST:PORT/DB, or sqlite:///FILE for one machine)")
    where = f"--backend-store-uri: {redact(uri)}"
    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except Exception as exc:  # SQLAlchemy's NoSuchModuleError and ArgumentError, a driver's ImportError
        raise ConfigError(f"{where}: its database driver is not available ({type(exc).__name__}: {first_line(exc)})") from None
    if scheme == "sqlite":
        folder = sqlite_file(uri).parent
        if not folder.is_dir():
            raise ConfigError(f"{where}: the folder {folder} does not exist")
        return
    try:
        with create_engine(url, connect_args={"connect_timeout": 10} if scheme in ("postgresql", "mysql") else {}).connect():
            pass
    except Exception as exc:  # the driver's own OperationalError and friends
        raise ConfigError(f"{where}: cannot connect ({first_line(exc)})") from None


def artifact_destination(artifacts: str) -> str:
    """``s3://...`` (or another object-store URI) as it is; a folder made absolute and created."""
    if storage.is_uri(artifacts):
        if artifacts.startswith("s3://") and not urlsplit(artifacts).netloc:
            raise ConfigError(f"--artifacts: {artifacts!r} names no bucket (s3://BUCKET/PREFIX)")
        return artifacts
    folder = Path(artifacts).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def auth_database(uri: str) -> str:
    """Where basic auth keeps users and permissions: a database beside the backend store's
    (``<db>_auth`` on the same server, created if missing; ``<file>_auth.db`` beside a sqlite file)."""
    parts = urlsplit(uri)
    if parts.scheme.startswith("sqlite"):
        path = sqlite_file(uri)
        return f"sqlite:///{path.with_name(path.stem + '_auth.db')}"
    name = parts.path.lstrip("/") + "_auth"
    if parts.scheme.split("+")[0] == "postgresql":
        import psycopg
        from psycopg import sql

        with psycopg.connect(urlunsplit(parts._replace(scheme="postgresql")), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(parts._replace(path="/" + name))


def admin_env() -> dict[str, str]:
    """The admin of basic auth, from the clients' variables, as MLflow's own
    ``MLFLOW_AUTH_ADMIN_USERNAME``/``MLFLOW_AUTH_ADMIN_PASSWORD`` (never written to a file)."""
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not password:
        raise ConfigError("--auth: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the admin; clients use the same variables)")
    return {"MLFLOW_AUTH_ADMIN_USERNAME": os.environ.get("MLFLOW_TRACKING_USERNAME", "admin"), "MLFLOW_AUTH_ADMIN_PASSWORD": password}


def auth_config(uri: str, folder: str) -> str:
    """Write MLflow's basic-auth config for this store into ``folder`` (configparser: values are
    escaped, a newline cannot add keys); returns its path. It holds the auth database's URL, with
    the database password if the store's URL has one: readable by its owner only."""
    parser = configparser.ConfigParser(interpolation=None)
    parser["mlflow"] = {
        "default_permission": "READ",
        "database_uri": auth_database(uri).replace("%", "%%"),  # MLflow reads it with interpolation
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    path = Path(folder) / "basic_auth.ini"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        parser.write(f)
    return str(path)


def run_until_stopped(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` until it exits, passing on Ctrl-C, SIGTERM and SIGHUP; its exit code."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
    return proc.wait()


def serve_team(
    uri: str, artifacts: str, host: str = "127.0.0.1", port: int = 5000, auth: bool = False, allowed_hosts: str | None = None, workers: int = 4
) -> int:
    """``selfsup server``: run the team's MLflow server until it stops (Ctrl-C); its exit code.
    With ``auth``, the admin reaches MLflow through its environment and the auth config lives in
    a private temporary folder removed when the server stops (its workers read it when they start)."""
    check_store(uri)
    env = {**SERVER_ENV, **os.environ}
    with tempfile.TemporaryDirectory(prefix="selfsup-server-") as private:
        if auth:
            env.update(admin_env())
            env["MLFLOW_AUTH_CONFIG_PATH"] = auth_config(uri, private)
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))  # CSRF; one for all server processes
        destination = artifact_destination(artifacts)
        warning = exposure_warning(host, port, auth)
        if warning:
            print(f"[selfsup] warning: {warning}", file=sys.stderr, flush=True)
        cmd = server_command(uri, destination, host, port, proxied=True, auth=auth, allowed_hosts=allowed_hosts, workers=workers)
        print(f"MLflow server: http://{host}:{port}  (store {redact(uri)}, artifacts {destination}, served as mlflow-artifacts:/)", flush=True)
        return run_until_stopped(cmd, env)


def exposure_warning(host: str, port: int, auth: bool) -> str | None:
    """What binding ``host`` exposes, or ``None`` for a loopback address."""
    if is_loopback(host):
        return None
    who = "with a user and password " if auth else ""
    fix = "" if auth else " (add --auth for MLflow basic auth)"
    return f"serving on {host}: anyone who can reach port {port} {who}can read and write every run{fix}"


def redact(uri: str) -> str:
    """``uri`` without its password."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
