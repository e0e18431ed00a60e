"""The selection benchmark's analysis: its cells read back from MLflow, every rule judged on each,
the default rule chosen by leave-one-dataset-out, ASHA replayed, and the Markdown summary and plots
(``benchmarks/selection.py`` runs the cells and calls :func:`write_summary`). Research code, so it
lives here and not in the shipped package (DESIGN.md, "Layers")."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfsup.report import asha, rules
from selfsup.report.selection import DEFAULT, SELECTORS, Row, finished, rows
from selfsup.tracking import runs

NOISE_SE = 2.0
"""A cell whose probe range is under this many times its noise (the test set's binomial standard
error and the seed's standard deviation together) reads as 'within noise': no selector can be
judged on it."""
GRACE, RF = 2, 2
"""The ASHA replay: the sweeps' default grace period (epochs) and reduction factor."""


@dataclass
class Ran:
    """A cell as ``benchmarks/selection.py`` ran it: where its sweep and its seed replicates
    (``(trial, parent run id)``) are."""

    name: str
    dataset: str
    method: str
    family: str
    modality: str
    uri: str
    exp_id: str
    parent: str
    wall_s: float
    seeds: list[tuple[str, str]]


@dataclass
class BenchCell(Ran):
    """A benchmark cell: its trials as the report reads them, the default metric's history and its
    seed replicates."""

    table: list[Row] = field(default_factory=list)
    histories: dict[str, dict[str, list[tuple[int, float, float]]]] = field(default_factory=dict)
    """trial -> metric -> ``[(epoch, value, timestamp s)]``."""
    seed_pairs: list[tuple[str, float, float]] = field(default_factory=list)
    """``(trial, probe accuracy, probe accuracy with another seed)`` of the replicated trials."""

    @property
    def cell(self) -> rules.Cell:
        return rules.Cell(self.name, self.dataset, self.method, finished(self.table), self.family)

    @property
    def epochs(self) -> int:
        return max((r.epochs for r in self.table), default=0)

    def probe_range(self) -> tuple[float, float] | None:
        accs = [r.metrics[rules.PROBE] for r in self.cell.trials if rules.finite(r.metrics.get(rules.PROBE))]
        return (min(accs), max(accs)) if accs else None

    def test_noise(self) -> float | None:
        """One binomial standard error of a probe accuracy on this cell's test samples (points)."""
        span = self.probe_range()
        n = next((r.metrics.get("probe/test_size") for r in self.cell.trials if r.metrics.get("probe/test_size")), None)
        if span is None or not n:
            return None
        p = (span[0] + span[1]) / 2
        return 100 * math.sqrt(p * (1 - p) / n)

    def seed_noise(self) -> float | None:
        """The standard deviation of a trial's probe accuracy over seeds (points), pooled over the
        replicated trials: ``sqrt(mean((a - b)^2) / 2)`` of each pair."""
        if not self.seed_pairs:
            return None
        return 100 * math.sqrt(float(np.mean([(a - b) ** 2 for _, a, b in self.seed_pairs])) / 2)

    def noise(self) -> float | None:
        """The noise a regret is read against: test and seed noise together (points)."""
        parts = [v for v in (self.test_noise(), self.seed_noise()) if v is not None]
        return math.sqrt(sum(v * v for v in parts)) if parts else None

    def judgeable(self) -> bool:
        """Whether the probe range is at least :data:`NOISE_SE` times the noise: a cell where the
        trials differ by less says nothing about a selector."""
        span, noise = self.probe_range(), self.noise()
        return span is not None and noise is not None and 100 * (span[1] - span[0]) >= NOISE_SE * noise


def load_cells(found: list[Ran]) -> list[BenchCell]:
    """The cells as ``benchmarks/selection.py`` ran them -> cells with their trials, the label-free metrics' histories and the
    seed pairs."""
    out = []
    for ran in found:
        table, _ = rows(ran.uri, ran.exp_id, ran.parent)
        cell = BenchCell(**vars(ran), table=table)
        metrics = sorted({m for r in rules.candidates().values() for m in r.metrics})
        cell.histories = {r.trial: {m: runs.metric_timeline(ran.uri, r.run_id, m) for m in metrics} for r in table}
        probes = {r.trial: r.metrics.get(rules.PROBE) for r in table}
        for trial, parent in ran.seeds:
            again = [r.metrics.get(rules.PROBE) for r in rows(ran.uri, ran.exp_id, parent)[0] if r.status == "FINISHED"]
            if again and rules.finite(again[0]) and rules.finite(probes.get(trial)):
                cell.seed_pairs.append((trial, probes[trial], again[0]))
        out.append(cell)
    return out


def _f(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.{digits}f}"


def rule_table(rule_set: dict[str, rules.Rule], cells: list[BenchCell]) -> list[dict]:
    """Per rule over ``cells``: mean and worst regret, mean tau and rho, top-3 hits, cells within 1
    point, and the mean regret over the judgeable cells alone."""
    out = []
    for name, rule in rule_set.items():
        vs = [rules.judge(rule, c.cell.trials) for c in cells]
        reg = [v.regret for v in vs if v.regret is not None]
        judged = [v.regret for v, c in zip(vs, cells) if v.regret is not None and c.judgeable()]
        taus = [v.tau for v in vs if v.tau is not None]
        rhos = [v.rho for v in vs if v.rho is not None]
        out.append({
            "rule": name, "mean_regret": float(np.mean(reg)) if reg else None, "worst": max(reg) if reg else None,
            "tau": float(np.mean(taus)) if taus else None, "rho": float(np.mean(rhos)) if rhos else None,
            "top3": sum(bool(v.top3) for v in vs), "within1": sum(r <= 1.0 for r in reg), "cells": len(reg),
            "judged_mean": float(np.mean(judged)) if judged else None, "judged": len(judged),
        })
    return out


@dataclass
class AshaResult:
    cell: str
    oracle_stopped: bool
    regret_full: float | None
    regret_asha: float | None
    regret_budget: float | None
    """The default rule's regret among the first trials (start order) that the epochs ASHA
    trained would have run to the end without ASHA."""
    epoch_share: float


def asha_replay(cell: BenchCell, metric: str, grace: int, rf: float, relative: bool = False) -> AshaResult | None:
    """ASHA on ``metric`` over this cell's logged histories: is the label-based best stopped (every
    trial with the best probe accuracy), the
    default rule's regret among the survivors vs among all trials, and the share of epochs kept.
    None where ASHA has no rung before the last epoch (``grace`` >= the cell's epochs): nothing to replay."""
    if grace >= cell.epochs:
        return None
    trials = {r.trial: r for r in cell.cell.trials}
    events = [(ts, t, ep, v) for t in trials for ep, v, ts in cell.histories.get(t, {}).get(metric, [])]
    best = rules.oracle(list(trials.values()))
    if not events or best is None:
        return None
    if relative:
        events = asha.relative(events)
    result = asha.replay(events, grace, cell.epochs, rf)
    survivors = [r for t, r in trials.items() if t not in result.stopped]
    default = SELECTORS[DEFAULT]
    full = rules.judge(default, list(trials.values()))
    regret_of = lambda trials: (  # noqa: E731  (the default's pick among ``trials``, against the best of all)
        100 * (best.metrics[rules.PROBE] - v.pick.metrics[rules.PROBE]) if (v := rules.judge(default, trials)).pick else None)
    regret = regret_of(survivors)
    share = result.epochs / max(1, len(trials) * cell.epochs)
    first = list(trials.values())[: max(1, round(share * len(trials)))]
    regret_budget = regret_of(first)
    lost = max((r.metrics[rules.PROBE] for r in survivors if rules.finite(r.metrics.get(rules.PROBE))), default=-1.0) < best.metrics[rules.PROBE]
    return AshaResult(cell.name, lost, full.regret, regret, regret_budget, share)


def markdown(cells: list[BenchCell], command: str, wall_s: float) -> str:
    """The whole benchmark as Markdown: matrix, criteria, rules overall, leave-one-dataset-out, the
    record per family and modality, per-cell verdicts, ASHA."""
    candidates = rules.candidates()
    n_trials = [len(c.table) for c in cells]
    judgeable = [c for c in cells if c.judgeable()]
    lines = [
        "# Label-free selection benchmark",
        "",
        f"`{command}`: {len(cells)} cells ({len({c.method for c in cells})} methods of {len({c.family for c in cells})} families "
        f"({', '.join(sorted({c.family for c in cells}))}) on {len({c.dataset for c in cells})} datasets of "
        f"{len({c.modality for c in cells})} modalities ({', '.join(dict.fromkeys(c.modality for c in cells))})), "
        f"{min(n_trials)}-{max(n_trials)} trials each, sampled at random from `search_spaces/<method>.yaml` and trained "
        f"to the end, and the best {min(len(c.seed_pairs) for c in cells)}-{max(len(c.seed_pairs) for c in cells)} trial(s) of each "
        "trained again with another seed. The cells took "
        f"{sum(c.wall_s for c in cells if math.isfinite(c.wall_s)) / 60:.0f} min of wall time on this machine "
        f"({', '.join(f'{c.name} {c.wall_s:.0f} s' for c in cells)}); this call took {wall_s / 60:.0f} min (a cell that finished "
        "before is read back from MLflow).",
        "",
        "Regret: the best trial's linear-probe accuracy minus the pick's, in points; tau, rho: Kendall and Spearman rank",
        "correlation of the rule's score with probe accuracy over the cell's finished trials; top-3: the best trial is among",
        "the rule's three best-scored. Probes are cross-validated (5 folds) over every labelled sample of the dataset, so",
        "test noise is one binomial standard error over all of them; seed noise is the standard deviation of a trial's",
        "probe accuracy between two seeds (pooled over the cell's replicated trials); a cell is *judgeable* when its probe",
        f"range is at least {NOISE_SE:g} times the two together: elsewhere the trials differ by no more than a rerun would,",
        "and no selector can be told from another.",
        "",
        "## Cells",
        "",
        "| cell | family | modality | finished / trials | epochs | probe range | test noise | seed noise (pairs) | judgeable | "
        + " | ".join(f"{n} regret" for n in ("rankme", "lidar")) + " |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        span = c.probe_range()
        rng = "-" if span is None else f"{span[0]:.3f}-{span[1]:.3f}"
        regrets = [_f(rules.judge(SELECTORS[n], c.cell.trials).regret) for n in ("rankme", "lidar")]
        lines.append(f"| {c.name} | {c.family} | {c.modality} | {len(c.cell.trials)} / {len(c.table)} | {c.epochs} | {rng} | "
                     f"{_f(c.test_noise())} | {_f(c.seed_noise())} ({len(c.seed_pairs)}) | {_f(c.judgeable())} | " + " | ".join(regrets) + " |")
    seed = [c.seed_noise() for c in cells if c.seed_noise() is not None]
    test = [c.test_noise() for c in cells if c.test_noise() is not None]
    lines += [
        "",
        f"{len(judgeable)} of {len(cells)} cells are judgeable. Test noise: median {_f(float(np.median(test)) if test else None)} points "
        f"(largest {_f(max(test, default=None))}); seed noise: median {_f(float(np.median(seed)) if seed else None)} points "
        f"(largest {_f(max(seed, default=None))}).",
        "",
        "## Each criterion on its own",
        "",
        "The panel's metrics as selectors (`label_free/<name>`, higher is better except `mst_id`): over every cell, and over",
        "the judgeable cells alone. DSE is measured on token encoders only (the ViT cells).",
        "",
        "| criterion | cells | mean regret | worst cell | mean Kendall tau | mean Spearman rho | top-3 hits | judgeable cells | mean regret there |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rule_table(dict(rules.METRIC_RULES), cells):
        lines.append(f"| {row['rule']} | {row['cells']} | {_f(row['mean_regret'])} | {_f(row['worst'])} | {_f(row['tau'])} | {_f(row['rho'])} | "
                     f"{row['top3']}/{row['cells']} | {row['judged']} | {_f(row['judged_mean'])} |")
    lines += ["", "## Every candidate rule over all cells", "",
              "| rule | mean regret | worst cell | mean tau | mean rho | top-3 hits | cells <= 1 pt | mean regret, judgeable cells |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in sorted(rule_table(candidates, cells), key=lambda r: (r["cells"] < len(cells), r["mean_regret"] is None, r["mean_regret"] or 0)):
        lines.append(f"| {row['rule']}{' (default)' if row['rule'] == DEFAULT else ''} | {_f(row['mean_regret'])} | {_f(row['worst'])} | {_f(row['tau'])} | "
                     f"{_f(row['rho'])} | {row['top3']}/{row['cells']} | {row['within1']}/{row['cells']} | {_f(row['judged_mean'])} |")
    lines += ["", *lodo_section(candidates, cells), "", *record_section(cells), "", "## Every selector on every cell", "",
              "| cell | selector | picks | probe | regret | regret / noise | tau | rho | top-3 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        for name, rule in SELECTORS.items():
            v = rules.judge(rule, c.cell.trials)
            probe = v.pick.metrics.get(rules.PROBE) if v.pick else None
            ratio = v.regret / c.noise() if v.regret is not None and c.noise() else None
            lines.append(f"| {c.name} | {name}{' (default)' if name == DEFAULT else ''} | {v.pick.trial if v.pick else '-'} | {_f(probe, 3)} | "
                         f"{_f(v.regret)} | {_f(ratio, 1)} | {_f(v.tau)} | {_f(v.rho)} | {_f(v.top3)} |")
    lines += ["", *distrust_section(cells), "", *asha_section(cells)]
    return "\n".join(lines) + "\n"


TARGET = "mean held-out regret <= 1 point, no cell above 2, below RankMe alone and LiDAR alone"


def lodo(candidates: dict[str, rules.Rule], cells: list[BenchCell], by_family: bool) -> tuple[list[rules.Fold], float, float]:
    """Leave-one-dataset-out folds and their held-out regrets' mean and worst."""
    folds = rules.leave_one_dataset_out(candidates, [c.cell for c in cells], by_family=by_family)
    held = [r for f in folds for r in f.regrets.values() if r is not None]
    return folds, (float(np.mean(held)) if held else math.nan), (max(held) if held else math.nan)


def lodo_section(candidates: dict[str, rules.Rule], cells: list[BenchCell]) -> list[str]:
    alone = {n: rules.mean_regret(candidates[n], [c.cell for c in cells]) for n in ("rankme", "lidar")}
    worst_alone = {n: max((r for c in cells if (r := rules.judge(candidates[n], c.cell.trials).regret) is not None), default=math.nan)
                   for n in ("rankme", "lidar")}
    lines = [
        "## The default rule, chosen leave-one-dataset-out",
        "",
        "For each dataset, the rule with the lowest mean regret on the other datasets' cells is scored on this dataset's cells",
        "(pooled); or, per method family, the rule chosen on the other datasets' cells of the held-out cell's family (all of",
        "them where the family has no other cell).",
        "",
        "| held-out dataset | pooled: rule chosen on the others | held-out regrets | by family: rules chosen | held-out regrets |",
        "| --- | --- | --- | --- | --- |",
    ]
    pooled, mean_p, worst_p = lodo(candidates, cells, by_family=False)
    family, mean_f, worst_f = lodo(candidates, cells, by_family=True)
    for fp, ff in zip(pooled, family):
        lines.append(f"| {fp.dataset} | {fp.rule.name} | " + ", ".join(f"{k} {_f(v)}" for k, v in fp.regrets.items()) + " | "
                     + ", ".join(f"{k}: {r.name}" for k, r in ff.by_cell.items()) + " | " + ", ".join(f"{k} {_f(v)}" for k, v in ff.regrets.items()) + " |")
    chosen = rules.choose(candidates, [c.cell for c in cells])
    met = lambda mean, worst: mean <= 1 and worst <= 2 and mean < min(alone.values())  # noqa: E731
    lines += [
        "",
        "| choice | mean held-out regret | worst held-out cell | target met |",
        "| --- | --- | --- | --- |",
        f"| pooled | {mean_p:.2f} | {worst_p:.2f} | {_f(met(mean_p, worst_p))} |",
        f"| by family | {mean_f:.2f} | {worst_f:.2f} | {_f(met(mean_f, worst_f))} |",
        f"| RankMe alone (no choice) | {alone['rankme']:.2f} | {worst_alone['rankme']:.2f} | {_f(met(alone['rankme'], worst_alone['rankme']))} |",
        f"| LiDAR alone (no choice) | {alone['lidar']:.2f} | {worst_alone['lidar']:.2f} | {_f(met(alone['lidar'], worst_alone['lidar']))} |",
        "",
        f"Chosen on all datasets, pooled: **{chosen.name}** ({chosen.description}), mean regret "
        f"{rules.mean_regret(chosen, [c.cell for c in cells]):.2f} on the cells it was chosen on (its held-out estimate is the pooled row).",
        "Per family: " + ", ".join(f"{fam} **{r.name}**" for fam, r in rules.choose_by_family(candidates, [c.cell for c in cells]).items()) + ".",
        default_line(chosen, [c.cell for c in cells]),
        f"Target (issue 25): {TARGET}: " + ("met." if met(mean_p, worst_p) or met(mean_f, worst_f) else "**not met**."),
    ]
    return lines


def default_line(chosen: rules.Rule, cells: list[rules.Cell]) -> str:
    """The default rule's mean and worst regret, and how far it is from the rule chosen on all the
    datasets where that is another."""
    regrets = lambda rule: [r for c in cells if (r := rules.judge(rule, c.trials).regret) is not None]  # noqa: E731
    mine = regrets(SELECTORS[DEFAULT])
    line = f"The default rule is **{DEFAULT}** (mean regret {np.mean(mine):.2f} over all cells, {max(mine):.2f} at worst)"
    if chosen.name == DEFAULT:
        return line + "."
    theirs = regrets(chosen)
    return (line + f": {np.mean(mine) - np.mean(theirs):.3f} points above {chosen.name} on average ({max(theirs):.2f} at worst), and a "
            "single metric, unlike a rank aggregation, can be a sweep's objective (what Tune's search and ASHA's stops follow).")


def record(cells: list[BenchCell], rule: rules.Rule, key: str) -> dict[str, dict]:
    """``rule``'s record per value of ``key`` (``family`` or ``modality``): cells, judgeable cells,
    mean and worst regret over the judgeable ones and over all."""
    out = {}
    for value in dict.fromkeys(getattr(c, key) for c in cells):
        group = [c for c in cells if getattr(c, key) == value]
        regret = {c.name: rules.judge(rule, c.cell.trials).regret for c in group}
        judged = [regret[c.name] for c in group if c.judgeable() and regret[c.name] is not None]
        every = [r for r in regret.values() if r is not None]
        out[value] = {
            "cells": [c.name for c in group], "judgeable": [c.name for c in group if c.judgeable()],
            "mean_regret": float(np.mean(every)) if every else None, "worst_regret": max(every, default=None),
            "mean_regret_judgeable": float(np.mean(judged)) if judged else None, "worst_regret_judgeable": max(judged, default=None),
        }
    return out


def record_section(cells: list[BenchCell]) -> list[str]:
    lines = ["## The default rule by method family and by modality", "",
             "What every sweep report quotes for its own method family and modality (`selfsup/report/benchmark.json`).", "",
             "| group | cells | judgeable | mean regret | worst | mean regret, judgeable cells |", "| --- | --- | --- | --- | --- | --- |"]
    for key in ("family", "modality"):
        for value, r in record(cells, SELECTORS[DEFAULT], key).items():
            lines.append(f"| {key} {value} | {len(r['cells'])} | {len(r['judgeable'])} | {_f(r['mean_regret'])} | {_f(r['worst_regret'])} | "
                         f"{_f(r['mean_regret_judgeable'])} |")
    return lines


def benchmark_record(cells: list[BenchCell], command: str) -> dict:
    """What the sweep reports read (``selfsup.report.selection.benchmark``): each cell's family,
    modality, noise, judgeability and every selector's regret, and the default's record per family
    and per modality."""
    return {
        "command": command,
        "default": DEFAULT,
        "cells": {c.name: {"method": c.method, "dataset": c.dataset, "family": c.family, "modality": c.modality, "judgeable": c.judgeable(),
                           "noise": c.noise(), "regret": {n: rules.judge(r, c.cell.trials).regret for n, r in SELECTORS.items()}} for c in cells},
        "family": record(cells, SELECTORS[DEFAULT], "family"),
        "modality": record(cells, SELECTORS[DEFAULT], "modality"),
    }


def distrust_section(cells: list[BenchCell]) -> list[str]:
    """The default rule's regret where RankMe and LiDAR agree on the pick and where they do not: a
    signal a sweep without labels can see."""
    default, agree, disagree = SELECTORS[DEFAULT], [], []
    for c in cells:
        r, li = (rules.judge(SELECTORS[n], c.cell.trials).pick for n in ("rankme", "lidar"))
        v = rules.judge(default, c.cell.trials)
        if v.regret is not None and r is not None and li is not None:
            (agree if r is li else disagree).append((c.name, v.regret))
    mean = lambda xs: _f(float(np.mean([x for _, x in xs])) if xs else None)  # noqa: E731
    worst = lambda xs: _f(max((x for _, x in xs), default=None))  # noqa: E731
    return [
        "## When to distrust the pick",
        "",
        "The default rule's regret on the cells where RankMe and LiDAR pick the same trial, and where they do not (a sweep",
        "without labels can see this; its report says which it is).",
        "",
        "| RankMe and LiDAR | cells | default's mean regret | worst |",
        "| --- | --- | --- | --- |",
        f"| agree | {len(agree)} | {mean(agree)} | {worst(agree)} |",
        f"| disagree | {len(disagree)} | {mean(disagree)} | {worst(disagree)} |",
    ]


def asha_section(cells: list[BenchCell]) -> list[str]:
    metrics = list(dict.fromkeys([SELECTORS[DEFAULT].metric, rules.RANKME]))
    half = lambda c: max(GRACE, c.epochs // 2)  # noqa: E731
    variants = [(f"grace {GRACE}", lambda c: GRACE, False), (f"grace {GRACE}, relative to epoch 1", lambda c: GRACE, True),
                ("grace = half the epochs", half, False)]
    lines = [
        "## ASHA on a label-free objective, replayed",
        "",
        f"ASHA (reduction factor {RF:g}) replayed on each cell's logged objective per epoch, in the order the results arrived",
        "(`selfsup.report.asha`), driven by the default rule's metric and by RankMe. Oracle stopped: ASHA would have stopped",
        "every trial with the best final probe. Regret: the default rule's pick among the trials ASHA lets finish (against the",
        "best of all trials), its pick among all trials (the same trials without ASHA), and its pick among as many",
        "first-started trials as ASHA's epochs would have trained to the end without ASHA (the same budget). Only the cells",
        "whose epochs go past the grace period: in the others ASHA has no rung before the end.",
        "",
        "| objective | variant | oracle stopped | mean regret with ASHA | without ASHA, all trials | without ASHA, same budget | epochs trained | oracle stopped in |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    mean = lambda xs: _f(float(np.mean(xs)) if xs else None)  # noqa: E731
    for metric in metrics:
        for label, grace, relative in variants:
            res = [r for c in cells if (r := asha_replay(c, metric, grace(c), RF, relative)) is not None]
            if not res:
                continue
            reg = [r.regret_asha for r in res if r.regret_asha is not None]
            full = [r.regret_full for r in res if r.regret_full is not None]
            same = [r.regret_budget for r in res if r.regret_budget is not None]
            lines.append(f"| {metric} | {label} | {sum(r.oracle_stopped for r in res)}/{len(res)} | {mean(reg)} | {mean(full)} | {mean(same)} | "
                         f"{100 * float(np.mean([r.epoch_share for r in res])):.0f}% | {', '.join(r.cell for r in res if r.oracle_stopped) or '-'} |")
    return lines


def plot_cells(cells: list[BenchCell], path: Path) -> None:
    """One panel per cell: the default rule's metric (x) against probe accuracy (y); pick circled, oracle starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = SELECTORS[DEFAULT]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(cells) / cols), cols, figsize=(3.6 * cols, 3.0 * math.ceil(len(cells) / cols)), squeeze=False)
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    for ax, c in zip(axes.flat, cells):
        trials = [t for t in default.scorable(c.cell.trials) if rules.finite(t.metrics.get(rules.PROBE))]
        if not trials:
            ax.set_title(f"{c.name}: no trials", fontsize=9)
            continue
        xs = [t.metrics[default.metric] for t in trials]
        ax.scatter(xs, [t.metrics[rules.PROBE] for t in trials], s=14)
        v = rules.judge(default, trials)
        o = rules.oracle(trials)
        ax.scatter([v.pick.metrics[default.metric]], [v.pick.metrics[rules.PROBE]], s=110, facecolors="none", edgecolors="tab:red")
        ax.scatter([o.metrics[default.metric]], [o.metrics[rules.PROBE]], marker="*", s=120, color="tab:green")
        ax.set_title(f"{c.name}: regret {_f(v.regret)}, tau {_f(v.tau)}", fontsize=9)
        ax.set_xlabel(default.metric, fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_regrets(cells: list[BenchCell], path: Path) -> None:
    """Regret of each selector per cell (grouped bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(cells)), 3.6))
    width = 0.8 / len(SELECTORS)
    for i, (name, rule) in enumerate(SELECTORS.items()):
        reg = [rules.judge(rule, c.cell.trials).regret for c in cells]
        ax.bar(np.arange(len(cells)) + i * width, [r if r is not None else 0 for r in reg], width, label=name)
    ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2, [c.name for c in cells], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("regret (points)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def results_json(cells: list[BenchCell]) -> str:
    """Every trial's final metrics per cell and the seed pairs, for rerunning the analysis without MLflow."""
    return json.dumps({c.name: {"dataset": c.dataset, "method": c.method, "family": c.family, "modality": c.modality,
                                "seed_pairs": c.seed_pairs,
                                "trials": {r.trial: {"status": r.status, "params": r.params, "metrics": r.metrics} for r in c.table}}
                       for c in cells}, indent=1)


def write_summary(cells: list[BenchCell], out: Path, command: str, wall_s: float, record_path: Path) -> str:
    """Write ``out/selection.md``, ``out/selection/{cells,regrets}.png``, every trial's final
    metrics ``out/selection/trials.json`` and the reports' record ``record_path``, log them on a
    ``benchmark`` run in the cells' experiment; return the Markdown."""
    text = markdown(cells, command, wall_s)
    figures = out / "selection"
    figures.mkdir(parents=True, exist_ok=True)
    plot_cells(cells, figures / "cells.png")
    plot_regrets(cells, figures / "regrets.png")
    (figures / "trials.json").write_text(results_json(cells))
    record_path.write_text(json.dumps(benchmark_record(cells, command), indent=1) + "\n")
    (out / "selection.md").write_text(text + "\n![cells](selection/cells.png)\n![regrets](selection/regrets.png)\n")
    uri, exp_id = cells[0].uri, cells[0].exp_id
    run = runs.start_run(uri, exp_id, "selection-benchmark", {runs.ROLE: "benchmark"})
    runs.log_text(uri, run, text, "selection.md")
    for path in (figures / "trials.json", figures / "cells.png", figures / "regrets.png", record_path):
        runs.log_file(uri, run, str(path))
    runs.set_tags(uri, run, {runs.NOTE: text})
    runs.end_run(uri, run, "FINISHED")
    return text
