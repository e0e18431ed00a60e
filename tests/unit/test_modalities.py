"""The modality contract (DESIGN.md, "Modality contract"): each registered kind of data says what
it holds and the config derives its checks from it; a new kind of data is one file."""

import subprocess
import sys
import textwrap
import pytest

from selfsup.config import BACKBONES, DataConfig
from selfsup.data.masks import MASK_MAKERS, MultiBlockMasks, RandomPatchMasks, mask_maker
from selfsup.modalities import DATASETS, MODALITIES, load_dataset
from selfsup.models.backbones import BACKBONES as BUILT

BUILT_IN = {"digits": None, "mnist1d": None, "table": "wine", "moving_digits": None}


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_a_modality_says_what_it_holds(name):
    kind = MODALITIES[name]
    assert kind.name == name and kind.plural and kind.sample.startswith("(") and kind.datasets
    assert all(source.describe and source.path in ("file", "name", "none") for source in kind.datasets.values())
    assert all(kind.recipes.values()) and kind.augmentation in kind.recipes
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


@pytest.mark.parametrize("name", sorted(d for d in DATASETS if MODALITIES[DATASETS[d]].datasets[d].generated))
def test_a_generated_dataset_makes_data_samples_of_them(name):
    """``data.samples`` sizes a generated dataset (the selection benchmark's larger test sets); the
    split keeps ``test_fraction`` of them."""
    cfg = DataConfig(name=name, samples=40)
    data = load_dataset(**cfg.load_args())
    assert (len(data.train.x), len(data.test.x)) == (32, 8)


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
    """A kind of data added as one file: vectors (F,) with their own dataset, recipe, data: keys
    (one read by the loader), backbone, model: key and checks."""
    import torch
    from pydantic import Field

    from selfsup.data.splits import SplitData, to_split
    from selfsup.modalities.base import Dataset, Modality, register
    from selfsup.models.backbones import backbone


    def blobs(a):
        g = torch.Generator().manual_seed(a["split_seed"])
        y = torch.arange(300) % 3
        x = torch.randn(300, 12, generator=g) + a["blob_spread"] * torch.nn.functional.one_hot(y, 12)
        return SplitData("blobs", to_split(x[:240].numpy(), y[:240].numpy()), to_split(x[240:].numpy(), y[240:].numpy()))


    @backbone("linear", "one linear map")
    def linear(in_shape, embed_dim, bias=True, **_):
        net = torch.nn.Linear(in_shape[0], embed_dim, bias=bias)
        net.embed_dim = embed_dim
        return net


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
        backbones = ("mlp", "linear")
        fields = {"jitter_std": (float, Field(0.1, ge=0.0)), "blob_spread": (float, 3.0)}
        keys = ("jitter_std",)
        loads = ("blob_spread",)
        model_fields = {"bias": (bool, True)}

        def check(self, data):
            if data.jitter_std > 1:
                raise ValueError(f"data.jitter_std {data.jitter_std} would drown vectors")

        def views(self, recipe, data, cfg, n_views, local_crops, batched):
            return Jitter(n_views, cfg.jitter_std if recipe == "jitter" else 0.0)
    ''')
ADDED = textwrap.dedent('''\
    import sys
    sys.path.insert(0, sys.argv[1])
    import vector  # registers the modality, as a file in selfsup/modalities/ would
    from selfsup.config import ConfigError, build_experiment, views_of
    from selfsup.models.saved import save_backbone
    from selfsup.train.launch import preflight
    from selfsup.train.worker import build

    tree = {"data": {"name": "blobs"}, "model": {"backbone": "mlp", "embed_dim": 16, "width": 32, "depth": 2},
            "method": {"name": "vicreg", "projector": [32, 32]}, "train": {"batch_size": 64}}
    cfg = build_experiment(tree, "blobs.yaml")
    data = preflight(cfg, "blobs.yaml")
    print("ok", cfg.data.modality, views_of(cfg), tuple(data.shape))
    linear = build_experiment({**tree, "model": {"backbone": "linear", "embed_dim": 16, "bias": False}}, "blobs.yaml")
    method = build(linear, data.shape)
    print("loads", linear.data.load_args()["blob_spread"], "bias", method.backbone.bias)
    save_backbone(method.backbone, sys.argv[2], linear.model.model_dump(), data.shape)
    for key, value in [("data.jitter_std", 2.0), ("model.backbone", "cnn"), ("data.views", "byol"), ("data.name", "digits"),
                       ("model.bias", False)]:
        section, leaf = key.split(".")
        bad = {**tree, section: {**tree[section], leaf: value, **({"jitter_std": 0.5} if leaf == "name" else {})}}
        if leaf == "bias":
            bad = {**bad, "data": {"name": "digits"}, "model": {"backbone": "cnn", "bias": False}}
        try:
            build_experiment(bad, "blobs.yaml")
        except ConfigError as exc:
            print(exc)
    ''')


LOADED = textwrap.dedent('''\
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from selfsup.models.saved import load_backbone

    print(tuple(load_backbone(sys.argv[2])(torch.zeros(2, 12)).shape), "vector" in sys.modules)
    ''')


def test_a_new_modality_is_one_file(tmp_path):
    """A modality registered from a file of its own, with ``data:`` keys (one its loader reads), a
    backbone and a ``model:`` key of its own: the config takes its dataset, keys, recipe and
    backbones and runs its checks, the loader and the backbone get their keys, a method for any data trains a batch of
    it, and its saved backbone loads back where nothing imported the file, with no line of
    config.py, the worker or the CLI changed."""
    (tmp_path / "vector.py").write_text(TOY)
    saved = tmp_path / "saved"
    out = subprocess.run([sys.executable, "-c", ADDED, str(tmp_path), str(saved)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines == [
        "ok vector jitter (12,)",
        "loads 3.0 bias None",
        "blobs.yaml: data: data.jitter_std 2.0 would drown vectors",
        "blobs.yaml: <top>: model.backbone 'cnn' does not suit 'blobs' data; use one of mlp, linear",
        "blobs.yaml: data: data.views 'byol' is not for vectors ('blobs'); vectors take 'jitter', 'none' (or auto)",
        "blobs.yaml: data: data.jitter_std applies to vectors, not images",
        "blobs.yaml: <top>: model.bias applies to vectors, not images",
    ], out.stdout
    out = subprocess.run([sys.executable, "-c", LOADED, str(tmp_path), str(saved)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.split() == ["(2,", "16)", "True"], out.stdout + out.stderr[-3000:]


def test_masked_methods_ask_the_modalities_for_masks_of_their_grid():
    assert MASK_MAKERS["blocks", 2] is MultiBlockMasks and MASK_MAKERS["random", 2] is RandomPatchMasks
    assert isinstance(mask_maker("random", (4, 6), 0.5), RandomPatchMasks)
    with pytest.raises(ValueError, match=r"^no blocks masks over a 4-D token grid \(2, 2, 4, 4\); registered for \[2, 3\] dimensions$"):
        mask_maker("blocks", (2, 2, 4, 4))
