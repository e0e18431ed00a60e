"""`benchmarks/gpu_throughput.py --smoke`: every method's paper-configuration step, at tiny sizes on the CPU,
run the three ways the GPU benchmark compares (compiled engine, eager bf16, eager fp32), with no Ray, MLflow or
Optuna imported, and every compiled step one graph (or two: a recompile for dynamic mask sizes or DINO's
last-layer unfreezing) without graph breaks."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "gpu_throughput.py"
METHODS = ["barlowtwins", "byol", "cvrl", "dino", "ijepa", "mae", "mocov3", "sarjepa", "seqjepa", "simclr", "sjepa", "timedrl", "tjepa",
           "twotower", "vcop", "vicreg", "iicc", "adljepa", "collossl", "actjepa", "depict", "sie", "dinov3", "scatsimclr", "interclr", "gsimclr", "gedi"]
EAGER_REGIONS = {"scatsimclr", "gedi"}
"""Methods with a part left eager by design (ScatSimCLR's scattering transform: complex FFTs;
GEDI's SGLD sampler: gradients with respect to the images), around which the compiled step breaks."""


def test_smoke_run_measures_every_method_three_ways(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH), "--smoke"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("device: CPU; bf16 matmul peak measured: ") and "compile backend aot_eager" in lines[0]
    assert any(line.startswith("imported: none of ray, mlflow, optuna; wall ") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("method "))
    rows = lines[header + 2:]
    assert len(rows) == 3 * len(METHODS), "\n".join(lines)
    seen = set()
    for row in rows:
        method, model, batch, mode = re.match(r"(\S+)\s+(\S+(?: \S+)?)\s+(\d+) (engine|eager bf16|eager fp32)\s", row).groups()
        rate = float(row.split(mode, 1)[1].split()[0].replace(",", ""))
        assert rate > 0, row
        if mode == "engine" and method in EAGER_REGIONS:
            assert re.search(r"compiled frame\(s\), \d+ graph break\(s\)$", row), row
        elif mode == "engine":
            assert re.search(r"[12] compiled frame\(s\), 0 graph break\(s\)$", row), row
        seen.add((method, mode))
    assert seen == {(m, mode) for m in METHODS for mode in ("engine", "eager bf16", "eager fp32")}


def test_without_a_gpu_it_says_how_to_run_the_smoke_version(tmp_path):
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, str(BENCH), "--methods", "ijepa"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("error: no CUDA device: pass --smoke to run the tiny CPU version")
