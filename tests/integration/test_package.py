"""selfsup installed as a package, not from this checkout: the wheel built from the source,
installed into a fresh virtual environment, finds what it ships (the search spaces) wherever it
runs. The environment borrows this one's dependencies (torch, Ray, MLflow) through a path file
instead of downloading them again; selfsup itself comes from the wheel."""

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from selfsup.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


def run(cmd, cwd, timeout=300) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_the_installed_wheel_ships_its_search_spaces(tmp_path):
    source = tmp_path / "source"  # the build writes build/ and egg-info beside the sources: a copy, not the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "platform", source / "platform", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp_path / "dist", source], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("selfsup-*.whl")

    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip())
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel], tmp_path)
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"  # no search_spaces/ here: the sweep must find the shipped one
    work.mkdir()
    where = run([python, "-c", "import selfsup; print(selfsup.__file__)"], work).strip()
    assert where.startswith(str(site)), where
    methods = run([env / "bin" / "selfsup", "methods"], work)
    assert len(methods.strip().splitlines()) == len(METHODS) and methods.startswith(min(METHODS))
    (work / "base.yaml").write_text("name: b\nmethod: {name: vicreg, projector: [32, 32]}\nmodel: {backbone: cnn, embed_dim: 16, width: 8, depth: 2}\n"
                                    "train: {epochs: 1, batch_size: 64}\n")
    (work / "sweep.yaml").write_text("name: s\nbase: base.yaml\nnum_samples: 2\n")
    check = ("from selfsup.config import load_sweep; from selfsup.tune.sweep import prepare; "
             "space_file = prepare(load_sweep('sweep.yaml'), 'sweep.yaml')[3]; print(space_file)")
    space = run([python, "-c", check], work).strip()
    assert space.startswith(str(site)) and space.endswith("selfsup/search_spaces/vicreg.yaml"), space
