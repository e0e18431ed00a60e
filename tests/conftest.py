"""Shared fixtures. Every file a test writes lives under a temporary directory: Ray's temp dir
(short, under /tmp, for its socket paths), Ray storage, the MLflow sqlite store and artifacts."""

import atexit
import ctypes
import gc
import os
import shutil
import tempfile

import pytest

# Nothing written into the home directory: no Ray token file (a local test cluster on
# loopback) and no MLflow telemetry state.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # as selfsup's init_ray sets it
# Train controllers poll their workers every 0.5 s, as on a local Ray that selfsup starts (init_ray), on
# the tests' shared Ray and nodes too: each run starts and ends up to 1.5 s sooner, some hundred times.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Inductor's generated kernels (tests/unit/test_compile.py, compiled runs' workers) in a folder of this
# process's own, not the machine's /tmp/torchinductor_<user>, which outlives the suite and, warm,
# makes a second run's compile tests a minute faster than CI's first.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)


LIBC = ctypes.CDLL(None)
GIVE_BACK_MB = 256


def resident_mb() -> int:
    """This process's resident memory, MB (Linux's ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    except OSError:
        return 0


@pytest.fixture(autouse=True)
def give_back_memory():
    """After a test whose process grew by more than :data:`GIVE_BACK_MB` (the cluster configs'
    preflights build ViT-L and ViT-H, 4 GB each), collect its cycles and hand glibc's freed heap back
    to the machine (``malloc_trim``): freed, it stayed resident in the stream's worker, which then
    held 11 GB while the cluster tests' nodes ran the 24 GiB machine short (Ray's memory monitor
    killed a trial)."""
    before = resident_mb()
    yield
    if resident_mb() - before > GIVE_BACK_MB and hasattr(LIBC, "malloc_trim"):
        gc.collect()
        LIBC.malloc_trim(0)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run from a temporary directory, so that default relative paths land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def small_config(workdir):
    """``small_config(**{"dotted.key": value})``: a small digits experiment stored under the test's
    temporary directory."""
    return lambda **sets: experiment(workdir, sets)


def experiment(tmp_path, sets):
    """A small digits config whose storage and MLflow store live under ``tmp_path``."""
    from selfsup.config import ExperimentConfig, apply_overrides

    tree = {
        "name": "t",
        "data": {"views": "light"},
        "model": {"backbone": "cnn", "embed_dim": 64, "width": 16, "depth": 2},
        "method": {"name": "vicreg", "projector": [256, 256]},
        "optim": {"lr": 3e-3},
        "train": {"epochs": 4, "batch_size": 128, "storage_path": str(tmp_path / "runs")},
        "eval": {"subset_size": 256, "probe_every": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "artifacts")},
    }
    return ExperimentConfig.model_validate(apply_overrides(tree, sets))


STREAMS = {
    "tests/unit/": "a",
    "tests/integration/test_input_pipeline.py": "a",
    "tests/integration/test_package.py": "a",
    "tests/integration/test_two_commands.py": "a",
    "tests/cluster/": "a",
    "tests/integration/": "b",
}
"""The suite's two streams on two pytest-xdist workers (``-n 2``, pyproject.toml), each in
collection order, sharing nothing but the machine (the first prefix that matches wins). Stream
``a``: the unit tests (mostly one busy core), then the integration tests that need neither the shared
sweep nor the local Ray of stream ``b`` (the input benchmark's CPU smoke run, the wheel install, two
commands at once), then the cluster tests on their own nodes. Stream ``b``: the other integration
tests, on one local Ray, and the GPU benchmark's CPU smoke run. The
two take about as long (the machine's two cores are busy throughout, so the suite's time is the
CPU work its tests do: processes started, runs and trials launched); the sweep fault harness (stream ``b``) ends before the
cluster tests start, which together once ran this 24 GiB machine out of memory."""


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling with :data:`STREAMS` as the scopes: each stream goes whole, in
    order, to one worker. (Its ``loadgroup`` marks do the same through the tests' ids, which
    pytest 9 no longer lets a plugin rewrite.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Streams(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((g for prefix, g in STREAMS.items() if nodeid.startswith(prefix)), "a")

    return Streams(config, log)
