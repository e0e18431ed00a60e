"""Every shipped config is valid and passes the preflight checks (data, batch, model) without Ray."""

from pathlib import Path

import pytest

from selfsup.config import load_experiment, load_space, load_sweep
from selfsup.methods import METHODS
from selfsup.train.launch import preflight
from selfsup.tune.space import check_space
from selfsup.tune.sweep import prepare
from tests.unit.test_image_data import write_images

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
    configs = [load_experiment(p) for p in EXAMPLES]
    assert {c.method.name for c in configs} == set(METHODS)
    for cfg in configs:
        space = ROOT / "search_spaces" / f"{cfg.method.name}.yaml"
        check_space(load_space(space), cfg.model_dump(mode="json"), str(space))


CLUSTER = sorted(p for p in (ROOT / "examples" / "cluster").glob("*.yaml") if not p.stem.endswith("_sweep"))


def test_every_method_has_a_cluster_config():
    configs = [load_experiment(p) for p in CLUSTER]
    assert {c.method.name for c in configs} == set(METHODS)
    for cfg in configs:
        assert cfg.scaling.use_gpu and cfg.train.precision == "bf16" and (cfg.data.stream or cfg.data.is_table)
        assert cfg.tracking.uri.startswith("http") and cfg.tracking.artifact_location is None  # works from every node
        space = ROOT / "search_spaces" / f"{cfg.method.name}.yaml"
        check_space(load_space(space), cfg.model_dump(mode="json"), str(space))


def fake_data(cfg, root: Path) -> str:
    """A tiny stand-in for the config's data: an image folder, WFDB records of its leads and
    length, or a Parquet table with its columns."""
    if cfg.data.name == "wfdb":
        import numpy as np
        import wfdb

        n = cfg.data.signal_length
        for i in range(3):
            wfdb.wrsamp(f"r{i}", fs=cfg.data.sampling_rate, units=["mV"] * len(cfg.data.leads), sig_name=cfg.data.leads,
                        p_signal=np.random.default_rng(i).normal(size=(n, len(cfg.data.leads))), fmt=["16"] * len(cfg.data.leads), write_dir=str(root))
        return str(root)
    if cfg.data.is_table:
        import numpy as np
        import pandas as pd

        c = cfg.data.columns
        frame = pd.DataFrame({name: np.random.default_rng(0).normal(size=40) for name in c.numerical})
        for name in c.categorical:
            frame[name] = np.array(["a", "b", "c"])[np.arange(40) % 3]
        frame[c.label] = np.arange(40) % 2
        frame.to_parquet(root / "table.parquet")
        return str(root / "table.parquet")
    write_images(root, ["a", "b"], n=2, size=32)
    return str(root)


@pytest.mark.parametrize("path", CLUSTER, ids=lambda p: p.stem)
def test_cluster_config_preflights_on_tiny_fake_data(path, tmp_path):
    """The paper-scale model, heads and view recipe (or masks) run one batch of stand-in data of the
    config's own shape: 224x224 images, 12-lead 10 s ECGs, HIGGS rows."""
    fake = fake_data(load_experiment(path), tmp_path)
    preflight(load_experiment(path, [f"data.path={fake}", "train.batch_size=2", "scaling.num_workers=1"]), str(path))
