"""The selection report on hand-made sweeps: picks, regret, rank correlations, warnings, CSV,
Markdown and figures."""

import csv
import io

import pytest

from selfsup.report import plots
from selfsup.report.rules import rank_correlations
from selfsup.report.selection import DEFAULT, PROBE, SELECTORS, Row, build_report, format_report, to_csv, to_markdown


def row(trial, rankme, lidar, alpha, probe, status="FINISHED", collapsed=False):
    metrics = {"label_free/rankme": rankme, "label_free/rankme_projector": rankme / 2, "label_free/lidar": lidar,
               "label_free/aug_consistency": lidar / 100, "label_free/alpha_req": alpha, PROBE: probe, "epoch": 10}
    return Row(trial, status, 10, {"optim.lr": "0.001"}, metrics, collapsed)


def sweep():
    # RankMe prefers t1 (probe 0.90); LiDAR and augmentation consistency rank the trials exactly as the probe does; t5 collapsed
    return [
        row("t1", 60.0, 10.0, 0.6, 0.90),
        row("t2", 40.0, 30.0, 1.1, 0.97),
        row("t3", 50.0, 20.0, 0.8, 0.95),
        row("t4", 30.0, 15.0, 2.0, 0.93, status="KILLED (scheduler)"),
        row("t5", 1.2, 1.0, 5.0, 0.99, status="KILLED (collapse)", collapsed=True),
    ]


def test_each_selector_picks_among_finished_trials_with_regret_and_correlation():
    report = build_report(sweep(), ["optim.lr"])
    assert report.oracle.trial == "t2"  # t5 probes higher but collapsed; t4 did not finish
    v = report.verdicts
    assert v["rankme"].pick.trial == "t1" and v["rankme"].regret == pytest.approx(7.0)
    assert v["lidar"].pick.trial == "t2" and v["lidar"].regret == pytest.approx(0.0)
    assert v["alpha_req"].pick.trial == "t2"  # |1.1 - 1| is the smallest
    # finished trials t1, t2, t3: RankMe order 60 > 50 > 40 against probe 0.90 < 0.95 < 0.97 -> fully reversed
    assert v["rankme"].tau == pytest.approx(-1.0) and v["rankme"].rho == pytest.approx(-1.0)
    assert v["lidar"].tau == pytest.approx(1.0) and v["lidar"].rho == pytest.approx(1.0)


def test_kendall_tau_by_hand():
    # pairs (1,2) concordant, (1,3) concordant, (2,3) discordant: tau = (2 - 1) / 3
    tau, rho = rank_correlations([1.0, 2.0, 3.0], [0.1, 0.3, 0.2])
    assert tau == pytest.approx(1 / 3)
    assert rho == pytest.approx(1 - 6 * (0 + 1 + 1) / (3 * (9 - 1)))  # d = (0, 1, 1)
    assert rank_correlations([1.0, 2.0], [0.1, 0.2]) == (None, None)


def test_text_report_marks_picks_and_warns_when_the_default_is_weak():
    rows = sweep()
    report = build_report(rows, ["optim.lr"])
    text = format_report(report)
    assert "label_free/rankme picks trial t1" in text and "regret of the label-free pick: 7.00 points" in text
    assert f"* {DEFAULT}" in text and "WARNING" not in text and "1 of 5 trials collapsed" in text
    assert f"RankMe and the default rule ({DEFAULT}) disagree: RankMe picks trial t1, {DEFAULT} picks trial t2 (probe acc 0.9 vs 0.97)" in text
    for r in rows:  # make the default rule rank the trials backwards
        r.metrics[SELECTORS[DEFAULT].metric] = -r.metrics[PROBE]
    assert f"WARNING: on this sweep {DEFAULT} ranks the trials weakly" in format_report(build_report(rows, ["optim.lr"]))
    assert "On the selection benchmark (docs/selection.md" in text


def test_csv_and_markdown(tmp_path):
    report = build_report(sweep(), ["optim.lr"])
    table = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [r["trial"] for r in table] == ["t1", "t2", "t3", "t4", "t5"]
    t2 = table[1]
    assert t2["oracle"] == "1" and "lidar" in t2["picked_by"].split() and float(t2[PROBE]) == 0.97
    assert table[4]["collapsed"] == "1"
    md = to_markdown(report, "demo")
    assert md.startswith("**demo**: 5 trials, 3 finished, 1 collapsed.") and "| lidar | t2 |" in md
    assert "disagree: RankMe picks trial t1" in md


def test_figures_are_written(tmp_path):
    report = build_report(sweep(), ["optim.lr"])
    plots.scatter(report, str(tmp_path / "s.png"))
    plots.curves({"t1": {"label_free/rankme": [(1, 10.0), (2, 20.0)]}, "t2": {}}, str(tmp_path / "c.png"))
    plots.spectra({"pick": [3.0, 2.0, 1.0], "best": [4.0, 1.0, 0.0]}, str(tmp_path / "p.png"))
    for name in ("s.png", "c.png", "p.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_quotes_the_benchmark_for_its_family_and_modality(monkeypatch):
    from selfsup.report import selection

    cell = lambda method, dataset, family, modality, judgeable, regret: {  # noqa: E731
        "method": method, "dataset": dataset, "family": family, "modality": modality, "judgeable": judgeable, "noise": 0.5,
        "regret": {DEFAULT: regret}}
    record = {"command": "python benchmarks/selection.py", "cells": {
        "digits-vicreg": cell("vicreg", "digits", "redundancy_reduction", "image", True, 1.0),
        "mnist1d-vicreg": cell("vicreg", "mnist1d", "redundancy_reduction", "signal", True, 3.0),
        "digits-simclr": cell("simclr", "digits", "contrastive", "image", False, 0.0),
    }}
    group = lambda cells, judged: {"cells": cells, "judgeable": list(judged), "mean_regret_judgeable": sum(judged.values()) / len(judged) if judged else None,  # noqa: E731
                                   "worst_regret_judgeable": max(judged.values(), default=None)}
    record["family"] = {"redundancy_reduction": group(["digits-vicreg", "mnist1d-vicreg"], {"digits-vicreg": 1.0, "mnist1d-vicreg": 3.0}),
                        "contrastive": group(["digits-simclr"], {})}
    record["modality"] = {"image": group(["digits-vicreg", "digits-simclr"], {"digits-vicreg": 1.0}),
                          "signal": group(["mnist1d-vicreg"], {"mnist1d-vicreg": 3.0})}
    monkeypatch.setattr(selection, "benchmark", lambda: record)
    lines = selection.benchmark_lines(build_report(sweep(), ["optim.lr"], method="barlowtwins", dataset="digits"))
    assert "3 cells" in lines[0]
    # the family's two judgeable cells: mean (1 + 3) / 2, worst 3; the image cells: only digits-vicreg judgeable
    assert f"- redundancy_reduction methods: {DEFAULT}'s pick was 2.00 points below the label-based best on average over the 2 judgeable of 2 cell(s), 3.00 at worst." in lines
    assert f"- image data: {DEFAULT}'s pick was 1.00 points below the label-based best on average over the 1 judgeable of 2 cell(s), 1.00 at worst." in lines
    assert lines[-1] == f"- this kind of sweep (redundancy_reduction on image): cell(s) digits-vicreg, judgeable; {DEFAULT}'s regret there: 1.00 points."
    lines = selection.benchmark_lines(build_report(sweep(), ["optim.lr"], method="mocov3", dataset="table"))
    assert "- contrastive methods: 1 cell(s), none judgeable (the trials there differed by no more than seed and test noise)." in lines
    assert "- table data: no cell; the pick is unvalidated for them." in lines
    assert lines[-1] == "- no cell of contrastive on table: the benchmark cannot judge a sweep like this one."
    # a family whose judgeable cells the default missed by more than 2 points on average, and one with none judgeable
    text = format_report(build_report(sweep(), ["optim.lr"], method="vicreg", dataset="mnist1d"))
    assert f"WARNING: on the selection benchmark's redundancy_reduction cells {DEFAULT}'s pick was 2.00 points" not in text  # 2.00 is not above 2
    record["family"]["redundancy_reduction"] = group(["digits-vicreg", "mnist1d-vicreg"], {"digits-vicreg": 1.0, "mnist1d-vicreg": 5.0})
    text = format_report(build_report(sweep(), ["optim.lr"], method="vicreg", dataset="mnist1d"))
    assert f"WARNING: on the selection benchmark's redundancy_reduction cells {DEFAULT}'s pick was 3.00 points below" in text
    text = format_report(build_report(sweep(), ["optim.lr"], method="simclr", dataset="digits"))
    assert "WARNING: the selection benchmark has no judgeable cell of contrastive methods (simclr): treat the pick as unvalidated." in text
    assert "WARNING: the selection benchmark" not in format_report(build_report(sweep(), ["optim.lr"]))  # method unknown: no claim
    monkeypatch.setattr(selection, "benchmark", lambda: None)
    assert "the pick is unvalidated" in selection.benchmark_lines(build_report(sweep(), ["optim.lr"]))[0]
