"""Security review, one test per point: no unpickling of code (checkpoints, user data), safe YAML
only, no shell strings, servers on loopback by default, names that cannot climb out of the
folders they name."""

import ast
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from selfsup.cli import parser
from selfsup.config import ConfigError, build_experiment, load_sweep
from selfsup.data.datasets import DataError, cifar

SOURCE = Path(__file__).resolve().parents[2] / "platform" / "selfsup"
CODE = {p: p.read_text() for p in SOURCE.rglob("*.py")}


def calls(pattern: str) -> list[str]:
    return [f"{p.relative_to(SOURCE)}: {m.group(0)}" for p, text in CODE.items() for m in re.finditer(pattern, text)]


def test_every_torch_load_refuses_code():
    loads = [(p, node) for p, text in CODE.items() for node in ast.walk(ast.parse(text))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load"]
    assert loads, "checkpoints are read somewhere"
    for p, node in loads:
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)
        assert safe, f"{p.relative_to(SOURCE)}:{node.lineno}: {ast.unparse(node)}"


def test_yaml_is_only_read_safely():
    assert calls(r"yaml\.(load|unsafe_load|full_load|load_all)\(") == []
    assert calls(r"Loader\s*=") == []


def test_no_shell_strings():
    assert calls(r"shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.getoutput") == []


def test_no_pickle_of_user_files_except_through_the_array_only_unpickler():
    assert calls(r"pickle\.loads?\(") == []
    assert calls(r"allow_pickle\s*=\s*True") == []


class Deletes:
    """Unpickling this would delete ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.remove, (self.path,))


def test_a_cifar_file_that_would_run_code_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"hook": Deletes(victim)}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR pickle .*asks for posix\.remove"):
        cifar(str(tmp_path), 10)
    assert victim.read_text() == "still here"


@pytest.mark.parametrize("verb", ["ui", "server"])
def test_servers_bind_to_loopback_unless_told(verb):
    args = parser().parse_args([verb] + (["--backend-store-uri", "sqlite:///x.db", "--artifacts", "/tmp/a"] if verb == "server" else []))
    assert args.host == "127.0.0.1"


@pytest.mark.parametrize("key,value", [("name", "../../x"), ("name", ".."), ("name", ".hidden"), ("name", "a/b"),
                                       ("tracking.experiment", "../up"), ("tracking.experiment", "..")])
def test_names_cannot_climb_out_of_their_folders(key, value):
    section, _, leaf = key.rpartition(".")
    tree = {section: {leaf: value}} if section else {leaf: value}
    with pytest.raises(ConfigError, match=re.escape(key)):
        build_experiment(tree, "x.yaml")


def test_a_sweep_name_cannot_climb_out(tmp_path):
    (tmp_path / "sweep.yaml").write_text("name: ../../etc\nbase: base.yaml\n")
    with pytest.raises(ConfigError, match=r"sweep\.yaml: name: "):
        load_sweep(tmp_path / "sweep.yaml")


def test_basic_auth_config_holds_no_admin_password_and_survives_odd_characters(tmp_path, monkeypatch):
    """``selfsup server --auth``: the admin reaches MLflow through MLFLOW_AUTH_ADMIN_* (never a
    file); the config is written with configparser, private to its owner, and MLflow reads it back
    whole even when the store's URL holds '%' or a newline cannot add keys; a relative sqlite store
    keeps its auth database beside it (it went to the filesystem root)."""
    from mlflow.server.auth.config import read_auth_config

    from selfsup.tracking.server import admin_env, auth_config, auth_database

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "root")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pa%ss\nadmin_username = evil")
    path = Path(auth_config("sqlite:///runs%20a.db", str(tmp_path)))
    text = path.read_text()
    assert "pa%ss" not in text and "evil" not in text and (path.stat().st_mode & 0o777) == 0o600
    env = admin_env()
    for key, value in {**env, "MLFLOW_AUTH_CONFIG_PATH": str(path)}.items():
        monkeypatch.setenv(key, value)
    config = read_auth_config()
    assert config.admin_username == "root" and config.admin_password == "pa%ss\nadmin_username = evil"
    assert config.database_uri == f"sqlite:///{tmp_path / 'runs%20a_auth.db'}"
    assert auth_database("sqlite:////abs/runs.db") == "sqlite:////abs/runs_auth.db"
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(ConfigError, match="--auth: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        admin_env()


def test_ui_warns_when_bound_beyond_loopback(monkeypatch, capsys):
    """``selfsup ui --host 0.0.0.0`` says what it exposes, as ``selfsup server`` does."""
    from selfsup.tracking import server

    monkeypatch.setattr(server.os, "execv", lambda *a: None)
    server.serve("sqlite:///x.db", "art", "0.0.0.0", 5001)
    assert capsys.readouterr().err.startswith("[selfsup] warning: serving on 0.0.0.0: anyone who can reach port 5001 can read and write every run")
    server.serve("sqlite:///x.db", "art", "127.0.0.1", 5001)
    assert capsys.readouterr().err == ""
