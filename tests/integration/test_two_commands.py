"""Two selfsup commands on one machine at once, as people run them on a workstation: two sweeps
from two folders, each on a local Ray of its own, and a third command that fails at once. Both
sweeps finish; neither stalls the other (Ray Train's placement-group cleaner used to ask the state
API of the newest local Ray whether a run's controller was alive, and removed a live run's
placement group when it was the other sweep's Ray), nor joins the dead cluster that this machine's
last `ray start` left on record (Ray's default for an address-less ``ray.init``: the sweeps then
waited on its GCS for ever)."""

import os
import shutil
import subprocess
import sys
import tempfile

import yaml

from selfsup.config import SweepConfig
from selfsup.train.cluster import free_port
from tests.cluster.services import kill_tree


def sweep_folder(folder, name: str):
    folder.mkdir()
    (folder / "base.yaml").write_text(yaml.safe_dump({
        "name": name, "data": {"views": "light"}, "model": {"backbone": "cnn", "embed_dim": 16, "width": 8, "depth": 2},
        "method": {"name": "vicreg", "projector": [32, 32]}, "train": {"epochs": 1, "batch_size": 128},
        "eval": {"subset_size": 128, "lidar_samples": 32, "lidar_views": 4, "probe_every": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
    }))
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "name": name, "base": "base.yaml", "num_samples": 1, "max_concurrent_trials": 1, "scheduler": {"type": "none"}, "registry": False,
    }))


def test_two_sweeps_and_a_failing_command_at_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    # Ray's temp folder (where `ray start` records its cluster) of this test alone, recording a dead
    # cluster; short, for Ray's socket paths
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.makedirs(f"{ray_tmp}/ray")
    with open(f"{ray_tmp}/ray/ray_current_cluster", "w") as f:
        f.write(f"127.0.0.1:{free_port()}")
    env["RAY_TMPDIR"] = ray_tmp
    procs = []
    try:
        for name in ("first", "second"):
            sweep_folder(tmp_path / name, name)
            procs.append(subprocess.Popen([sys.executable, "-m", "selfsup.cli", "sweep", "sweep.yaml"], cwd=tmp_path / name, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        (tmp_path / "third").mkdir()
        (tmp_path / "third" / "run.yaml").write_text("name: t\ntrain: {storage_path: 's3://nobucket/x'}\n")
        third = subprocess.run([sys.executable, "-m", "selfsup.cli", "train", "run.yaml"], cwd=tmp_path / "third", capture_output=True, text=True,
                               timeout=300, env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
        assert third.returncode == 2 and "train.storage_path: s3://nobucket/x: cannot reach it" in third.stderr, third.stderr
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            kill_tree(p.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
        assert "1/1 trials ended" in out and f"{SweepConfig.model_fields['metric'].default} picks trial" in out, out[-4000:]
