"""`benchmarks/input_pipeline.py --smoke`: every part of the input benchmark runs at tiny sizes (a
PIL loader, Ray Data from local shards and from a local S3 server, the data-wait loop, a real
`selfsup train` against the bare engine) and prints its table; nothing is asserted on speed."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_prints_every_source_the_wait_share_and_the_loop_ratio(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "input_pipeline.py"), "--smoke"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("source "))
    rows = lines[start + 1:start + 4]
    assert [r[:32].strip() for r in rows] == ["(a) PIL loader, image folder", "(b) Ray Data, local shards", "(c) Ray Data, S3 shards"]
    assert all(float(r.split()[-2]) > 0 and float(r.split()[-1]) > 0 for r in rows), rows
    assert re.fullmatch(r"data wait: [\d.]+ s of a [\d.]+ s epoch \([\d.]+%; [\d.]+ s of it for the first batch\), step \d+ ms, Ray Data from local shards, second epoch, started 2 s before it", lines[start + 4])
    assert re.fullmatch(r"whole loop: \d+ samples/s in the Ray Train worker loop, \d+ bare engine steps: ratio [\d.]+", lines[start + 5])
    assert not list(ROOT.glob("selfsup-*")), "nothing written into the repository"
