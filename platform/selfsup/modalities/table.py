"""Tables ``(F,)``: scikit-learn's bundled tables and your CSV or Parquet files with a column
schema (loaders in ``selfsup.data.tables``: standardised numerical columns, one-hot categorical
ones); SCARF's corruption recipe; MLPs and the feature-token transformer."""

from __future__ import annotations

from pathlib import Path

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from selfsup.data import tables
from selfsup.data.views import RECIPES, build_views
from selfsup.modalities.base import Dataset, Modality, register
from selfsup.sections import Section


class TableColumns(Section):
    """The schema of a CSV/Parquet table (``data.columns``): which columns are numerical, which
    categorical, and the optional label column (used by the probes only); ``max_categories`` caps a
    categorical column's one-hot width (the most frequent categories, the rest as one ``<other>``)."""

    numerical: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    label: str | None = None
    max_categories: int = Field(tables.MAX_CATEGORIES, ge=2)

    @model_validator(mode="after")
    def _check(self) -> "TableColumns":
        names = [*self.numerical, *self.categorical, *([self.label] if self.label else [])]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"column {twice[0]!r} is declared twice")
        if not self.numerical and not self.categorical:
            raise ValueError("declare at least one numerical or categorical column")
        return self


def _user_table(a: dict):
    c = a["columns"] or {}
    return tables.user_table(a["path"], a["name"], c.get("numerical", []), c.get("categorical", []), c.get("label"), a["missing"],
                             a["test_fraction"], a["split_seed"], c.get("max_categories", tables.MAX_CATEGORIES))


@register
class Table(Modality):
    name, plural, sample = "table", "tables", "(F,)"
    datasets = {
        "table": Dataset(f"a table bundled with scikit-learn, data.path = {' | '.join(tables.BUNDLED)}",
                         lambda a: tables.bundled(a["path"], a["test_fraction"], a["split_seed"]), path="name"),
        "csv": Dataset("your table: data.path -> .csv with data.columns {numerical, categorical, label}", _user_table),
        "parquet": Dataset("your table: data.path -> .parquet with data.columns {numerical, categorical, label}", _user_table),
    }
    recipes = {k: RECIPES[k] for k in ("scarf", "none")}
    default_recipes = ("scarf",)
    augmentation = "scarf"
    backbones = ("mlp", "ft_transformer")
    loads = ("columns", "missing")
    fields = {
        "columns": (TableColumns | None, None),
        "missing": (Literal["error", "impute"], "error"),
        "corruption_rate": (float, Field(0.6, gt=0.0, lt=1.0)),
    }

    def check(self, data) -> None:
        if data.name in ("csv", "parquet") and data.columns is None:
            raise ValueError(f"data.name {data.name!r} needs data.columns (numerical, categorical, label)")

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        """SCARF draws each replaced feature from the training rows (the feature's marginal)."""
        return build_views(recipe, data.shape, n_views, pool=data.train.x, corruption_rate=cfg.corruption_rate)

    def fake(self, cfg, root: Path) -> str:
        """A 40-row Parquet table of the config's columns (random numbers, three categories, a 0/1 label)."""
        import pandas as pd

        c = cfg.columns
        frame = pd.DataFrame({name: np.random.default_rng(0).normal(size=40) for name in c.numerical})
        for name in c.categorical:
            frame[name] = np.array(["a", "b", "c"])[np.arange(40) % 3]
        frame[c.label] = np.arange(40) % 2
        frame.to_parquet(root / "table.parquet")
        return str(root / "table.parquet")
