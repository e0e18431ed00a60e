"""A tracking store that cannot be reached is waited out for ``tracking.patience_s``, then the call
fails in one line naming the store; an error the store answers with is raised at once."""

import socket
import time

import pytest
from mlflow.exceptions import MlflowException

from selfsup.tracking import runs


@pytest.fixture
def patience():
    yield runs.set_patience
    runs.set_patience(300.0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_retried_then_named_in_one_line(patience, capsys):
    patience(3)
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(runs.TrackingUnreachable) as exc:
        runs.get_run(uri, "0" * 32)
    message = str(exc.value)
    assert time.monotonic() - t0 >= 3
    assert message.startswith(f"MLflow tracking store {uri}: unreachable for ") and "(get_run: API request" in message
    assert "\n" not in message and "checkpoints are kept" in message
    assert "WARNING: MLflow tracking store" in capsys.readouterr().out  # said once, when the wait began


def test_an_answered_error_is_not_waited_out(patience, tmp_path):
    patience(60)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    t0 = time.monotonic()
    with pytest.raises(MlflowException, match="not found"):
        runs.get_run(uri, "0" * 32)
    assert time.monotonic() - t0 < 30


def test_a_keyed_create_that_is_retried_finds_its_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = runs.experiment_id(uri, "e", str(tmp_path / "a"))
    key = {runs.TRIAL_ID: "t1", runs.PARENT: "p"}
    first = runs.start_run(uri, exp, "r", {**key, "x": "1"}, key=key)
    assert runs.start_run(uri, exp, "r", {**key, "x": "1"}, key=key) == first
    assert len(runs.client(uri).search_runs([exp])) == 1


@pytest.mark.parametrize("text, expected", [
    ("API request to http://h/api failed with exception HTTPConnectionPool(...): Max retries exceeded", True),
    ("API request to endpoint /api/2.0/mlflow/runs/get failed with error code 503 != 200. Response body: ''", True),
    ("(sqlite3.OperationalError) database is locked", True),
    ("Run 'abc' not found", False),
    ("API request to endpoint /api failed with error code 400 != 200", False),
])
def test_what_counts_as_unreachable(text, expected):
    assert runs.unreachable(RuntimeError(text)) is expected
