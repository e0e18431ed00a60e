"""The integration tests' one local Ray, started by the first test that needs it and stopped after
the last of this folder, so that it neither idles beside the unit tests nor stays up (with
``RAY_API_SERVER_ADDRESS`` naming it in this process's environment) under the cluster tests'
own nodes, whose jobs would then be sent to it."""

import os
import shutil
import tempfile

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
    yield ray
    ray.shutdown()
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)
    shutil.rmtree(temp, ignore_errors=True)
