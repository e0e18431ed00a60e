"""The sweep's selection report: which trial each label-free selector picks, and how far that is
from the label-based best.

Per trial: its searched hyperparameters and final metrics. Per selector (a label-free metric and the
direction that counts as better): the trial it picks among the trials that trained to the end
(FINISHED; collapsed and stopped trials are never picked), the picked trial's probe accuracy and,
when labels exist, the *oracle* (the finished trial with the best linear probe), the selector's
*regret* (oracle accuracy minus the pick's, in points) and its rank correlation with probe accuracy
over the finished trials (Kendall tau, Spearman rho). A weak correlation of the default rule is
called out in plain words. Everything is read back from MLflow, so ``selfsup report`` shows what the
sweep printed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Callable

from selfsup.tracking import runs

RANKME, PROBE = "label_free/rankme", "probe/linear_acc"
WEAK_TAU = 0.3
"""Kendall tau below which the report warns that the default rule's ranking says little."""


@dataclass(frozen=True)
class Selector:
    """A label-free rule: the metric it reads and ``score`` (higher is better) of a final value."""

    name: str
    metric: str
    score: Callable[[float], float]
    description: str


SELECTORS = {
    s.name: s
    for s in (
        Selector("rankme", RANKME, lambda v: v, "highest RankMe of the backbone (Garrido et al. 2023)"),
        Selector("rankme_projector", "label_free/rankme_projector", lambda v: v, "highest RankMe of the projector output"),
        Selector("lidar", "label_free/lidar", lambda v: v, "highest LiDAR of the backbone (Thilak et al. 2024)"),
        Selector("alpha_req", "label_free/alpha_req", lambda v: -abs(v - 1.0), "eigenspectrum decay alpha closest to 1 (Agrawal et al. 2022)"),
    )
}
DEFAULT = "lidar"
"""The default selection rule (README, "Can you trust the pick?", for the studies behind it)."""


@dataclass
class Row:
    trial: str
    status: str
    epochs: int
    params: dict[str, str]
    metrics: dict[str, float]
    collapsed: bool = False
    run_id: str = ""


@dataclass
class Verdict:
    """One selector's result on a sweep."""

    selector: Selector
    pick: Row | None
    regret: float | None = None
    tau: float | None = None
    rho: float | None = None


@dataclass
class Report:
    rows: list[Row]
    keys: list[str]
    objective: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    oracle: Row | None = None


def rows(uri: str, exp_id: str, parent: str) -> tuple[list[Row], list[str]]:
    """The trial rows of a sweep and the searched keys."""
    keys = json.loads(runs.get_run(uri, parent).tags.get(runs.SEARCHED, "[]"))
    out = []
    for r in runs.child_runs(uri, exp_id, parent):
        status = r.status if r.status != "KILLED" else f"KILLED ({r.tags.get(runs.STOPPED, '?')})"
        out.append(Row(
            r.tags.get(runs.TRIAL_ID, r.run_id[:8]), status, int(r.metrics.get("epoch", 0)),
            {k: r.params.get(k, "") for k in keys}, r.metrics, r.tags.get(runs.COLLAPSED) == "true", r.run_id,
        ))
    return out, keys


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def finished(table: list[Row]) -> list[Row]:
    """The trials a selector may pick: trained to the end, not collapsed."""
    return [r for r in table if r.status == "FINISHED" and not r.collapsed]


def pick(table: list[Row], metric: str, mode: str = "max") -> Row | None:
    """The trial the metric selects: best final value among trials that ran to the end
    (FINISHED), or among all trials that reported it when none did."""
    scored = [r for r in table if _finite(r.metrics.get(metric)) and not r.collapsed]
    done = [r for r in scored if r.status == "FINISHED"] or scored
    if not done:
        return None
    return (max if mode == "max" else min)(done, key=lambda r: r.metrics[metric])


def rank_correlations(scores: list[float], accuracy: list[float]) -> tuple[float | None, float | None]:
    """Kendall tau and Spearman rho between selector scores and probe accuracies (None below 3 trials
    or when either side is constant)."""
    from scipy.stats import kendalltau, spearmanr

    if len(scores) < 3 or len(set(scores)) < 2 or len(set(accuracy)) < 2:
        return None, None
    return float(kendalltau(scores, accuracy).statistic), float(spearmanr(scores, accuracy).statistic)


def judge(table: list[Row], selector: Selector, oracle: Row | None) -> Verdict:
    scored = [r for r in finished(table) if _finite(r.metrics.get(selector.metric))]
    if not scored:
        return Verdict(selector, None)
    best = max(scored, key=lambda r: selector.score(r.metrics[selector.metric]))
    verdict = Verdict(selector, best)
    if oracle is not None and _finite(best.metrics.get(PROBE)):
        verdict.regret = 100 * (oracle.metrics[PROBE] - best.metrics[PROBE])
        labelled = [r for r in scored if _finite(r.metrics.get(PROBE))]
        verdict.tau, verdict.rho = rank_correlations(
            [selector.score(r.metrics[selector.metric]) for r in labelled], [r.metrics[PROBE] for r in labelled]
        )
    return verdict


def build_report(table: list[Row], keys: list[str], objective: str = RANKME) -> Report:
    report = Report(table, keys, objective)
    labelled = [r for r in finished(table) if _finite(r.metrics.get(PROBE))]
    report.oracle = max(labelled, key=lambda r: r.metrics[PROBE]) if labelled else None
    report.verdicts = {name: judge(table, s, report.oracle) for name, s in SELECTORS.items()}
    return report


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def _grid(header: list[str], body: list[list]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *map(line, body)]


METRIC_COLUMNS = [RANKME, "label_free/lidar", "label_free/alpha_req", PROBE]


def format_report(report: Report, metric: str = RANKME, mode: str = "max") -> str:
    """The trial table, the objective's pick, each selector's verdict and the default rule's warning."""
    chosen = pick(report.rows, metric, mode)
    default = report.verdicts[DEFAULT].pick
    cols = [*METRIC_COLUMNS] + ([metric] if metric not in METRIC_COLUMNS else [])
    body = []
    for r in report.rows:
        marks = [m for m, hit in (("<- objective", r is chosen), ("<- default rule", r is default), ("<- best probe", r is report.oracle)) if hit]
        cells = [r.trial, *(_fmt(r.params[k]) for k in report.keys), str(r.epochs), *(_fmt(r.metrics.get(c)) for c in cols)]
        body.append([*cells, r.status + (", collapsed" if r.collapsed and "collapse" not in r.status else ""), " ".join(marks)])
    lines = [*_grid(["trial", *report.keys, "epochs", *cols, "status", ""], body), ""]
    if chosen is None:
        lines.append(f"no trial reported {metric}")
    else:
        lines.append(f"{metric} picks trial {chosen.trial} ({metric} {_fmt(chosen.metrics[metric])}, probe acc {_fmt(chosen.metrics.get(PROBE, '-'))})")
    o = report.oracle
    if o is not None:
        regret = o.metrics[PROBE] - chosen.metrics.get(PROBE, math.nan) if chosen else math.nan
        lines.append(f"best probe acc: trial {o.trial} ({_fmt(o.metrics[PROBE])}); regret of the label-free pick: {100 * regret:.2f} points")
    lines += ["", *_grid(
        ["selector", "picks", "probe acc", "regret (points)", "Kendall tau", "Spearman rho"],
        [[("* " if n == DEFAULT else "  ") + n, v.pick.trial if v.pick else "-", _fmt(v.pick.metrics.get(PROBE) if v.pick else None),
          _fmt(v.regret), _fmt(v.tau), _fmt(v.rho)] for n, v in report.verdicts.items()],
    )]
    lines.append(f"* default rule: {SELECTORS[DEFAULT].description}")
    lines += warnings(report)
    return "\n".join(lines)


def warnings(report: Report) -> list[str]:
    """Plain-language warnings about trusting the default rule on this sweep."""
    v = report.verdicts[DEFAULT]
    out = []
    if v.pick is None:
        out.append(f"WARNING: no finished trial reported {v.selector.metric}; the default rule picks nothing.")
    elif v.tau is not None and v.tau < WEAK_TAU:
        out.append(
            f"WARNING: on this sweep {DEFAULT} ranks the trials weakly against probe accuracy (Kendall tau {v.tau:.2f} < {WEAK_TAU}):"
            " its pick is not much better than a random finished trial. Check a few picks with labels before trusting it."
        )
    collapsed = sum(r.collapsed for r in report.rows)
    if collapsed:
        out.append(f"{collapsed} of {len(report.rows)} trials collapsed and were pruned.")
    return out


def to_csv(report: Report) -> str:
    """One row per trial: searched values, final metrics, status and which selectors pick it."""
    metrics = sorted({k for r in report.rows for k in r.metrics if not k.startswith("perf/")})
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["trial", *report.keys, "status", "collapsed", *metrics, "picked_by", "oracle"])
    for r in report.rows:
        picked = [n for n, v in report.verdicts.items() if v.pick is r]
        w.writerow([r.trial, *(r.params[k] for k in report.keys), r.status, int(r.collapsed), *(r.metrics.get(m, "") for m in metrics),
                    " ".join(picked), int(r is report.oracle)])
    return out.getvalue()


def to_markdown(report: Report, sweep: str) -> str:
    """A short summary for the sweep run's description in MLflow."""
    done = finished(report.rows)
    v = report.verdicts[DEFAULT]
    lines = [f"**{sweep}**: {len(report.rows)} trials, {len(done)} finished, {sum(r.collapsed for r in report.rows)} collapsed.", ""]
    if v.pick is not None:
        line = f"Default rule ({SELECTORS[DEFAULT].description}) picks **{v.pick.trial}**"
        if report.oracle is not None:
            line += f": probe {_fmt(v.pick.metrics.get(PROBE))} vs best {_fmt(report.oracle.metrics[PROBE])} ({report.oracle.trial}), regret {_fmt(v.regret)} points"
        lines.append(line + ".")
    lines += ["", "| selector | picks | probe | regret (pts) | Kendall tau | Spearman |", "| --- | --- | --- | --- | --- | --- |"]
    for n, s in report.verdicts.items():
        probe = s.pick.metrics.get(PROBE) if s.pick else None
        lines.append(f"| {n} | {s.pick.trial if s.pick else '-'} | {_fmt(probe)} | {_fmt(s.regret)} | {_fmt(s.tau)} | {_fmt(s.rho)} |")
    lines += ["", *warnings(report)]
    return "\n".join(lines).strip() + "\n"


def sweep_report(uri: str, exp_id: str, parent: str) -> Report:
    table, keys = rows(uri, exp_id, parent)
    return build_report(table, keys)


def find_sweep(uri: str, sweep_name: str, experiment: str | None = None) -> tuple[str, str]:
    """``(experiment id, parent run id)`` of the newest sweep called ``sweep_name`` at ``uri``."""
    exp_id = runs.find_experiment(uri, experiment or sweep_name)
    parent = exp_id and runs.find_run(uri, exp_id, {runs.ROLE: "sweep", runs.SWEEP: sweep_name})
    if not parent:
        raise LookupError(f"no sweep named {sweep_name!r} in {uri}")
    return exp_id, parent
