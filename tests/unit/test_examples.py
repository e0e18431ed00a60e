"""Every shipped config is valid and passes the preflight checks (data, batch, model) without Ray."""

from pathlib import Path

import pytest

from selfsup.config import load_experiment, load_space, load_sweep
from selfsup.methods import METHODS
from selfsup.train.launch import preflight
from selfsup.tune.space import check_space
from selfsup.tune.sweep import prepare

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if not p.stem.endswith("_sweep"))
SWEEPS = sorted([*(ROOT / "examples").glob("*_sweep.yaml"), *(ROOT / "examples" / "studies").glob("*.yaml"), *(ROOT / "examples" / "cluster").glob("*_sweep.yaml")])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_preflights(path):
    preflight(load_experiment(path), str(path))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_example_prepares(path):
    prepare(load_sweep(path), str(path))


def test_every_method_has_an_example_and_a_valid_search_space():
    from selfsup.methods.base import FAMILIES

    configs = [load_experiment(p) for p in EXAMPLES]
    assert {c.method.name for c in configs} == set(METHODS)
    assert {name: cls.family for name, cls in METHODS.items() if cls.family not in FAMILIES} == {}
    for cfg in configs:
        space = ROOT / "search_spaces" / f"{cfg.method.name}.yaml"
        check_space(load_space(space), cfg.model_dump(mode="json"), str(space))


CLUSTER = sorted(p for p in (ROOT / "examples" / "cluster").glob("*.yaml") if not p.stem.endswith("_sweep"))


def test_every_method_has_a_cluster_config():
    configs = [load_experiment(p) for p in CLUSTER]
    assert {c.method.name for c in configs} == set(METHODS)
    for cfg in configs:
        assert cfg.scaling.use_gpu and cfg.train.precision == "bf16" and (cfg.data.stream or cfg.data.modality in ("table", "sensors", "trajectories")
                                                                                   or METHODS[cfg.method.name].in_memory)
        assert cfg.tracking.uri.startswith("http") and cfg.tracking.artifact_location is None  # works from every node
        space = ROOT / "search_spaces" / f"{cfg.method.name}.yaml"
        check_space(load_space(space), cfg.model_dump(mode="json"), str(space))


@pytest.mark.parametrize("path", CLUSTER, ids=lambda p: p.stem)
def test_cluster_config_preflights_on_tiny_fake_data(path, tmp_path):
    """The paper-scale model, heads and view recipe (or masks) run one batch of stand-in data of the
    config's own shape: 224x224 images, 12-lead 10 s ECGs, HIGGS rows."""
    cfg = load_experiment(path)
    fake = cfg.data.kind.fake(cfg.data, tmp_path)
    few = ["method.clusters=2"] if "clusters" in type(cfg.method).model_fields else []  # the stand-in data has 4 samples
    preflight(load_experiment(path, [f"data.path={fake}", "train.batch_size=2", "scaling.num_workers=1", *few]), str(path))
