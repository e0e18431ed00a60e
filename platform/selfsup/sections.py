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
