"""Fixtures of the cluster tests: one PostgreSQL, one S3-compatible server, one `selfsup server`
(MLflow on that PostgreSQL, artifacts proxied into a bucket) and one Ray cluster of three nodes
started with the `ray` CLI, shared by the tests of this folder and stopped at its end."""

import os

import pytest

from tests.cluster import services

ARTIFACTS, RUNS = "mlflow-artifacts", "selfsup-runs"


@pytest.fixture(scope="package")
def s3():
    """``(endpoint, env)``: the S3 server and the AWS variables that reach it."""
    with services.s3_server(ARTIFACTS, RUNS) as endpoint:
        yield endpoint, {**services.S3_ENV, "AWS_ENDPOINT_URL": endpoint}


@pytest.fixture(scope="package")
def pg():
    with services.postgres() as url:
        yield url


@pytest.fixture(scope="package")
def server(pg, s3):
    """The tracking server's URL."""
    with services.tracking_server(pg, f"s3://{ARTIFACTS}/mlflow", env=s3[1]) as url:
        yield url


@pytest.fixture(scope="package")
def nodes(s3):
    """Three Ray nodes, one CPU each, whose workers reach the S3 server."""
    with services.ray_nodes(3, cpus=1, env=s3[1]) as cluster:
        yield cluster


@pytest.fixture
def client_env(nodes, s3, monkeypatch):
    """This process as a client of the cluster: ``RAY_ADDRESS`` and the S3 variables."""
    for k, v in {**s3[1], "RAY_ADDRESS": nodes.address}.items():
        monkeypatch.setenv(k, v)
    return {**os.environ}
