"""The README's main sweep (examples/digits_vicreg_sweep.yaml) two ways, in one command:

1. embedded default: `selfsup sweep` with a local Ray, sqlite MLflow and local checkpoints;
2. cluster: the same sweep submitted with `ray job submit` to three Ray nodes started with the
   `ray` CLI (one CPU each), MLflow on `selfsup server` over PostgreSQL with artifacts proxied into
   an S3-compatible bucket (moto), checkpoints in that bucket.

Prints each wall time (submit to report, Ray start-up included) and their ratio. Every service
runs on 127.0.0.1 and is stopped at the end (tests/cluster/services.py).

    python benchmarks/cluster_sweep.py [--trials 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tests.cluster import services  # noqa: E402

SWEEP = ROOT / "examples" / "digits_vicreg_sweep.yaml"


def sweep_yaml(work: Path, trials: int, **overrides) -> Path:
    tree = yaml.safe_load(SWEEP.read_text())
    tree["base"] = str((SWEEP.parent / tree["base"]).resolve())
    tree["search_space"] = str((SWEEP.parent / tree["search_space"]).resolve())
    tree["num_samples"] = trials
    tree["overrides"].update(overrides)
    work.mkdir(parents=True, exist_ok=True)
    (work / "sweep.yaml").write_text(yaml.safe_dump(tree))
    return work / "sweep.yaml"


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    args = ap.parse_args()
    selfsup = str(services.BIN / "selfsup")
    with tempfile.TemporaryDirectory(prefix="bench") as tmp:
        local = Path(tmp) / "local"
        sweep = sweep_yaml(local, args.trials)
        embedded = timed([selfsup, "sweep", str(sweep)], local, {**os.environ, **services.RAY_ENV})
        print(f"embedded default (local Ray, sqlite, local checkpoints): {embedded:.0f} s", flush=True)

        with services.s3_server("artifacts", "runs") as endpoint:
            s3 = {**services.S3_ENV, "AWS_ENDPOINT_URL": endpoint}
            with services.postgres() as pg, services.tracking_server(pg, "s3://artifacts/mlflow", env=s3) as url, \
                    services.ray_nodes(3, cpus=1, env=s3) as nodes:
                work = Path(tmp) / "job"
                sweep_yaml(work, args.trials, **{"tracking.uri": url, "train.storage_path": "s3://runs/bench"})
                submit = [str(services.BIN / "ray"), "job", "submit", "--address", nodes.dashboard, "--working-dir", str(work),
                          "--", selfsup, "sweep", "sweep.yaml"]
                cluster = timed(submit, work, nodes.env)
    print(f"3-node cluster (ray job submit, PostgreSQL server, S3 checkpoints): {cluster:.0f} s")
    print(f"cluster / embedded: {cluster / embedded:.2f}")


if __name__ == "__main__":
    main()
