"""The selection benchmark end to end at its smoke budget (2 cells x 2 trials x 2 epochs, the better
trial of each trained again with another seed): real sweeps on Ray with real MLflow, the summary,
plots and the reports' record written, and a second call reading the finished cells back instead of
training them again."""

import importlib.util
import json
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("selection_benchmark", ROOT / "benchmarks" / "selection.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_smoke_benchmark_runs_cells_writes_summary_and_reads_back(ray_cluster, workdir, capsys):
    bench = load_benchmark()
    uri = f"sqlite:///{workdir}/mlflow.db"
    args = ["--budget", "smoke", "--tracking-uri", uri, "--storage", str(workdir), "--out", str(workdir / "docs")]
    assert bench.main(args) == 0

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(bench.EXPERIMENT)
    sweeps = client.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'sweep'")
    parents = [p for p in sweeps if "-seed1-" not in p.data.tags["selfsup.sweep"]]
    assert sorted(p.data.tags["selfsup.sweep"] for p in parents) == ["selbench-smoke-breast_cancer-simclr", "selbench-smoke-digits-vicreg"]
    replicates = [p for p in sweeps if p not in parents]
    assert len(replicates) == 2 and all(p.info.status == "FINISHED" for p in replicates)
    for p in replicates:  # the better trial of its cell, again with seed 1: the same searched values
        (again,) = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
        cell = next(c for c in parents if p.data.tags["selfsup.sweep"].startswith(c.data.tags["selfsup.sweep"] + "-seed1-"))
        (first,) = [c for c in client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{cell.info.run_id}'")
                    if p.data.tags["selfsup.sweep"].endswith(c.data.tags["selfsup.trial_id"])]
        assert again.data.params["seed"] == "1" and again.data.params["optim.lr"] == first.data.params["optim.lr"]
    for p in parents:
        assert p.info.status == "FINISHED"
        children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        assert all(c.data.metrics["epoch"] == 2 and "probe/linear_acc" in c.data.metrics for c in children)
        assert "selection.md" in {a.path for a in client.list_artifacts(p.info.run_id)}  # each cell's own report
    assert not client.search_registered_models()  # the benchmark registers nothing

    md = (workdir / "docs" / "selection.md").read_text()
    assert "| digits-vicreg | redundancy_reduction | image | 2 / 2 | 2 |" in md and "| breast_cancer-simclr | contrastive | table | 2 / 2 | 2 |" in md
    assert "## Each criterion on its own" in md and "| cluster_learnability | 2 |" in md
    assert "## The default rule, chosen leave-one-dataset-out" in md and "| held-out dataset |" in md and "| by family |" in md
    assert "## ASHA on a label-free objective, replayed" in md
    record = json.loads((workdir / "docs" / "selection" / "benchmark.json").read_text())
    assert record["cells"]["digits-vicreg"]["family"] == "redundancy_reduction" and record["cells"]["digits-vicreg"]["noise"] > 0
    assert set(record["family"]) == {"redundancy_reduction", "contrastive"} and set(record["modality"]) == {"image", "table"}
    for figure in ("cells.png", "regrets.png", "trials.json"):
        assert (workdir / "docs" / "selection" / figure).stat().st_size > 1000
    (bench_run,) = client.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'benchmark'")
    logged = {a.path for a in client.list_artifacts(bench_run.info.run_id)}
    assert {"selection.md", "trials.json", "cells.png", "regrets.png"} <= logged

    capsys.readouterr()
    assert bench.main(args) == 0  # every cell finished before: read back, nothing trained
    out = capsys.readouterr().out
    assert out.count("finished before, read back from MLflow") == 4  # the cells and their replicates
    again = client.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'sweep'")
    assert len(again) == 4
