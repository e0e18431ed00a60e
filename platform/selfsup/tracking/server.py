"""``selfsup ui``: an MLflow tracking server on 127.0.0.1 over the project's store."""

from __future__ import annotations

import os
import shutil
import sys


def server_command(uri: str, artifact_location: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow server`` command line for this store."""
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    return [
        mlflow, "server",
        "--backend-store-uri", uri,
        "--default-artifact-root", artifact_location,
        "--host", host,
        "--port", str(port),
    ]


def serve(uri: str, artifact_location: str, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Replace this process with the MLflow server (Ctrl-C stops it)."""
    cmd = server_command(uri, artifact_location, host, port)
    print(f"MLflow UI: http://{host}:{port}  (store {uri})", flush=True)
    os.execv(cmd[0], cmd)
