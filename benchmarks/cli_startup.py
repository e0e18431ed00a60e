"""How long `selfsup --help` takes: the CLI's help and each verb's, against what the CLI imported
before (`selfsup.config`, which pulls in torch and the method registry) as the baseline, each a
fresh interpreter, timed in the same command.

Prints one row per command (median and fastest of `--runs` runs, wall time of the process), the
baseline's row, and last one line: `selfsup --help: X.XX s median (baseline Y.YY s, ratio Z.ZZ)`.

    python benchmarks/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

VERBS = ("train", "sweep", "report", "ui", "server", "export", "shard", "methods", "datasets")


def wall(cmd: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of ``cmd`` (each must exit 0)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of each command (median and fastest reported)")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "selfsup.cli"]
    rows = [("python -c pass (the interpreter alone)", wall([sys.executable, "-c", "pass"], args.runs))]
    rows.append(("selfsup --help", wall([*cli, "--help"], args.runs)))
    rows += [(f"selfsup {verb} --help", wall([*cli, verb, "--help"], args.runs)) for verb in VERBS]
    baseline = wall([sys.executable, "-c", "import selfsup.config"], args.runs)
    rows.append(("baseline: import selfsup.config", baseline))
    print(f"{'command':44s} {'median s':>9s} {'fastest s':>9s}")
    for name, times in rows:
        print(f"{name:44s} {statistics.median(times):9.3f} {min(times):9.3f}")
    help_s, base_s = statistics.median(rows[1][1]), statistics.median(baseline)
    print(f"selfsup --help: {help_s:.2f} s median (baseline {base_s:.2f} s, ratio {help_s / base_s:.2f})")


if __name__ == "__main__":
    main()
