"""`benchmarks/gpu_throughput.py --smoke`: the paper-configuration step of one method of each backbone kind (and of
the methods with an eager part, and DINOv3, the largest step), at tiny sizes on the CPU, compiled as the GPU
benchmark's engine runs it and run the benchmark's other two ways (eager bf16, eager fp32), with no Ray, MLflow or
Optuna imported, and every compiled step one graph (or two: a recompile for dynamic mask sizes or DINO's last-layer
unfreezing) without graph breaks. Every method's compiled step is checked against its eager step, and to be one
graph without breaks, in tests/unit/test_compile.py."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "gpu_throughput.py"
EAGER_REGIONS = {"scatsimclr", "gedi"}
"""Methods with a part left eager by design (ScatSimCLR's scattering transform: complex FFTs;
GEDI's SGLD sampler: gradients with respect to the images), around which the compiled step breaks."""


EAGER = ["simclr", "ijepa", "depict", "timedrl", "tjepa", "twotower", "cvrl", "iicc", "adljepa", "collossl", "actjepa"]
"""One method per backbone kind (timm CNN, timm ViT, small CNN, 1-D ViT, FT-Transformer, table MLP,
video, volume slices, point grid, body-worn devices, trajectory transformer; the scattering
network's eager part, its transform, already runs eager in ScatSimCLR's engine row): the eager modes'
paths are the same for every method of a kind, and every method's eager bf16 step is a contract
test of its own (tests/unit/test_method_updates.py)."""
METHODS = [*EAGER, *sorted(EAGER_REGIONS), "dinov3"]
"""The methods whose compiled (engine) step runs here."""


def smoke(tmp_path, *args: str) -> list[str]:
    """The rows of one ``--smoke`` run's table, after its header lines are checked."""
    out = subprocess.run([sys.executable, str(BENCH), "--smoke", *args], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("device: CPU; bf16 matmul peak measured: ") and "compile backend aot_eager" in lines[0]
    assert any(line.startswith("imported: none of ray, mlflow, optuna; wall ") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("method "))
    return lines[header + 2:]


def test_smoke_run_compiles_and_runs_each_backbone_kind(tmp_path):
    seen = set()
    rows = smoke(tmp_path, "--modes", "engine", "--methods", *METHODS) + smoke(tmp_path, "--modes", "eager bf16", "eager fp32", "--methods", *EAGER)
    for row in rows:
        method, model, batch, mode = re.match(r"(\S+)\s+(\S+(?: \S+)?)\s+(\d+) (engine|eager bf16|eager fp32)\s", row).groups()
        rate = float(row.split(mode, 1)[1].split()[0].replace(",", ""))
        assert rate > 0, row
        if mode == "engine" and method in EAGER_REGIONS:
            assert re.search(r"compiled frame\(s\), \d+ graph break\(s\)$", row), row
        elif mode == "engine":
            assert re.search(r"[12] compiled frame\(s\), 0 graph break\(s\)$", row), row
        seen.add((method, mode))
    assert len(rows) == len(seen) == len(METHODS) + 2 * len(EAGER), "\n".join(rows)
    assert seen == {(m, "engine") for m in METHODS} | {(m, mode) for m in EAGER for mode in ("eager bf16", "eager fp32")}


def test_without_a_gpu_it_says_how_to_run_the_smoke_version(tmp_path):
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, str(BENCH), "--methods", "ijepa"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("error: no CUDA device: pass --smoke to run the tiny CPU version")
