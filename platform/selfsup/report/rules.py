"""Label-free selection rules, how one is judged against the labels, and how the default is chosen.

A *rule* scores the finished trials of one sweep (higher is better) from their final label-free
metrics and picks the best-scoring one. Single-metric rules read one metric (RankMe, Garrido et al.
2023; LiDAR, Thilak et al. 2024; alpha-ReQ, Agrawal et al. 2022); combined rules aggregate the
trials' ranks under several metrics, or pick by one metric among the trials another one does not
rule out (a gate). A rule is judged on a sweep with labels by:

- regret: the best trial's probe accuracy minus the pick's, in points;
- Kendall tau and Spearman rho between the rule's scores and probe accuracy;
- top-3 hit: the best trial is among the rule's three best-scored trials.

:func:`leave_one_dataset_out` chooses a rule honestly: for each dataset, the rule with the lowest
mean regret on the *other* datasets' sweeps is scored on the left-out one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

RANKME, RANKME_PROJ, LIDAR, ALPHA = ("label_free/rankme", "label_free/rankme_projector", "label_free/lidar", "label_free/alpha_req")
LIDAR_AUG = "label_free/lidar_aug"
"""LiDAR of a masked method's backbone under the modality's augmentations (not its own contexts)."""
TWONN, MST_ID, AUG_CONSISTENCY, DSE = ("label_free/twonn_id", "label_free/mst_id", "label_free/aug_consistency", "label_free/dse")
CL = "label_free/cluster_learnability"
PROBE = "probe/linear_acc"


class Scored(Protocol):
    """What a rule reads from a trial: its final metrics."""

    metrics: dict[str, float]


def finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def metric_value(metric: str, value: float) -> float:
    """A metric's value on the 'higher is better' scale: alpha-ReQ counts by its distance to 1, the
    MST dimension negated (IdEst: the lower, the better the probe)."""
    if metric == ALPHA:
        return -abs(value - 1.0)
    return -value if metric == MST_ID else value


def ranks(values: Sequence[float]) -> np.ndarray:
    """Average ranks, 1 = smallest (ties share the mean of their ranks)."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(values, dtype=float))


@dataclass(frozen=True)
class Rule:
    """A label-free selection rule: ``scores`` maps a sweep's trials to scores, higher is better.

    ``metrics`` are the metrics it reads (a trial missing one is not scored); ``metric`` is the one
    a sweep can use as Tune's objective for it (the rule's leading metric)."""

    name: str
    description: str
    metrics: tuple[str, ...]
    scores: Callable[[list[Scored]], list[float]]

    @property
    def metric(self) -> str:
        return self.metrics[0]

    def scorable(self, trials: Sequence[Scored]) -> list[Scored]:
        return [t for t in trials if all(finite(t.metrics.get(m)) for m in self.metrics)]


def single(name: str, metric: str, description: str) -> Rule:
    return Rule(name, description, (metric,), lambda ts: [metric_value(metric, t.metrics[metric]) for t in ts])


def mean_rank(*metrics: str) -> Rule:
    """Rank aggregation (Borda): the mean of each trial's ranks under the metrics."""

    def scores(ts):
        return list(np.mean([ranks([metric_value(m, t.metrics[m]) for t in ts]) for m in metrics], axis=0))

    short = "+".join(SHORT[m] for m in metrics)
    return Rule(f"mean_rank({short})", f"best mean rank under {', '.join(SHORT[m] for m in metrics)}", tuple(metrics), scores)


def gated(lead: str, gate: str, keep: float) -> Rule:
    """``lead`` among the trials whose ``gate`` (a positive metric: RankMe, LiDAR) is at least
    ``keep`` times the sweep's best ``gate`` value; the others score below every kept trial."""

    def scores(ts):
        g = np.array([t.metrics[gate] for t in ts])
        lead_v = np.array([metric_value(lead, t.metrics[lead]) for t in ts])
        below = lead_v - (lead_v.max() - lead_v.min() + 1.0)
        return list(np.where(g >= keep * g.max(), lead_v, below))

    name = f"{SHORT[lead]}|{SHORT[gate]}>={keep:g}"
    return Rule(name, f"highest {SHORT[lead]} among trials with {SHORT[gate]} >= {keep:g} x the best", (lead, gate), scores)


def lidar_aug_for_masked() -> Rule:
    """LiDAR, measured for the masked methods (whose sweeps log ``label_free/lidar_aug``) under the
    modality's augmentations instead of their own random contexts."""

    def scores(ts):
        metric = LIDAR_AUG if all(finite(t.metrics.get(LIDAR_AUG)) for t in ts) else LIDAR
        return [t.metrics[metric] for t in ts]

    return Rule("lidar(aug for masked)", "highest LiDAR; for masked methods, under augmentations (label_free/lidar_aug)", (LIDAR,), scores)


SHORT = {RANKME: "rankme", RANKME_PROJ: "rankme_projector", LIDAR: "lidar", ALPHA: "alpha_req", TWONN: "twonn_id", MST_ID: "mst_id",
         AUG_CONSISTENCY: "aug_consistency", DSE: "dse", CL: "cluster_learnability"}

METRIC_RULES = {
    r.name: r
    for r in (
        single("rankme", RANKME, "highest RankMe of the backbone (Garrido et al. 2023)"),
        single("rankme_projector", RANKME_PROJ, "highest RankMe of the projector output"),
        single("lidar", LIDAR, "highest LiDAR of the backbone (Thilak et al. 2024)"),
        single("alpha_req", ALPHA, "eigenspectrum decay alpha closest to 1 (Agrawal et al. 2022)"),
        single("twonn_id", TWONN, "highest TwoNN intrinsic dimension: expressiveness (Facco et al. 2017; Lu et al. 2022)"),
        single("mst_id", MST_ID, "lowest minimum-spanning-tree intrinsic dimension (IdEst, Mordacq et al. 2026)"),
        single("aug_consistency", AUG_CONSISTENCY, "most views whose nearest views are their own sample's"),
        single("dse", DSE, "highest DSE of the patch tokens: dense structure (Dai et al. 2025; token encoders only)"),
        single("cluster_learnability", CL, "highest kNN accuracy on the embedding's own k-means labels (Lu et al. 2023)"),
        Rule("clid", "best mean rank under cluster learnability and TwoNN dimension (CLID, Lu et al. 2023)", (CL, TWONN),
             mean_rank(CL, TWONN).scores),
    )
}
"""The panel's metrics, each as a rule on its own, and CLID (two of them by mean rank)."""


def candidates() -> dict[str, Rule]:
    """Every rule the default is chosen from: the metrics alone, rank aggregations of RankMe and
    LiDAR with each other and with each newer criterion, and gates."""
    rules = dict(METRIC_RULES)
    aug = lidar_aug_for_masked()
    rules[aug.name] = aug
    for combo in ((RANKME, LIDAR), (RANKME, ALPHA), (LIDAR, ALPHA), (RANKME, LIDAR, ALPHA),
                  (RANKME, AUG_CONSISTENCY), (LIDAR, AUG_CONSISTENCY), (RANKME, LIDAR, AUG_CONSISTENCY),
                  (RANKME, TWONN), (LIDAR, TWONN), (RANKME, MST_ID), (LIDAR, MST_ID), (RANKME, CL), (LIDAR, CL),
                  (AUG_CONSISTENCY, CL), (RANKME, LIDAR, TWONN)):
        r = mean_rank(*combo)
        rules[r.name] = r
    for lead, gate in ((LIDAR, RANKME), (RANKME, LIDAR)):
        for keep in (0.5, 0.75, 0.9):
            r = gated(lead, gate, keep)
            rules[r.name] = r
    return rules


@dataclass
class Verdict:
    """One rule on one sweep: its pick and, with labels, how good that pick is."""

    rule: Rule
    pick: Scored | None
    regret: float | None = None
    tau: float | None = None
    rho: float | None = None
    top3: bool | None = None
    ranked: list[Scored] = field(default_factory=list)


def oracle(trials: Sequence[Scored]) -> Scored | None:
    """The trial with the best linear probe (the label-based best)."""
    labelled = [t for t in trials if finite(t.metrics.get(PROBE))]
    return max(labelled, key=lambda t: t.metrics[PROBE]) if labelled else None


def rank_correlations(scores: Sequence[float], accuracy: Sequence[float]) -> tuple[float | None, float | None]:
    """Kendall tau and Spearman rho (None below 3 trials or when either side is constant)."""
    from scipy.stats import kendalltau, spearmanr

    if len(scores) < 3 or len(set(scores)) < 2 or len(set(accuracy)) < 2:
        return None, None
    return float(kendalltau(scores, accuracy).statistic), float(spearmanr(scores, accuracy).statistic)


def judge(rule: Rule, trials: Sequence[Scored]) -> Verdict:
    """The rule's pick among ``trials`` (the finished, uncollapsed ones) and, where the trials
    have probe accuracies, its regret, rank correlations and top-3 hit."""
    scored = rule.scorable(trials)
    if not scored:
        return Verdict(rule, None)
    s = rule.scores(scored)
    order = sorted(range(len(scored)), key=lambda i: -s[i])
    v = Verdict(rule, scored[order[0]], ranked=[scored[i] for i in order])
    best = oracle(trials)
    if best is None or not finite(v.pick.metrics.get(PROBE)):
        return v
    v.regret = 100 * (best.metrics[PROBE] - v.pick.metrics[PROBE])
    labelled = [i for i in range(len(scored)) if finite(scored[i].metrics.get(PROBE))]
    v.tau, v.rho = rank_correlations([s[i] for i in labelled], [scored[i].metrics[PROBE] for i in labelled])
    v.top3 = any(scored[i] is best for i in order[:3])
    return v


@dataclass
class Cell:
    """One sweep of the benchmark: a method (of ``family``) on a dataset, its finished trials."""

    name: str
    dataset: str
    method: str
    trials: list[Scored]
    family: str = ""


def mean_regret(rule: Rule, cells: Sequence[Cell]) -> float:
    regrets = [judge(rule, c.trials).regret for c in cells]
    regrets = [r for r in regrets if r is not None]
    return float(np.mean(regrets)) if regrets else math.inf


def choose(rules: dict[str, Rule], cells: Sequence[Cell]) -> Rule:
    """The rule with the lowest mean regret over ``cells``; ties go to the lower worst-cell regret,
    then to the earlier rule (the metrics alone come first). A rule that cannot score a cell with
    labels (DSE on a CNN's cell) is not chosen while another can score them all."""

    def key(item):
        rule = item[1]
        judged = [judge(rule, c.trials).regret for c in cells if oracle(c.trials) is not None]
        if any(r is None for r in judged):
            return (1, math.inf, math.inf)
        judged = judged or [math.inf]
        return (0, round(float(np.mean(judged)), 9), round(max(judged), 9))

    return min(rules.items(), key=key)[1]


@dataclass
class Fold:
    """Leave-one-dataset-out: the rule chosen without ``dataset`` and its regrets on it."""

    dataset: str
    rule: Rule
    regrets: dict[str, float | None]
    by_cell: dict[str, Rule] = field(default_factory=dict)
    """The rule each held-out cell was scored with (``rule`` for all but a by-family choice)."""


def leave_one_dataset_out(rules: dict[str, Rule], cells: Sequence[Cell], by_family: bool = False) -> list[Fold]:
    """For each dataset, choose a rule on the other datasets' cells and score it on this one's.
    ``by_family``: each held-out cell gets the rule chosen on the other datasets' cells of its
    method family (on all the other datasets' cells where its family has none). The choice for a
    held-out cell is among the rules that can score its trials (DSE only where the encoder has
    patch tokens): that is known without labels, as a sweep knows which metrics its trials logged."""
    folds = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        others = [c for c in cells if c.dataset != dataset]
        held, by_cell = {}, {}
        for c in (c for c in cells if c.dataset == dataset):
            usable = {name: r for name, r in rules.items() if judge(r, c.trials).pick is not None}
            kin = [o for o in others if o.family == c.family] if by_family else []
            by_cell[c.name] = rule = choose(usable, kin or others)
            held[c.name] = judge(rule, c.trials).regret
        folds.append(Fold(dataset, next(iter(by_cell.values())), held, by_cell))
    return folds


def choose_by_family(rules: dict[str, Rule], cells: Sequence[Cell]) -> dict[str, Rule]:
    """Per method family, the rule with the lowest mean regret on that family's cells."""
    return {family: choose(rules, [c for c in cells if c.family == family]) for family in dict.fromkeys(c.family for c in cells)}
