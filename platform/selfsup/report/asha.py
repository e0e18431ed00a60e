"""ASHA replayed on logged metric histories: which trials it would have stopped.

Asynchronous successive halving (Li et al. 2020, "A System for Massively Parallel Hyperparameter
Tuning"), as Ray Tune's ``ASHAScheduler`` runs it with one bracket: rungs at ``grace * rf**k``
epochs up to ``max_t``; a trial reaching a rung is stopped if its value there is below the
``(1 - 1/rf)`` quantile of the values recorded at that rung so far (``numpy.nanpercentile``), and its
value is recorded either way. Feeding the results of fully trained trials in the order they arrived
answers "would ASHA have stopped this trial?" without training anything again.

``relative`` replays a metric measured against the run's first epoch (``value - value at epoch 1``):
a freshly initialised network already has a high effective rank, so the raw metric at an early rung
can favour a trial that has barely trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Event = tuple[float, str, int, float]
"""``(arrival time, trial, epoch, value)`` of one reported result."""


def rungs(grace: int, max_t: int, rf: float) -> list[int]:
    """The rung epochs of Ray's one-bracket ASHA (``_Bracket`` with ``s = 0``), ascending."""
    count = int(math.log(max_t / grace) / math.log(rf) + 1)
    return sorted(grace * rf**k for k in range(count))


@dataclass
class Replay:
    stopped: dict[str, int]
    """trial -> the epoch it was stopped at (trials that ran to ``max_t`` are absent)."""
    epochs: int
    """epochs trained in all (the stopped trials up to their stopping epoch)."""


def replay(events: list[Event], grace: int, max_t: int, rf: float) -> Replay:
    """Stop decisions of ASHA (mode max) on ``events``, taken in arrival order. A trial's events
    after it was stopped are ignored, as Tune would never have produced them."""
    recorded: dict[float, dict[str, float]] = {r: {} for r in rungs(grace, max_t, rf)}
    stopped: dict[str, int] = {}
    last: dict[str, int] = {}
    for _, trial, epoch, value in sorted(events, key=lambda e: (e[0], e[2])):
        if trial in stopped:
            continue
        last[trial] = max(epoch, last.get(trial, 0))
        for milestone in sorted(recorded, reverse=True):
            seen = recorded[milestone]
            if epoch < milestone or trial in seen:
                continue
            if seen and value < np.nanpercentile(list(seen.values()), (1 - 1 / rf) * 100) and epoch < max_t:
                stopped[trial] = epoch
            seen[trial] = value
            break
    return Replay(stopped, sum(last.values()))


def relative(events: list[Event]) -> list[Event]:
    """Each trial's values minus its value at its first reported epoch."""
    first: dict[str, float] = {}
    for _, trial, epoch, value in sorted(events, key=lambda e: (e[1], e[2])):
        first.setdefault(trial, value)
    return [(t, trial, epoch, value - first[trial]) for t, trial, epoch, value in events]
