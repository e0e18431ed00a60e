"""Selection rules on hand-made tables: regret, tau, rho, top-3, rank aggregation, gates, the
leave-one-dataset-out choice, and ASHA replayed against Ray's own bracket."""

from dataclasses import dataclass, field

import numpy as np
import pytest

from selfsup.report import asha, rules
from selfsup.report.rules import ALPHA, LIDAR, PROBE, RANKME, Cell


@dataclass
class T:
    trial: str
    metrics: dict = field(default_factory=dict)


def t(name, probe, rankme=None, lidar=None, alpha=None):
    m = {PROBE: probe}
    for key, v in ((RANKME, rankme), (LIDAR, lidar), (ALPHA, alpha)):
        if v is not None:
            m[key] = v
    return T(name, m)


TABLE = [t("a", 0.80, rankme=50, lidar=10, alpha=0.5), t("b", 0.90, rankme=40, lidar=30, alpha=0.9),
         t("c", 0.85, rankme=45, lidar=20, alpha=1.5), t("d", 0.70, rankme=60, lidar=5, alpha=3.0)]


def test_single_metric_rule_by_hand():
    v = rules.judge(rules.METRIC_RULES["rankme"], TABLE)
    assert v.pick.trial == "d" and v.regret == pytest.approx(20.0)  # 0.90 - 0.70
    # RankMe order d > a > c > b is the probe order reversed: tau = rho = -1
    assert v.tau == pytest.approx(-1.0) and v.rho == pytest.approx(-1.0)
    assert v.top3 is False  # b is RankMe's last
    v = rules.judge(rules.METRIC_RULES["lidar"], TABLE)
    assert v.pick.trial == "b" and v.regret == 0.0 and v.tau == pytest.approx(1.0) and v.top3
    # alpha closest to 1: b (0.1), a (0.5), c (0.5 -> tie with a), d (2.0)
    v = rules.judge(rules.METRIC_RULES["alpha_req"], TABLE)
    assert v.pick.trial == "b" and [x.trial for x in v.ranked][-1] == "d"


def test_spearman_and_kendall_by_hand():
    # scores 1, 2, 3, 4 against probe ranks 1, 3, 2, 4: one discordant pair of six
    tau, rho = rules.rank_correlations([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4])
    assert tau == pytest.approx((5 - 1) / 6)
    assert rho == pytest.approx(1 - 6 * (0 + 1 + 1 + 0) / (4 * 15))


def test_top3_is_about_the_oracle_among_the_three_best_scored():
    table = [t(str(i), p, rankme=s) for i, (p, s) in enumerate([(0.9, 1), (0.5, 4), (0.6, 3), (0.7, 2)])]
    v = rules.judge(rules.METRIC_RULES["rankme"], table)
    assert v.pick.trial == "1" and v.regret == pytest.approx(40.0) and v.top3 is False  # oracle "0" is scored last
    table[3].metrics[RANKME] = 0.5  # now "3" is last; the oracle moves into the top 3
    assert rules.judge(rules.METRIC_RULES["rankme"], table).top3 is True


def test_mean_rank_aggregates_ranks_not_values():
    r = rules.mean_rank(RANKME, LIDAR)
    # rankme ranks a=3, b=1, c=2, d=4; lidar ranks a=2, b=4, c=3, d=1 -> means 2.5, 2.5, 2.5, 2.5: a tie, the first wins
    assert r.scores(TABLE) == [2.5, 2.5, 2.5, 2.5]
    table = [t("x", 0.9, rankme=1, lidar=100), t("y", 0.8, rankme=2, lidar=200), t("z", 0.7, rankme=3, lidar=1)]
    # ranks (1 = lowest): x (1, 2) -> 1.5, y (2, 3) -> 2.5, z (3, 1) -> 2.0
    assert r.scores(table) == [1.5, 2.5, 2.0]
    v = rules.judge(r, table)
    assert v.pick.trial == "y" and v.regret == pytest.approx(10.0)


def test_gate_keeps_trials_near_the_best_gate_value():
    r = rules.gated(LIDAR, RANKME, 0.8)  # LiDAR among trials with RankMe >= 0.8 * 60 = 48: a and d
    s = r.scores(TABLE)
    assert rules.judge(r, TABLE).pick.trial == "a"  # LiDAR 10 > 5; b (30) and c (20) are gated out
    assert min(s[0], s[3]) > max(s[1], s[2])
    assert s[0] > s[3] and s[1] > s[2]  # the order within each group stays LiDAR's


def test_trials_missing_a_metric_are_not_scored():
    table = [*TABLE, t("e", 0.99, rankme=70)]  # no LiDAR: LiDAR cannot pick it, but it is still the oracle
    v = rules.judge(rules.METRIC_RULES["lidar"], table)
    assert v.pick.trial == "b" and v.regret == pytest.approx(9.0)
    assert rules.judge(rules.METRIC_RULES["lidar"], [t("x", 0.5, rankme=3)]).pick is None


def test_leave_one_dataset_out_chooses_on_the_other_datasets():
    good_rankme = [t("p", 0.9, rankme=10, lidar=1), t("q", 0.5, rankme=1, lidar=10)]
    good_lidar = [t("p", 0.5, rankme=10, lidar=1), t("q", 0.9, rankme=1, lidar=10)]
    cells = [Cell("A1", "A", "m", good_rankme), Cell("A2", "A", "m", good_rankme), Cell("B1", "B", "m", good_lidar),
             Cell("C1", "C", "m", good_lidar)]
    pool = {k: rules.METRIC_RULES[k] for k in ("rankme", "lidar")}
    folds = {f.dataset: f for f in rules.leave_one_dataset_out(pool, cells)}
    # without A, LiDAR is perfect on B and C: chosen, and it misses by 40 points on both A cells
    assert folds["A"].rule.name == "lidar" and folds["A"].regrets == {"A1": pytest.approx(40.0), "A2": pytest.approx(40.0)}
    # without B: RankMe misses on C only (mean 40/3), LiDAR on both A cells (80/3)
    assert folds["B"].rule.name == "rankme" and folds["B"].regrets == {"B1": pytest.approx(40.0)}
    assert folds["C"].rule.name == "rankme" and folds["C"].regrets == {"C1": pytest.approx(40.0)}
    # on all cells both have mean 20 and worst 40: the tie goes to the earlier rule
    assert rules.mean_regret(pool["lidar"], cells) == pytest.approx(20.0) == rules.mean_regret(pool["rankme"], cells)
    assert rules.choose(pool, cells).name == "rankme"


def test_leave_one_dataset_out_by_family_chooses_within_the_family():
    good_rankme = [t("p", 0.9, rankme=10, lidar=1), t("q", 0.5, rankme=1, lidar=10)]
    good_lidar = [t("p", 0.5, rankme=10, lidar=1), t("q", 0.9, rankme=1, lidar=10)]
    cells = [Cell("A-x", "A", "x", good_rankme, "jepa"), Cell("A-y", "A", "y", good_lidar, "contrastive"),
             Cell("B-x", "B", "x", good_rankme, "jepa"), Cell("B-y", "B", "y", good_lidar, "contrastive"),
             Cell("C-z", "C", "z", good_lidar, "clustering")]
    pool = {k: rules.METRIC_RULES[k] for k in ("rankme", "lidar")}
    folds = {f.dataset: f for f in rules.leave_one_dataset_out(pool, cells, by_family=True)}
    # each family's rule is right on its held-out cell: no regret on A or B
    assert folds["A"].regrets == {"A-x": 0.0, "A-y": 0.0} and folds["A"].by_cell["A-x"].name == "rankme"
    assert folds["A"].by_cell["A-y"].name == "lidar"
    # clustering has no cell elsewhere: the rule chosen on all of A and B (a tie: rankme, the earlier) misses by 40
    assert folds["C"].regrets == {"C-z": pytest.approx(40.0)}
    assert {f: r.name for f, r in rules.choose_by_family(pool, cells).items()} == {"jepa": "rankme", "contrastive": "lidar", "clustering": "lidar"}
    # pooled, the same choice misses on every cell of the other family
    plain = {f.dataset: f for f in rules.leave_one_dataset_out(pool, cells)}
    assert sorted(plain["A"].regrets.values()) == [0.0, pytest.approx(40.0)]


def test_a_rule_that_cannot_score_a_cell_is_not_chosen():
    cells = [Cell("A", "A", "m", [t("p", 0.9, rankme=1), t("q", 0.5, rankme=2)]),  # no LiDAR here
             Cell("B", "B", "m", [t("p", 0.9, rankme=1, lidar=2), t("q", 0.5, rankme=2, lidar=1)])]
    pool = {k: rules.METRIC_RULES[k] for k in ("lidar", "rankme")}
    # LiDAR is perfect where it can score (B) but cannot score A; RankMe misses by 40 on both
    assert rules.choose(pool, cells).name == "rankme"
    # held out, A gets a rule that can score it: RankMe, though LiDAR is perfect on the others (B)
    folds = {f.dataset: f for f in rules.leave_one_dataset_out(pool, cells)}
    assert folds["A"].rule.name == "rankme" and folds["A"].regrets == {"A": pytest.approx(40.0)}
    assert folds["B"].rule.name == "rankme"


def test_candidates_include_metrics_aggregates_and_gates():
    names = set(rules.candidates())
    assert {"rankme", "rankme_projector", "lidar", "alpha_req", "mean_rank(rankme+lidar)", "lidar|rankme>=0.9"} <= names


def test_asha_rungs_match_ray():
    assert asha.rungs(2, 8, 2) == [2, 4, 8]
    assert asha.rungs(4, 8, 2) == [4, 8]
    assert asha.rungs(1, 10, 3) == [1, 3, 9]


def test_asha_replay_stops_what_rays_bracket_stops():
    from ray.tune.schedulers.async_hyperband import _Bracket

    rng = np.random.default_rng(0)
    events, max_t = [], 8
    for i in range(10):
        start = i // 2 * 10.0
        events += [(start + ep + rng.uniform(0, 0.5), f"t{i}", ep, float(rng.normal(ep * (i % 4), 1.0))) for ep in range(1, max_t + 1)]
    replay = asha.replay(events, grace=2, max_t=max_t, rf=2)

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    bracket, stopped, trials = _Bracket(2, max_t, 2, 0), {}, {}
    for _, name, epoch, value in sorted(events):
        if name in stopped:
            continue
        trial = trials.setdefault(name, Trial(name))
        if bracket.on_result(trial, epoch, value) == "STOP" and epoch < max_t:
            stopped[name] = epoch
    assert replay.stopped == stopped and stopped  # ASHA stopped some, exactly as Ray would
    assert replay.epochs == sum(stopped.values()) + max_t * (10 - len(stopped))


def test_asha_relative_subtracts_each_trials_first_epoch():
    events = [(0.0, "a", 1, 50.0), (1.0, "a", 2, 55.0), (0.5, "b", 1, 10.0), (1.5, "b", 2, 30.0)]
    assert sorted(asha.relative(events)) == [(0.0, "a", 1, 0.0), (0.5, "b", 1, 0.0), (1.0, "a", 2, 5.0), (1.5, "b", 2, 20.0)]
