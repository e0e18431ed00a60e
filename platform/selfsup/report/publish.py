"""Write a sweep's selection report onto its parent MLflow run: the text table (``selection.txt``),
one CSV row per trial (``selection.csv``), a Markdown summary (``selection.md``, also the run's
description), and the figures ``selection_scatter.png``, ``selection_curves.png`` and
``selection_spectra.png`` (the default rule's pick, the objective's pick and the best-probe trial,
each once). Run at the end of every sweep and by ``selfsup report``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from selfsup.report import plots
from selfsup.report.selection import DEFAULT, SELECTORS, find_sweep, format_report, pick, sweep_report, to_csv, to_markdown
from selfsup.tracking import runs


def publish(uri: str, exp_id: str, parent: str, sweep: str, metric: str, mode: str) -> str:
    """Build, log and return the report text of the sweep whose parent run is ``parent``."""
    report = sweep_report(uri, exp_id, parent)
    text = format_report(report, metric, mode)
    summary = to_markdown(report, sweep)
    runs.log_text(uri, parent, text, "selection.txt")
    runs.log_text(uri, parent, to_csv(report), "selection.csv")
    runs.log_text(uri, parent, summary, "selection.md")
    runs.set_tags(uri, parent, {runs.NOTE: summary})
    metrics, tags = summary_record(report)
    # stamped with the parent's start: publishing again (a resumed sweep, `selfsup report`) adds no entries
    runs.log_metrics(uri, parent, metrics, step=0, timestamp_ms=runs.client(uri).get_run(parent).info.start_time)
    runs.set_tags(uri, parent, tags)
    with tempfile.TemporaryDirectory() as tmp:
        figures = [Path(tmp) / "selection_scatter.png", Path(tmp) / "selection_curves.png"]
        plots.scatter(report, str(figures[0]))
        plots.curves({r.trial: {m: runs.metric_history(uri, r.run_id, m) for m in plots.CURVES} for r in report.rows}, str(figures[1]))
        roles: dict[str, list[str]] = {}  # trial -> what it is: the default's pick, the objective's, the oracle
        rows = {r.trial: r for r in report.rows}
        entries = [(f"{DEFAULT} pick", report.verdicts[DEFAULT].pick)]
        if metric != SELECTORS[DEFAULT].metric:
            entries.append((f"{metric} pick", pick(report.rows, metric, mode)))
        for label, row in [*entries, ("best probe", report.oracle)]:
            if row is not None:
                roles.setdefault(row.trial, []).append(label)
        spectra = {}
        for trial, labels in roles.items():
            found = runs.read_text(uri, rows[trial].run_id, runs.SPECTRUM)
            if found:
                spectra[f"{trial}: {', '.join(labels)}"] = json.loads(found)["singular_values"]
        if spectra:
            figures.append(Path(tmp) / "selection_spectra.png")
            plots.spectra(spectra, str(figures[-1]))
        for f in figures:
            runs.log_file(uri, parent, str(f))
    return text


def summary_record(report) -> tuple[dict[str, float], dict[str, str]]:
    """The sweep's outcome as the parent run's metrics and tags, so that sweeps line up side by side
    in MLflow's runs table: trials by how they ended; the default rule's pick, its metrics and, with
    labels, its probe accuracy, regret (points) and the rule's rank correlation with the probe."""
    ended = [r.status for r in report.rows]
    metrics = {
        "sweep/trials": len(report.rows),
        "sweep/trials_finished": ended.count("FINISHED"),
        "sweep/trials_stopped": ended.count("KILLED (scheduler)"),
        "sweep/trials_collapsed": sum(r.collapsed for r in report.rows),
        "sweep/trials_failed": ended.count("FAILED"),
    }
    verdict = report.verdicts[DEFAULT]
    tags = {"selfsup.default_rule": DEFAULT}
    if verdict.pick is not None:
        tags.update({"selfsup.pick_trial": verdict.pick.trial, "selfsup.pick_run": verdict.pick.run_id})
        metrics.update({f"pick/{k}": v for k, v in verdict.pick.metrics.items() if k.startswith(("label_free/", "probe/"))})
    for key, value in (("pick/regret_points", verdict.regret), ("pick/kendall_tau", verdict.tau), ("pick/spearman_rho", verdict.rho)):
        if value is not None:
            metrics[key] = value
    return metrics, tags


def publish_latest(uri: str, sweep: str, experiment: str | None = None) -> str:
    """Report the newest sweep called ``sweep`` in the store at ``uri`` (``selfsup report``)."""
    runs.require_store(uri)
    exp_id, parent = find_sweep(uri, sweep, experiment)
    params = runs.get_run(uri, parent).params
    return publish(uri, exp_id, parent, sweep, params.get("sweep.metric", "label_free/rankme"), params.get("sweep.mode", "max"))
