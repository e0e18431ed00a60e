"""Tables: scikit-learn's bundled tables, CSV/Parquet with a declared schema (train-only
standardisation, one-hot categoricals, explicit missing values), SCARF corruption views."""

import numpy as np
import pandas as pd
import pytest
import torch

from selfsup.config import load_experiment
from selfsup.data.splits import DataError
from selfsup.modalities import load_dataset
from tests.unit.test_config import error_of, write
from selfsup.data.tables import bundled, user_table
from selfsup.data.views import CorruptionViews


def test_bundled_tables_are_standardised_on_train_only():
    d = bundled("breast_cancer")
    assert d.shape == (30,) and len(d.train.x) + len(d.test.x) == 569 and d.has_labels
    assert torch.allclose(d.train.x.mean(dim=0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(d.train.x.std(dim=0, unbiased=False), torch.ones(30), atol=1e-3)
    assert not torch.allclose(d.test.x.mean(dim=0), torch.zeros(30), atol=1e-2)  # test rows use train statistics
    assert bundled("wine").shape == (13,) and bundled("iris").shape == (4,)
    with pytest.raises(DataError, match="'boston' is not a bundled table"):
        bundled("boston")


def frame(n=20):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "age": rng.normal(50, 10, n), "bmi": rng.normal(25, 4, n),
        "sex": rng.choice(["f", "m"], n), "site": rng.choice(["a", "b", "c"], n), "outcome": rng.choice(["no", "yes"], n),
    })


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_user_table_schema(tmp_path, kind):
    path = tmp_path / f"t.{kind}"
    df = frame()
    df.to_csv(path, index=False) if kind == "csv" else df.to_parquet(path)
    d = user_table(str(path), kind, ["age", "bmi"], ["sex", "site"], "outcome", test_fraction=0.25)
    assert d.shape == (2 + 2 + 3,) and len(d.train.x) == 15 and len(d.test.x) == 5
    assert torch.allclose(d.train.x[:, :2].mean(dim=0), torch.zeros(2), atol=1e-5)
    one_hot = d.train.x[:, 2:4]
    assert torch.equal(one_hot.sum(dim=1), torch.ones(15))  # one category per row
    assert set(d.train.y.tolist()) <= {0, 1}  # "no" -> 0, "yes" -> 1
    assert d.groups == (1, 1, 2, 3)  # column widths in the row: two numbers, sex (2 categories), site (3)


def test_tjepa_tokenizes_a_mixed_table_one_token_per_column(tmp_path):
    """Categorical columns become one token each (their one-hot block times an embedding table),
    so T-JEPA masks and predicts 4 columns, not 7 one-hot entries."""
    frame().to_csv(tmp_path / "t.csv", index=False)
    cfg = load_experiment(write(tmp_path, "t.yaml", ""), [
        "data.name=csv", f"data.path={tmp_path / 't.csv'}", "data.columns={numerical: [age, bmi], categorical: [sex, site], label: outcome}",
        "model.backbone=ft_transformer", "model.embed_dim=16", "model.depth=1", "model.heads=2",
        "method={name: tjepa, predictor_dim: 8, predictor_depth: 1, predictor_heads: 2, n_pred: 2}", "train.batch_size=8",
    ])
    from selfsup.train.launch import preflight
    from selfsup.train.worker import build, load_data, make_collate

    preflight(cfg)
    data = load_data(cfg)
    method = build(cfg, data.shape, data.groups)
    assert method.backbone.grid == (4,) and method.backbone.tokens(data.train.x[:3]).shape == (3, 4, 16)
    batch = make_collate(cfg, method, data)([(x,) for x in data.train.x[:8]])
    assert batch["context"].max() < 4 and all(t.max() < 4 for t in batch["targets"])


def test_user_table_errors_name_file_column_and_row(tmp_path):
    df = frame().astype({"age": object})
    df.loc[3, "age"] = "old"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv: column 'age': row 3: 'old' is not a number"):
        user_table(str(tmp_path / "bad.csv"), "csv", ["age"], [], None)
    with pytest.raises(DataError, match=r"bad.csv: column 'weight' not in the file"):
        user_table(str(tmp_path / "bad.csv"), "csv", ["weight"], [], None)
    gaps = frame()
    gaps.loc[5, "bmi"] = np.nan
    gaps.loc[7, "site"] = None
    gaps.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(DataError, match=r"gaps.csv: column 'bmi': row 5: missing value \(set data.missing: impute"):
        user_table(str(tmp_path / "gaps.csv"), "csv", ["bmi"], ["site"], None)
    d = load_dataset("csv", str(tmp_path / "gaps.csv"), columns={"numerical": ["bmi"], "categorical": ["site"]}, missing="impute")
    assert d.shape == (1 + 4,) and torch.isfinite(d.train.x).all()  # a, b, c and <missing>
    with pytest.raises(DataError, match="nope.csv: file not found"):
        user_table(str(tmp_path / "nope.csv"), "csv", ["age"], [], None)


def test_scarf_views_corrupt_from_the_marginals():
    torch.manual_seed(0)
    pool = torch.arange(1000.0)[:, None] * torch.tensor([[1.0, -1.0, 1000.0]])  # every column its own values
    x = torch.full((400, 3), 0.5)
    anchor, corrupted = CorruptionViews(pool, rate=0.6)(x)
    assert torch.equal(anchor, x)
    replaced = corrupted != x
    assert 0.5 < float(replaced.float().mean()) < 0.7
    for j in range(3):
        assert set(corrupted[replaced[:, j], j].tolist()) <= set(pool[:, j].tolist())  # drawn from column j


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["data.name=csv", "data.path=x.csv", "model.backbone=mlp"], "data.name 'csv' needs data.columns"),
        (["data.name=table", "data.path=wine", "model.backbone=cnn"], "model.backbone 'cnn' does not suit 'table' data; use one of mlp, ft_transformer"),
        (["data.name=table", "data.path=wine", "model.backbone=mlp", "data.views=byol"], "data.views 'byol' is not for tables"),
        (["data.name=csv", "data.path=x.csv", "model.backbone=mlp", "data.columns={numerical: [a], categorical: [a]}"], "column 'a' is declared twice"),
    ],
)
def test_table_config_errors(tmp_path, sets, expected):
    assert expected in error_of(load_experiment, write(tmp_path, "a.yaml", ""), sets)


@pytest.mark.parametrize("name, params", [("simclr", dict(projector=[128, 64], temperature=0.5)), ("vicreg", dict(projector=[256, 256]))])
def test_method_trains_on_breast_cancer_with_scarf_views(name, params):
    """Raw-feature logistic regression gets 0.99 on this 114-row test split, so pretraining has
    no room to show a gain here: the floor is that the representation stays linearly separable
    (majority class 0.63) and does not collapse."""
    from torch.utils.data import DataLoader, TensorDataset

    from selfsup.data.views import ViewCollate, build_views
    from selfsup.methods import build_method
    from selfsup.metrics.panel import evaluate
    from selfsup.models.backbones import build_backbone
    from selfsup.train.engine import Engine, build_optimizer

    torch.manual_seed(0)
    data = bundled("breast_cancer")
    method = build_method(name, build_backbone("mlp", data.shape, 64, 256, 3), **params)
    collate = ViewCollate(build_views("scarf", data.shape, 2, pool=data.train.x, corruption_rate=0.3))
    loader = DataLoader(TensorDataset(data.train.x), batch_size=64, shuffle=True, drop_last=True, collate_fn=collate)
    engine = Engine(method, method, build_optimizer(method, lr=1e-3, weight_decay=1e-4), total_steps=40 * len(loader), warmup_steps=len(loader))
    first = [engine.train_step(b)["loss"] for b in loader]
    for _ in range(39):
        last = [engine.train_step(b)["loss"] for b in loader]
    after = evaluate(method, data.train.x, "cpu", (data.train.x, data.train.y, data.test.x, data.test.y))
    assert sum(last) / len(last) < sum(first) / len(first)
    assert after["probe/linear_acc"] > 0.9 and after["label_free/rankme"] > 5


def test_a_column_with_no_training_value_is_refused_by_name(tmp_path):
    """``data.missing: impute`` fills a gap with the training mean; a column that is missing in every
    training row has none, and was left NaN before: it is refused in one line naming it."""
    df = frame()
    df["empty"] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"column 'empty': no value in the 16 training rows, nothing to impute from") as err:
        user_table(str(tmp_path / "t.csv"), "csv", ["age", "empty"], ["sex"], None, missing="impute")
    assert "\n" not in str(err.value)


def test_high_cardinality_categoricals_are_capped(tmp_path):
    """A column of 5,000 distinct ids is one-hot encoded as its ``max_categories - 1`` most frequent
    training categories plus ``<other>``: each row still has exactly one category and the width is
    bounded; rare and unseen values land in ``<other>``, and every row stays finite."""
    rng = np.random.default_rng(0)
    n = 6000
    ids = np.where(rng.random(n) < 0.5, rng.choice(["x", "y", "z"], n), [f"id{i}" for i in range(n)])
    pd.DataFrame({"age": rng.normal(size=n), "id": ids}).to_parquet(tmp_path / "t.parquet")
    d = user_table(str(tmp_path / "t.parquet"), "parquet", ["age"], ["id"], None, max_categories=8)
    assert d.groups == (1, 8) and d.shape == (9,)
    for split in (d.train, d.test):
        assert torch.equal(split.x[:, 1:].sum(dim=1), torch.ones(len(split.x)))
        assert torch.isfinite(split.x).all()
    # x, y, z (about 1,000 rows each) are kept; the ids seen once share <other>
    assert d.train.x[:, 1:].sum(dim=0).max() > 0.4 * len(d.train.x)
    cfg_default = user_table(str(tmp_path / "t.parquet"), "parquet", ["age"], ["id"], None)
    assert cfg_default.groups == (1, 64)
