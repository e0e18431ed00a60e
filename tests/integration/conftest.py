"""The integration tests' local Ray (one per test stream that runs them, tests/conftest.py STREAMS),
started by the first test that needs it and stopped after the last of this folder, so that it
neither idles beside the unit tests nor stays up (with ``RAY_API_SERVER_ADDRESS`` naming it in this
process's environment) under the cluster tests' own nodes, whose jobs would then be sent to it."""

import contextlib
import os
import shutil
import tempfile

import psutil
import pytest


@pytest.fixture(scope="package")
def ray_cluster():
    """One local Ray for the integration tests, stopped after the last of them (not idling beside
    the cluster tests' own nodes)."""
    import ray

    from selfsup.train.cluster import free_port

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = free_port()
    # its processes ask its own dashboard, not another local Ray's (see selfsup.train.cluster.init_ray)
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=2, _temp_dir=temp, include_dashboard=True, dashboard_port=port, log_to_driver=True)
    raylets = {p.pid for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "raylet" and temp in " ".join(p.info["cmdline"] or [])}
    yield ray
    ray.shutdown()
    stop_orphans(raylets)
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)
    shutil.rmtree(temp, ignore_errors=True)


def stop_orphans(raylets: set[int]) -> None:
    """Kill what outlived its Ray: worker processes (``ray::TrainController`` and the like) of the
    raylets ``raylets`` that ``ray.shutdown()`` left behind, reparented to init (seen once after a
    whole suite)."""
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if int(proc.environ().get("RAY_RAYLET_PID", 0)) in raylets:
                proc.kill()


@pytest.fixture(scope="package")
def finished_sweep(ray_cluster, tmp_path_factory):
    """One sweep (3 trials of 2 epochs, the ``tiny`` sweep of ``test_sweep.write_sweep``) run as a
    user runs it, ``selfsup sweep`` in its own process on the session's Ray, shared by the tests
    that read a finished sweep (its records, report, UI and browser) and what it left behind:
    ``(folder, sweep YAML, the console's lines, leftovers)``, the leftovers being the Ray actors and
    placement groups it made that are still there 5 s after it exited (Ray reaps a driver's actors
    once it has gone) and the processes it started that still run."""
    import importlib.util
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.integration.test_sweep import write_sweep

    spec = importlib.util.spec_from_file_location("sweep_faults", Path(__file__).resolve().parents[2] / "benchmarks" / "sweep_faults.py")
    harness = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(harness)  # the fault harness's own count of what a sweep left behind

    folder = tmp_path_factory.mktemp("sweep")
    path = write_sweep(folder, "tiny", num_samples=3, epochs=2)
    console = tmp_path_factory.mktemp("console") / "sweep.txt"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    actors, groups = harness.ray_state(detached=False)
    with open(console, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "selfsup.cli", "sweep", str(path)], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    started, deadline = set(), time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        with contextlib.suppress(psutil.Error):
            started |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    text = console.read_text()
    assert proc.wait() == 0, text[-6000:]
    time.sleep(5)
    actors_after, groups_after = harness.ray_state(detached=False)
    left = {"actors": sorted(actors_after - actors), "placement groups": sorted(groups_after - groups), "processes": harness.running(started)}
    return folder, path, text.splitlines(), left


@pytest.fixture(scope="package")
def sweep_ui(finished_sweep):
    """``selfsup ui`` over the finished sweep's store, started once for the tests that browse it:
    its base URL."""
    from tests.integration.test_ui import ui

    folder = finished_sweep[0]
    with ui(folder, f"sqlite:///{folder}/mlflow.db", folder / "artifacts") as base:
        yield base
