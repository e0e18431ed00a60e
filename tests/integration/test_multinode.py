"""Multi-node on one machine: two Ray nodes (ray.cluster_utils), one Train worker on each."""

import re
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient


def test_two_node_run(workdir):
    script = Path(__file__).with_name("two_node_train.py")
    out = subprocess.run([sys.executable, str(script), str(workdir)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    nodes, epoch, probe = re.search(r"RESULT nodes=(\d+) epoch=(\d+) probe=([\d.]+)", out.stdout).groups()
    assert (int(nodes), int(epoch)) == (2, 2) and float(probe) > 0.5
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("two-nodes").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["scaling.num_workers"] == "2"
