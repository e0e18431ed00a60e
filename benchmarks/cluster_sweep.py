"""The README's main sweep (`make sweep`: examples/mnist1d_vicreg_sweep.yaml) two ways, in one command:

1. embedded default: `selfsup sweep` with a local Ray, sqlite MLflow and local checkpoints;
2. cluster: the same sweep submitted as cluster/README.md says (`ray job submit --working-dir .
   -- selfsup sweep examples/...`, the working directory holding the repository's `examples/` and
   `search_spaces/`) to three Ray nodes started with the `ray` CLI (one CPU each), MLflow on
   `selfsup server` over PostgreSQL with artifacts proxied into an S3-compatible bucket (moto),
   checkpoints in that bucket; checked to end 0 with the report and the registered pick.

Prints each wall time (submit to report, Ray start-up included) and their ratio. Every service
runs on 127.0.0.1 and is stopped at the end (tests/cluster/services.py).

    python benchmarks/cluster_sweep.py [--trials 8] [--sweep examples/mnist1d_vicreg_sweep.yaml] [--cluster-only]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tests.cluster import services  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--sweep", type=Path, default=services.README_SWEEP, help="a sweep YAML in examples/ (default: the README's main sweep)")
    ap.add_argument("--cluster-only", action="store_true", help="skip the embedded run")
    args = ap.parse_args()
    sweep = args.sweep.resolve()
    if sweep.parent != ROOT / "examples":
        ap.error(f"--sweep: {args.sweep} is not a sweep in {ROOT / 'examples'}")
    selfsup = str(services.BIN / "selfsup")
    # stopped from outside (kill, timeout): the services' context managers still stop what they started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("cluster_sweep.py: terminated"))
    embedded = None
    with tempfile.TemporaryDirectory(prefix="bench") as tmp:
        if not args.cluster_only:
            local = Path(tmp) / "local"
            path = services.readme_sweep(local, sweep, args.trials, **{"train.storage_path": str(local / "runs"),
                                                           "tracking.uri": f"sqlite:///{local}/mlflow.db"})
            embedded = timed([selfsup, "sweep", str(path.relative_to(local))], local, {**os.environ, **services.RAY_ENV})
            print(f"embedded default (local Ray, sqlite, local checkpoints): {embedded:.0f} s", flush=True)

        with services.s3_server("artifacts", "runs") as endpoint:
            s3 = {**services.S3_ENV, "AWS_ENDPOINT_URL": endpoint}
            with services.postgres() as pg, services.tracking_server(pg, "s3://artifacts/mlflow", env=s3) as url, \
                    services.ray_nodes(3, cpus=1, env=s3) as nodes:
                work = Path(tmp) / "job"
                path = services.readme_sweep(work, sweep, args.trials, **{"tracking.uri": url, "train.storage_path": "s3://runs/bench"})
                submit = [str(services.BIN / "ray"), "job", "submit", "--address", nodes.dashboard, "--working-dir", ".",
                          "--", selfsup, "sweep", str(path.relative_to(work))]
                t0 = time.perf_counter()
                out = subprocess.run(submit, cwd=work, env=nodes.env, capture_output=True, text=True)
                cluster = time.perf_counter() - t0
                if out.returncode != 0 or "registered as" not in out.stdout:
                    sys.exit(f"the submitted sweep failed after {cluster:.0f} s:\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}")
    print(f"3-node cluster (ray job submit, PostgreSQL server, S3 checkpoints): {cluster:.0f} s")
    if embedded:
        print(f"cluster / embedded: {cluster / embedded:.2f}")


if __name__ == "__main__":
    main()
