"""Run by test_multinode.py in its own process: a 2-worker `selfsup train` on a Ray cluster of two
nodes (ray.cluster_utils, one CPU each, so the workers must land on different nodes)."""

import os
import shutil
import sys
import tempfile

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_actors  # noqa: E402

from selfsup.config import ExperimentConfig  # noqa: E402
from selfsup.train.launch import train  # noqa: E402


def main(work: str) -> None:
    temp = tempfile.mkdtemp(prefix="raymn", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": temp})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address)
        cfg = ExperimentConfig.model_validate({
            "name": "two-nodes",
            "model": {"embed_dim": 32, "width": 8, "depth": 2},
            "method": {"name": "simclr", "projector": [64, 32]},
            "train": {"epochs": 2, "batch_size": 128, "storage_path": f"{work}/runs"},
            "eval": {"subset_size": 256},
            "scaling": {"num_workers": 2, "cpus_per_worker": 1},
            "tracking": {"uri": f"sqlite:///{work}/mlflow.db", "artifact_location": f"{work}/artifacts"},
        })
        metrics = train(cfg)
        nodes = {a.node_id for a in list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True)}
        print(f"RESULT nodes={len(nodes)} epoch={metrics['epoch']} probe={metrics['probe/linear_acc']:.3f}", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
