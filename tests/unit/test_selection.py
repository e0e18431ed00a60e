"""The selection report on hand-made sweeps: picks, regret, rank correlations, warnings, CSV,
Markdown and figures."""

import csv
import io

import pytest

from selfsup.report import plots
from selfsup.report.rules import rank_correlations
from selfsup.report.selection import DEFAULT, PROBE, Row, build_report, format_report, to_csv, to_markdown


def row(trial, rankme, lidar, alpha, probe, status="FINISHED", collapsed=False):
    metrics = {"label_free/rankme": rankme, "label_free/rankme_projector": rankme / 2, "label_free/lidar": lidar,
               "label_free/alpha_req": alpha, PROBE: probe, "epoch": 10}
    return Row(trial, status, 10, {"optim.lr": "0.001"}, metrics, collapsed)


def sweep():
    # RankMe prefers t1 (probe 0.90); LiDAR ranks the trials exactly as the probe does; t5 collapsed
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
        r.metrics["label_free/lidar"] = -r.metrics[PROBE]
    assert "WARNING: on this sweep lidar ranks the trials weakly" in format_report(build_report(rows, ["optim.lr"]))
    assert "masked method" not in text and "On the selection benchmark (docs/selection.md" in text
    assert "WARNING: sjepa is a masked method" in format_report(build_report(rows, ["optim.lr"], method="sjepa"))


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
