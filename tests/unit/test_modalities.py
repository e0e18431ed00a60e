"""The modality contract (DESIGN.md, "Modality contract"): each registered kind of data says what
it holds and the config derives its checks from it; a new kind of data is one file."""

import subprocess
import sys
import textwrap
import pytest

from selfsup.config import BACKBONES, DataConfig
from selfsup.data.views import RECIPES
from selfsup.modalities import DATASETS, MODALITIES, load_dataset
from selfsup.models.backbones import BACKBONES as BUILT

BUILT_IN = {"digits": None, "mnist1d": None, "table": "wine"}


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_a_modality_says_what_it_holds(name):
    kind = MODALITIES[name]
    assert kind.name == name and kind.plural and kind.sample.startswith("(") and kind.datasets
    assert all(source.describe and source.path in ("file", "name", "none") for source in kind.datasets.values())
    assert set(kind.recipes) <= set(RECIPES) and kind.augmentation in kind.recipes
    assert set(kind.default_recipes or ()) <= set(kind.recipes)
    assert set(kind.backbones) <= set(BUILT) and BACKBONES[name] == kind.backbones
    assert all(DATASETS[d] == name for d in kind.datasets)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_a_built_in_dataset_has_the_sample_shape_its_modality_promises(name):
    data = load_dataset(name, BUILT_IN[name])
    kind = MODALITIES[DATASETS[name]]
    assert len(data.shape) == len([d for d in kind.sample.strip("()").split(",") if d.strip()])
    cfg = DataConfig(name=name, path=BUILT_IN[name])
    assert cfg.modality == kind.name and cfg.kind is kind
    views = kind.views(kind.augmentation, data, cfg, 2, 0, False)(data.train.x[:4])
    assert len(views) == 2 and all(v.shape == data.train.x[:4].shape for v in views)


def test_selfsup_datasets_lists_them_by_modality():
    out = subprocess.run([sys.executable, "-m", "selfsup.cli", "datasets"], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads == [f"{kind.plural} {kind.sample}:" for kind in MODALITIES.values()]
    for kind in MODALITIES.values():
        start = lines.index(f"{kind.plural} {kind.sample}:") + 1
        listed = [line.split()[0] for line in lines[start:start + len(kind.datasets)]]
        assert listed == list(kind.datasets)


TOY = textwrap.dedent('''\
    """A kind of data added as one file: vectors (F,) with their own dataset, recipe and checks."""
    import torch

    from selfsup.data.splits import SplitData, to_split
    from selfsup.modalities.base import Dataset, Modality, register


    def blobs(a):
        g = torch.Generator().manual_seed(a["split_seed"])
        y = torch.arange(300) % 3
        x = torch.randn(300, 12, generator=g) + 3 * torch.nn.functional.one_hot(y, 12)
        return SplitData("blobs", to_split(x[:240].numpy(), y[:240].numpy()), to_split(x[240:].numpy(), y[240:].numpy()))


    class Jitter:
        def __init__(self, n_views, std):
            self.n_views, self.std = n_views, std

        def __call__(self, x):
            return [x + self.std * torch.randn_like(x) for _ in range(self.n_views)]


    @register
    class Vector(Modality):
        name, plural, sample = "vector", "vectors", "(F,)"
        datasets = {"blobs": Dataset("three Gaussian blobs in 12 dimensions", blobs, path="none")}
        recipes = {"jitter": "Gaussian jitter", "none": "the vectors as they are"}
        default_recipes = ("jitter",)
        augmentation = "jitter"
        backbones = ("mlp",)

        def check(self, data):
            if data.noise_std > 1:
                raise ValueError(f"data.noise_std {data.noise_std} would drown vectors")

        def views(self, recipe, data, cfg, n_views, local_crops, batched):
            return Jitter(n_views, cfg.noise_std if recipe == "jitter" else 0.0)
    ''')
ADDED = textwrap.dedent('''\
    import sys
    sys.path.insert(0, sys.argv[1])
    import vector  # registers the modality, as a file in selfsup/modalities/ would
    from selfsup.config import ConfigError, build_experiment, views_of
    from selfsup.train.launch import preflight

    tree = {"data": {"name": "blobs"}, "model": {"backbone": "mlp", "embed_dim": 16, "width": 32, "depth": 2},
            "method": {"name": "vicreg", "projector": [32, 32]}, "train": {"batch_size": 64}}
    cfg = build_experiment(tree, "blobs.yaml")
    data = preflight(cfg, "blobs.yaml")
    print("ok", cfg.data.modality, views_of(cfg), tuple(data.shape))
    for key, value in [("data.noise_std", 2.0), ("model.backbone", "cnn"), ("data.views", "byol")]:
        section, leaf = key.split(".")
        bad = {**tree, section: {**tree[section], leaf: value}}
        try:
            build_experiment(bad, "blobs.yaml")
        except ConfigError as exc:
            print(exc)
    ''')


def test_a_new_modality_is_one_file(tmp_path):
    """A modality registered from a file of its own: the config takes its dataset, recipe and
    backbones and runs its checks, and a method for any data trains a batch of it, with no
    line of config.py, the worker or the CLI changed."""
    (tmp_path / "vector.py").write_text(TOY)
    out = subprocess.run([sys.executable, "-c", ADDED, str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines == [
        "ok vector jitter (12,)",
        "blobs.yaml: data: data.noise_std 2.0 would drown vectors",
        "blobs.yaml: <top>: model.backbone 'cnn' does not suit 'blobs' data; use one of mlp",
        "blobs.yaml: data: data.views 'byol' is not for vectors ('blobs'); vectors take 'jitter', 'none' (or auto)",
    ], out.stdout
