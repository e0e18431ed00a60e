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
import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from selfsup.methods import METHODS
from selfsup.modalities import DATASETS, modality_of
from selfsup.report import rules
from selfsup.tracking import runs

RANKME, PROBE = rules.RANKME, rules.PROBE
WEAK_TAU = 0.3
"""Kendall tau below which the report warns that the default rule's ranking says little."""

DEFAULT = "aug_consistency"
"""The default selection rule, chosen by the selection benchmark (``docs/selection.md``; README,
"Can you trust the pick?"): on 20 cells of every modality and method family, its mean regret is
0.76 points (RankMe alone 2.64, LiDAR alone 2.75, the previous default), tied with the mean rank of
RankMe, LiDAR and it (0.756), which leave-one-dataset-out chose for most held-out datasets (held-out
regret 1.04); a single metric, unlike a rank aggregation, can be the sweep's objective. The target
(no cell above 2) is not met (4.31 on IICC), and the reports warn where its family's record is poor."""
RECORD = Path(__file__).with_name("benchmark.json")
"""The selection benchmark's record (written by ``benchmarks/selection.py``): each cell's family,
modality, noise and judgeability and every selector's regret there, and the default rule's record
per method family and per modality."""
SELECTORS = {**rules.METRIC_RULES, **({} if DEFAULT in rules.METRIC_RULES else {DEFAULT: rules.candidates()[DEFAULT]})}
"""The rules every report judges: the panel's metrics and the default rule."""


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
class Report:
    rows: list[Row]
    keys: list[str]
    objective: str
    verdicts: dict[str, rules.Verdict] = field(default_factory=dict)
    oracle: Row | None = None
    method: str | None = None
    dataset: str | None = None


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


def finished(table: list[Row]) -> list[Row]:
    """The trials a selector may pick: trained to the end, not collapsed."""
    return [r for r in table if r.status == "FINISHED" and not r.collapsed]


def pick(table: list[Row], metric: str, mode: str = "max") -> Row | None:
    """The trial the metric selects: best final value among trials that ran to the end
    (FINISHED), or among all trials that reported it when none did."""
    scored = [r for r in table if rules.finite(r.metrics.get(metric)) and not r.collapsed]
    done = [r for r in scored if r.status == "FINISHED"] or scored
    if not done:
        return None
    return (max if mode == "max" else min)(done, key=lambda r: r.metrics[metric])


def build_report(table: list[Row], keys: list[str], objective: str = RANKME, method: str | None = None, dataset: str | None = None) -> Report:
    report = Report(table, keys, objective, method=method, dataset=dataset)
    report.oracle = rules.oracle(finished(table))
    report.verdicts = {name: rules.judge(rule, finished(table)) for name, rule in SELECTORS.items()}
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
    lines.append(agreement(report))
    lines += benchmark_lines(report)
    lines += warnings(report)
    return "\n".join(lines)


def agreement(report: Report) -> str:
    """Where RankMe (the RankMe paper's objective) and the default rule part ways, in one line."""
    r, d = report.verdicts["rankme"].pick, report.verdicts[DEFAULT].pick
    if r is None or d is None or DEFAULT == "rankme":
        return f"RankMe picks {r.trial if r else 'nothing'}; the default rule picks {d.trial if d else 'nothing'}."
    if r is d:
        return f"RankMe and the default rule ({DEFAULT}) agree: trial {r.trial}."
    probes = f" (probe acc {_fmt(r.metrics.get(PROBE))} vs {_fmt(d.metrics.get(PROBE))})" if PROBE in r.metrics and PROBE in d.metrics else ""
    return f"RankMe and the default rule ({DEFAULT}) disagree: RankMe picks trial {r.trial}, {DEFAULT} picks trial {d.trial}{probes}."


@functools.cache
def benchmark() -> dict | None:
    """The selection benchmark's record, or None where this install has none."""
    return json.loads(RECORD.read_text()) if RECORD.is_file() else None


UNVALIDATED = 2.0
"""Mean regret (points) of the default rule over a family's judgeable benchmark cells above which a
report warns that its pick is not to be trusted without a check."""


def kind_of(report: Report) -> tuple[str | None, str | None]:
    """``(method family, modality)`` of the sweep (None where the method or dataset is unknown here)."""
    family = METHODS[report.method].family if report.method in METHODS else None
    return family, modality_of(report.dataset).name if report.dataset in DATASETS else None


def group_record(record: dict, key: str, value: str | None) -> dict:
    """The default rule's record on the benchmark cells whose ``key`` (family or modality) is
    ``value``: ``cells``, ``judgeable`` and ``mean_regret_judgeable``/``worst_regret_judgeable``
    (None where no cell is judgeable); no cells where the benchmark has none."""
    return record[key].get(value) or {"cells": [], "judgeable": [], "mean_regret_judgeable": None, "worst_regret_judgeable": None}


def benchmark_lines(report: Report) -> list[str]:
    """How the rule that picked did on the selection benchmark for this sweep's method family and
    modality, and whether the benchmark could judge a sweep like this one (a cell of the same
    family on the same modality whose trials differed by more than seed and test noise)."""
    record = benchmark()
    if record is None:
        return ["No selection benchmark record in this install (selfsup/report/benchmark.json): the pick is unvalidated."]
    cells = record["cells"]
    family, modality = kind_of(report)
    lines = [f"On the selection benchmark (docs/selection.md, {len(cells)} cells, `{record['command']}`):"]
    for key, value, what in (("family", family, f"{family} methods"), ("modality", modality, f"{modality} data")):
        group = group_record(record, key, value)
        if not group["cells"]:
            lines.append(f"- {what}: no cell; the pick is unvalidated for them.")
        elif group["mean_regret_judgeable"] is None:
            lines.append(f"- {what}: {len(group['cells'])} cell(s), none judgeable (the trials there differed by no more than seed and test noise).")
        else:
            lines.append(f"- {what}: {DEFAULT}'s pick was {group['mean_regret_judgeable']:.2f} points below the label-based best on average "
                         f"over the {len(group['judgeable'])} judgeable of {len(group['cells'])} cell(s), "
                         f"{group['worst_regret_judgeable']:.2f} at worst.")
    same = [n for n, c in cells.items() if c["family"] == family and c["modality"] == modality]
    if not same:
        lines.append(f"- no cell of {family or report.method} on {modality or report.dataset}: the benchmark cannot judge a sweep like this one.")
    else:
        judged = [n for n in same if cells[n]["judgeable"]]
        regrets = [f"{r:.2f}" for n in judged if (r := cells[n]["regret"].get(DEFAULT)) is not None]
        state = "judgeable" if judged else "within noise: the benchmark cannot judge a sweep like this one"
        lines.append(f"- this kind of sweep ({family} on {modality}): cell(s) {', '.join(same)}, {state}"
                     + (f"; {DEFAULT}'s regret there: {', '.join(regrets)} points." if regrets else "."))
    return lines


def warnings(report: Report) -> list[str]:
    """Plain-language warnings about trusting the default rule on this sweep."""
    v = report.verdicts[DEFAULT]
    out = []
    if v.pick is None:
        out.append(f"WARNING: no finished trial reported {v.rule.metric}; the default rule picks nothing.")
    elif v.tau is not None and v.tau < WEAK_TAU:
        out.append(
            f"WARNING: on this sweep {DEFAULT} ranks the trials weakly against probe accuracy (Kendall tau {v.tau:.2f} < {WEAK_TAU}):"
            " its pick is not much better than a random finished trial. Check a few picks with labels before trusting it."
        )
    record, (family, _) = benchmark(), kind_of(report)
    if record is not None and family is not None:
        mean = group_record(record, "family", family)["mean_regret_judgeable"]
        if mean is None:
            out.append(f"WARNING: the selection benchmark has no judgeable cell of {family} methods ({report.method}): treat the pick as unvalidated.")
        elif mean > UNVALIDATED:
            out.append(f"WARNING: on the selection benchmark's {family} cells {DEFAULT}'s pick was {mean:.2f} points below "
                       "the label-based best on average: treat the pick as unvalidated and check a few trials with labels.")
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
    lines += ["", agreement(report), "", *benchmark_lines(report), "", *warnings(report)]
    return "\n".join(lines).strip() + "\n"


def sweep_report(uri: str, exp_id: str, parent: str) -> Report:
    table, keys = rows(uri, exp_id, parent)
    tags = runs.get_run(uri, parent).tags
    return build_report(table, keys, method=tags.get(runs.METHOD), dataset=tags.get(runs.DATASET))


def find_sweep(uri: str, sweep_name: str, experiment: str | None = None) -> tuple[str, str]:
    """``(experiment id, parent run id)`` of the newest sweep called ``sweep_name`` at ``uri``."""
    exp_id = runs.find_experiment(uri, experiment or sweep_name)
    parent = exp_id and runs.find_run(uri, exp_id, {runs.ROLE: "sweep", runs.SWEEP: sweep_name})
    if not parent:
        raise LookupError(f"no sweep named {sweep_name!r} in {uri}")
    return exp_id, parent
