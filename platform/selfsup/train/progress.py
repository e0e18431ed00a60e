"""``selfsup train``'s progress: a bar per epoch with the loss and the label-free metrics, read
from the run's MLflow record (what rank 0 logs each epoch) by a thread of the driver. On a
terminal the bar is redrawn on one line; elsewhere each epoch is a line."""

from __future__ import annotations

import threading
from typing import TextIO

from selfsup.tracking import runs

SHOWN = (("train/loss", "loss"), ("label_free/rankme", "rankme"), ("label_free/lidar", "lidar"), ("label_free/alpha_req", "alpha"),
         ("probe/linear_acc", "probe"), ("data/skipped_files", "skipped files"))


def bar(epoch: int, epochs: int, width: int = 20) -> str:
    done = round(width * epoch / epochs)
    return "[" + "#" * done + "-" * (width - done) + "]"


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], per_epoch: float | None) -> str:
    shown = "  ".join(f"{short} {metrics[key]:.4g}" for key, short in SHOWN if key in metrics)
    timing = f"  {per_epoch:.1f} s/epoch, ETA {int((epochs - epoch) * per_epoch)} s" if per_epoch else ""
    return f"epoch {epoch:>{len(str(epochs))}}/{epochs} {bar(epoch, epochs)} {shown}{timing}"


class EpochProgress:
    """While open, writes a line to ``console`` for every new epoch the MLflow run ``run_id`` logs."""

    def __init__(self, console: TextIO, uri: str, run_id: str, epochs: int, every: float = 1.0):
        self.console, self.uri, self.run_id, self.epochs, self.every = console, uri, run_id, epochs, every
        self.shown, self.stop = 0, threading.Event()
        self.live = console.isatty()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def __enter__(self) -> "EpochProgress":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.poll()  # the last epochs, logged just before the run returned
        if self.live and self.shown:
            self.console.write("\n")
            self.console.flush()

    def watch(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.poll()
            except Exception:  # the store is briefly unreachable: the next poll catches up
                continue

    def poll(self) -> None:
        run = runs.get_run(self.uri, self.run_id)
        epoch = int(run.metrics.get("epoch", 0))
        if epoch <= self.shown:
            return
        per_epoch = run.metrics.get("perf/epoch_s")
        line = epoch_line(epoch, self.epochs, run.metrics, per_epoch)
        self.console.write(("\r\x1b[K" + line) if self.live else line + "\n")
        self.console.flush()
        self.shown = epoch
