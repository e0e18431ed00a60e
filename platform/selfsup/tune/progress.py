"""The sweep's live console: one line per trial start, stop, prune, failure and retry, and a
progress table (trial, state, epoch, objective, best so far, ETA).

On a terminal the table stays at the bottom and is redrawn in place; elsewhere (a log, CI) a
one-line status replaces it every ``interval`` seconds. Ray's and Tune's own output goes to the
sweep's log file (see :func:`selfsup.console.to_log`), so this is all a person reads before the
report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

from ray import tune

from selfsup.config import flatten
from selfsup.console import current
from selfsup.tracking import runs


@dataclass
class Row:
    trial: str
    params: str
    state: str = "running"
    epoch: int = 0
    value: float | None = None
    first: float = field(default_factory=lambda: time.time())
    last: float = field(default_factory=lambda: time.time())
    epoch_times: list[float] = field(default_factory=list)
    """Seconds between consecutive results (the first result, which includes the start, is not one)."""


NO_EPOCH_S = 120.0
"""A running trial without a first epoch this long after it (re)started is named on the status line
(its workers may be waiting for resources: ``scaling.placement_timeout_s`` bounds that wait)."""


def minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class LiveProgress(tune.Callback):
    """A Tune callback writing the sweep's progress to ``console`` (default: the process's
    :func:`selfsup.console.current`, looked up when writing, so that a callback Tune pickled with
    the sweep and restores on ``--resume`` writes to the console of the process resuming it)."""

    def __init__(self, metric: str, mode: str, epochs: int, trials: int, interval: float = 30.0, console: TextIO | None = None):
        self.console, self.metric, self.mode = console, metric, mode
        self.short = metric.rsplit("/", 1)[-1]
        self.epochs, self.trials, self.interval = epochs, trials, interval
        self.rows: dict[str, Row] = {}
        self.pending: list[str] = []
        """Trials Tune has made but cannot start yet: the cluster lacks the resources of one more."""
        self.t0 = self.last_status = time.time()
        self.drawn = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "console": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.t0 = self.last_status = time.time()
        self.drawn = 0

    @property
    def out(self) -> TextIO:
        return self.console or current()

    @property
    def live(self) -> bool:
        return self.out.isatty()

    # -- Tune's hooks ------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        params = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in flatten(trial.config).items())
        if trial.trial_id in self.rows:  # a retried trial
            self.rows[trial.trial_id].state, self.rows[trial.trial_id].last = "running", time.time()
            self.say(f"trial {trial.trial_id} restarted")
            return
        self.rows[trial.trial_id] = Row(trial.trial_id, params)
        self.say(f"trial {trial.trial_id} started   {params}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self.rows.setdefault(trial.trial_id, Row(trial.trial_id, ""))
        now = time.time()
        if row.epoch:
            row.epoch_times.append(now - row.last)
        row.last = now
        row.epoch, row.value = int(result.get("epoch", row.epoch + 1)), result.get(self.metric)
        if self.live:
            self.draw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self.rows.setdefault(trial.trial_id, Row(trial.trial_id, ""))
        last = trial.last_result or {}
        if last.get(runs.COLLAPSED_METRIC):
            row.state, how = "collapsed", f"collapsed at epoch {row.epoch} (RankMe {last.get('label_free/rankme', float('nan')):.2f})"
        elif row.epoch >= self.epochs:
            row.state, how = "finished", f"finished at epoch {row.epoch}"
        else:
            row.state, how = "stopped", f"stopped by ASHA at epoch {row.epoch}"
        best = " (best so far)" if self.best() is row else ""
        self.say(f"trial {trial.trial_id} {how:32s} {self.short} {self.value(row)}{best}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.rows.setdefault(trial.trial_id, Row(trial.trial_id, "")).state = "retrying"
        self.say(f"trial {trial.trial_id} failed and will be retried from its checkpoint:\n{self.error(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.rows.setdefault(trial.trial_id, Row(trial.trial_id, "")).state = "failed"
        self.say(f"trial {trial.trial_id} FAILED (the other trials go on):\n{self.error(trial)}")

    def on_step_begin(self, iteration, trials, **info):
        self.pending = [t.trial_id for t in trials if t.status == "PENDING"]
        if not self.live and self.rows and time.time() - self.last_status >= self.interval:
            self.last_status = time.time()
            self.say(self.status())

    def on_experiment_end(self, trials, **info):
        if self.live:
            self.erase()
            self.drawn = 0
        self.say(self.status(), redraw=False)

    # -- what is shown -----------------------------------------------------------------------
    def error(self, trial) -> str:
        text = trial.get_error() if hasattr(trial, "get_error") else None
        return str(text).rstrip() if text else "(no error text; see the sweep's log)"

    def value(self, row: Row) -> str:
        return "-" if row.value is None else f"{row.value:.4g}"

    def best(self) -> Row | None:
        scored = [r for r in self.rows.values() if r.value is not None and r.state != "collapsed"]
        if not scored:
            return None
        return (max if self.mode == "max" else min)(scored, key=lambda r: r.value)

    def eta(self, row: Row) -> float | None:
        if row.state not in ("running", "retrying") or not row.epoch_times:
            return None
        return (self.epochs - row.epoch) * sum(row.epoch_times) / len(row.epoch_times)

    def sweep_eta(self) -> float | None:
        """Time left if every trial not yet ended trains all its epochs (ASHA stops some sooner), at
        the rate the sweep has gone so far: its time since the first trial started per epoch done
        by all trials together, which counts each trial's start and the trials running at once."""
        done = sum(r.epoch for r in self.rows.values())
        if not done:
            return None
        rate = (time.time() - min(r.first for r in self.rows.values())) / done
        running = [r for r in self.rows.values() if r.state in ("running", "retrying")]
        left = sum(self.epochs - r.epoch for r in running) + (self.trials - len(self.rows)) * self.epochs
        return left * rate

    def status(self) -> str:
        done = sum(r.state in ("finished", "stopped", "collapsed", "failed") for r in self.rows.values())
        running = sum(r.state in ("running", "retrying") for r in self.rows.values())
        best = self.best()
        parts = [f"{done}/{self.trials} trials ended", f"{running} running"]
        if self.pending:
            parts.append(f"{len(self.pending)} waiting for resources ({', '.join(self.pending)})")
        now = time.time()
        slow = [f"{r.trial} {minutes(now - r.last)}" for r in self.rows.values() if r.state in ("running", "retrying") and not r.epoch
                and now - r.last >= NO_EPOCH_S]
        if slow:
            parts.append(f"no first epoch yet: {', '.join(slow)}")
        if best:
            parts.append(f"best {self.short} {self.value(best)} ({best.trial})")
        eta = self.sweep_eta()
        if eta is not None and done < self.trials:
            parts.append(f"ETA ~{minutes(eta)}")
        return " · ".join(parts)

    def table(self) -> list[str]:
        best = self.best()
        lines = [f"  {'trial':14s} {'state':10s} {'epoch':>7s} {self.short:>10s} {'ETA':>7s}"]
        for r in self.rows.values():
            eta = self.eta(r)
            mark = " *" if r is best else ""
            lines.append(f"  {r.trial:14s} {r.state:10s} {f'{r.epoch}/{self.epochs}':>7s} {self.value(r):>10s} "
                         f"{minutes(eta) if eta is not None else '-':>7s}{mark}")
        lines.append(f"  {self.status()}")
        return lines

    # -- writing -------------------------------------------------------------------------------
    def erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")

    def draw(self) -> None:
        self.erase()
        lines = self.table()
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)

    def say(self, line: str, redraw: bool = True) -> None:
        stamp = f"[{minutes(time.time() - self.t0)}] "
        if self.live:
            self.erase()
            self.drawn = 0
        self.out.write(stamp + line + "\n")
        if self.live and redraw:
            self.draw()
        self.out.flush()
