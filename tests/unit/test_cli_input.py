"""Bad input to every verb, tried as a new user would: each is refused with exit status 2 and one
line on stderr that names the argument, the metric or the store, before anything starts (no Ray,
no server, nothing written where the command ran)."""

import pytest
import yaml

from selfsup.cli import main

DIGITS = {"name": "d", "model": {"backbone": "cnn", "embed_dim": 16, "width": 8, "depth": 2},
          "method": {"name": "vicreg", "projector": [32, 32]}, "train": {"epochs": 1, "batch_size": 64}}


def refused(argv: list[str], capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("argv, says", [
    (["ui", "--port", "99999"], "selfsup ui: error: argument --port: '99999' is not a port number (1-65535)"),
    (["ui", "--port", "http"], "selfsup ui: error: argument --port: 'http' is not a port number"),
    (["server", "--backend-store-uri", "sqlite:///x.db", "--artifacts", "a", "--port", "0"], "selfsup server: error: argument --port: '0'"),
    (["server", "--backend-store-uri", "sqlite:///x.db", "--artifacts", "a", "--workers", "0"], "selfsup server: error: argument --workers: '0'"),
    (["server", "--backend-store-uri", "mysql+nothing://x", "--artifacts", "a"],
     "selfsup: error: --backend-store-uri: mysql+nothing://x: its database driver is not available (NoSuchModuleError"),
    (["server", "--backend-store-uri", "postgresql://mlflow:pw@127.0.0.1:1/mlflow", "--artifacts", "a"],
     "selfsup: error: --backend-store-uri: postgresql://mlflow:***@127.0.0.1:1/mlflow: cannot connect ("),
    (["server", "--backend-store-uri", "sqlite:///no/such/folder/x.db", "--artifacts", "a"],
     "selfsup: error: --backend-store-uri: sqlite:///no/such/folder/x.db: the folder"),
    (["export"], "selfsup export: error: the following arguments are required: run, --out"),
    (["train", "nothing.yaml"], "selfsup: error: nothing.yaml: file not found"),
])
def test_verb_options_are_refused_in_one_line(argv, says, workdir, capsys):
    import ray

    line = refused(argv, capsys)
    assert line.startswith(says), line
    assert files(workdir) == [] and not ray.is_initialized()


def test_a_sweep_objective_no_trial_logs_is_refused(workdir, capsys):
    """``metric: label_free/nope`` was accepted and the sweep started its trials."""
    (workdir / "base.yaml").write_text(yaml.safe_dump(DIGITS))
    (workdir / "sweep.yaml").write_text("name: s\nbase: base.yaml\nmetric: label_free/nope\n")
    line = refused(["sweep", "sweep.yaml"], capsys)
    assert line.startswith("selfsup: error: sweep.yaml: metric: 'label_free/nope' is not a metric vicreg trials log (one of: label_free/rankme,")
    assert files(workdir) == ["base.yaml", "sweep.yaml"]


def test_a_store_that_cannot_be_reached_is_refused(workdir, capsys, monkeypatch):
    """``train.storage_path: s3://nobucket/x`` with no endpoint that answers printed a pyarrow traceback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    (workdir / "run.yaml").write_text(yaml.safe_dump({**DIGITS, "train": {**DIGITS["train"], "storage_path": "s3://nobucket/x"}}))
    line = refused(["train", "run.yaml"], capsys)
    assert line.startswith("selfsup: error: run.yaml: train.storage_path: s3://nobucket/x: cannot reach it (")
    assert files(workdir) == ["run.yaml"]
    # The verbs that only read say at once that a tracking server does not answer (a run's writes wait it out).
    from selfsup.train.cluster import free_port

    server = f"http://127.0.0.1:{free_port()}"
    for verb in (["export", "abc", "--out", "x"], ["report", "s"]):
        line = refused([*verb, "--tracking-uri", server], capsys)
        assert f"tracking server {server} cannot be reached (" in line and "is it running?" in line, line
    assert files(workdir) == ["run.yaml"]


def test_runs_and_sweeps_that_are_not_there(workdir, capsys):
    """``export``, ``report`` and ``train --from`` of something the store does not hold."""
    uri = f"sqlite:///{workdir}/m.db"
    assert f"export: no tracking store at {uri}" in refused(["export", "nope", "--out", "x", "--tracking-uri", uri], capsys)
    assert refused(["report", "nosweep", "--tracking-uri", uri], capsys).startswith(f"selfsup: error: nosweep: no tracking store at {uri}")
    assert files(workdir) == []  # MLflow made an empty store there before
    from selfsup.tracking import runs

    runs.experiment_id(uri, "e", str(workdir / "art"))  # a store, without that run or sweep
    capsys.readouterr()
    assert "export: run 'nope' not found" in refused(["export", "nope", "--out", "x", "--tracking-uri", uri], capsys)
    assert refused(["report", "nosweep", "--tracking-uri", uri], capsys).startswith("selfsup: error: nosweep: ")
    (workdir / "run.yaml").write_text(yaml.safe_dump({**DIGITS, "optim": {"schedule": "infinite"}, "tracking": {"uri": uri}}))
    assert "run.yaml: --from nope: no such run" in refused(["train", "run.yaml", "--from", "nope"], capsys)
    assert not (workdir / "x").exists()


HELP = """
import sys
from selfsup.cli import main, parser
verbs = [None, *parser()._subparsers._group_actions[0].choices]
for verb in verbs:
    try:
        main(["--help"] if verb is None else [verb, "--help"])
    except SystemExit as exc:
        assert exc.code == 0, (verb, exc.code)
print(len(verbs), "verbs; imported:", *sorted(m for m in ("torch", "ray", "mlflow", "optuna", "numpy") if m in sys.modules))
"""


def test_help_of_every_verb_imports_no_torch_ray_or_mlflow():
    """Parsing arguments and printing help (of the CLI and every verb) in a fresh interpreter leaves
    torch, Ray, MLflow, Optuna and NumPy unimported (their import took seconds; benchmarks/cli_startup.py
    times it)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "10 verbs; imported:", out.stdout[-500:]  # the CLI's own and its 9 verbs
