"""The sweep's selection table: every trial with its searched hyperparameters, RankMe and probe
accuracy, which trial the label-free metric picks, and (when labels exist) the label-based best.

The table is built from the MLflow records, so ``selfsup report`` shows what the sweep printed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from selfsup.tracking import runs

RANKME, PROBE = "label_free/rankme", "probe/linear_acc"


@dataclass
class Row:
    trial: str
    status: str
    epochs: int
    params: dict[str, str]
    metrics: dict[str, float]


def rows(uri: str, exp_id: str, parent: str) -> tuple[list[Row], list[str]]:
    """The trial rows of a sweep and the searched keys."""
    keys = json.loads(runs.get_run(uri, parent).tags.get(runs.SEARCHED, "[]"))
    out = []
    for r in runs.child_runs(uri, exp_id, parent):
        status = r.status if r.status != "KILLED" else f"KILLED ({r.tags.get(runs.STOPPED, '?')})"
        out.append(Row(r.tags.get(runs.TRIAL_ID, r.run_id[:8]), status, int(r.metrics.get("epoch", 0)), {k: r.params.get(k, "") for k in keys}, r.metrics))
    return out, keys


def pick(table: list[Row], metric: str, mode: str = "max") -> Row | None:
    """The trial the metric selects: best final value among trials that ran to the end
    (FINISHED), or among all trials that reported it when none did."""
    scored = [r for r in table if _finite(r.metrics.get(metric))]
    finished = [r for r in scored if r.status == "FINISHED"] or scored
    if not finished:
        return None
    return (max if mode == "max" else min)(finished, key=lambda r: r.metrics[metric])


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def format_table(table: list[Row], keys: list[str], metric: str, mode: str) -> str:
    chosen = pick(table, metric, mode)
    oracle = pick([r for r in table if _finite(r.metrics.get(PROBE))], PROBE, "max")
    cols = ["trial", *keys, "epochs", RANKME, PROBE, "status"]
    if metric not in cols:
        cols.insert(-1, metric)
    body = []
    for r in table:
        mark = ("<- pick" if r is chosen else "") + (" <- best probe" if r is oracle else "")
        cells = [r.trial, *(_fmt(r.params[k]) for k in keys), str(r.epochs)]
        cells += [_fmt(r.metrics.get(c, "-")) for c in cols[len(keys) + 2 : -1]]
        body.append([*cells, r.status, mark.strip()])
    header = [*cols, ""]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    lines = [line(header), line(["-" * w for w in widths]), *map(line, body), ""]
    if chosen is None:
        lines.append(f"no trial reported {metric}")
    else:
        lines.append(f"{metric} picks trial {chosen.trial} ({metric} {_fmt(chosen.metrics[metric])}, probe acc {_fmt(chosen.metrics.get(PROBE, '-'))})")
        if oracle is not None:
            regret = oracle.metrics[PROBE] - chosen.metrics.get(PROBE, math.nan)
            lines.append(f"best probe acc: trial {oracle.trial} ({_fmt(oracle.metrics[PROBE])}); regret of the label-free pick: {100 * regret:.2f} points")
    return "\n".join(lines)


def sweep_table(uri: str, exp_id: str, parent: str, metric: str = RANKME, mode: str = "max") -> str:
    table, keys = rows(uri, exp_id, parent)
    return format_table(table, keys, metric, mode)


def latest_sweep_table(uri: str, sweep_name: str, experiment: str | None = None) -> str:
    """The table of the newest sweep called ``sweep_name`` in the store at ``uri``."""
    exp_id = runs.find_experiment(uri, experiment or sweep_name)
    parent = exp_id and runs.find_run(uri, exp_id, {runs.ROLE: "sweep", runs.SWEEP: sweep_name})
    if not parent:
        raise LookupError(f"no sweep named {sweep_name!r} in {uri}")
    params = runs.get_run(uri, parent).params
    return sweep_table(uri, exp_id, parent, params.get("sweep.metric", RANKME), params.get("sweep.mode", "max"))
