"""The building blocks of configuration sections, shared by ``config.py`` and the method files
(each method file holds its own section): a pydantic base that refuses unknown keys, and the
field types several sections use."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Widths = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
"""Layer widths of a head, at least one."""
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Range = tuple[Annotated[float, Field(gt=0.0)], Annotated[float, Field(gt=0.0)]]
"""``(low, high)``, both positive (each section checks the order it needs)."""


def check_shares(section: BaseModel, *keys: str, below_one: bool = False) -> None:
    """Each ``Range`` field ``key`` of ``section`` must be a share: ``0 < low <= high <= 1`` (``< 1``
    with ``below_one``, a share that must leave something out); else a one-line ``ValueError``."""
    top = "<" if below_one else "<="
    for key in keys:
        lo, hi = getattr(section, key)
        if not (lo <= hi < 1.0 if below_one else lo <= hi <= 1.0):
            raise ValueError(f"{key} must satisfy 0 < low <= high {top} 1, got {(lo, hi)}")
