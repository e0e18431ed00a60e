"""The modality contract and its registry (DESIGN.md, "Modality contract").

A modality is one kind of data, the whole of it in one file ``modalities/<name>.py``: a
:class:`Modality` subclass registered under its name, saying

- ``sample``: the shape of one sample it promises (``(C, H, W)``, ``(C, T)``, ``(F,)``, ...);
- ``datasets``: its datasets by config name (``data.name``), each a :class:`Dataset` with the
  one-line description ``selfsup datasets`` prints and the loader it runs;
- ``recipes``: the view recipes that apply to it (``data.views``), ``default_recipes`` the ones a
  method made for any data takes on it (``None``: the method's own, ``Method.recipes``), and
  ``augmentation`` the one ``label_free/lidar_aug`` measures masked methods under;
- ``views(...)``: the view maker of a recipe (per sample, or batched on the device where
  ``device_views``);
- ``backbones``: the ``model.backbone`` values that take its samples (a modality can register its
  own, ``selfsup.models.backbones.backbone``), and its mask makers (``selfsup.data.masks.register_masks``);
- ``fields``: the ``data:`` keys only it reads, with their types and defaults (``loads``: those
  its loaders read), and ``model_fields`` the ``model:`` keys only its backbones read;
- ``method_recipes(method)``: the recipes a method takes on it, its default first;
- ``check(data)``: what its datasets need of the ``data:`` section beyond the shared checks;
- ``fake(data, root)``: a tiny stand-in of a config's data on disk, for tests.

``config.py`` derives dataset names, recipes, backbones and their checks from :data:`MODALITIES`,
so adding a modality touches no shared table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic.fields import FieldInfo

from selfsup.data.splits import DataError, SplitData

ViewMaker = Callable[[Any], list]
"""A batch -> its list of views."""


@dataclass(frozen=True)
class Dataset:
    """One dataset of a modality: ``describe`` (one line for ``selfsup datasets``), ``load`` (the
    ``DataConfig.load_args`` dict -> :class:`SplitData`), what ``data.path`` is (``file``: a file
    or folder, resolved against the working directory; ``name``: the name of a bundled set;
    ``none``: built in, no path), whether ``data.stream`` applies (read file by file), the
    ``data:`` keys that only it reads (refused, when set, for any other dataset), and whether it is
    generated (``data.samples`` sets how many samples it makes; its loader reads ``samples``,
    ``None`` for its own count)."""

    describe: str
    load: Callable[[dict], SplitData]
    path: str = "file"
    streams: bool = False
    keys: tuple[str, ...] = ()
    generated: bool = False


class Modality:
    """Base class of a kind of data (see the module docstring)."""

    name: ClassVar[str] = ""
    plural: ClassVar[str] = ""
    """How errors name samples of it: ``images``, ``signals``, ``tables``."""
    sample: ClassVar[str] = ""
    datasets: ClassVar[dict[str, Dataset]] = {}
    recipes: ClassVar[dict[str, str]] = {}
    """Every view recipe that applies to it, with a one-line description."""
    default_recipes: ClassVar[tuple[str, ...] | None] = None
    augmentation: ClassVar[str] = "none"
    device_views: ClassVar[bool] = False
    """``data.augment_on: device`` applies: its views run as batched tensor ops on the device."""
    backbones: ClassVar[tuple[str, ...]] = ()
    fields: ClassVar[dict[str, tuple]] = {}
    """The ``data:`` keys its datasets and views read, beyond the shared ones, as pydantic field
    definitions ``key -> (type, default or Field(...))``: the config's ``data:`` section is the
    shared keys plus every modality's (a YAML written for one kind of data reads as before)."""
    keys: ClassVar[tuple[str, ...]] = ()
    """``data:`` keys that only its datasets read (refused, when changed from their defaults, for other kinds of data)."""
    loads: ClassVar[tuple[str, ...]] = ()
    """The ``fields`` its loaders read (``load_dataset``'s keyword arguments beyond the shared
    ones, in ``DataConfig.load_args``: two runs that agree on them can share one loaded copy)."""
    model_fields: ClassVar[dict[str, tuple]] = {}
    """The ``model:`` keys only its backbones read, as ``fields`` (refused, when changed, for other kinds
    of data); every backbone builder receives them as keyword arguments."""

    def method_recipes(self, method) -> tuple[str, ...]:
        """The recipes ``method`` (a ``Method`` class) takes on this data, its default first: a
        method's own where it is made for this kind of data or the modality has no defaults
        (images), else the modality's ``default_recipes``."""
        if self.default_recipes is None or method.modality is not None:
            return method.recipes
        return self.default_recipes

    def check(self, data) -> None:
        """Raise ``ValueError`` (one line, naming the key) where ``data`` (a ``DataConfig``) asks
        what its dataset cannot give; the shared checks are the config's."""

    def views(self, recipe: str, data: SplitData, cfg, n_views: int, local_crops: int, batched: bool) -> ViewMaker:
        """The view maker of ``recipe`` for ``data`` (its training split is the marginals a
        corruption recipe draws from), with ``cfg``'s settings (a ``DataConfig``): ``n_views``
        full-size views (plus ``local_crops`` small ones where the recipe has them); ``batched``:
        made on the batch's device."""
        raise NotImplementedError

    def fake(self, cfg, root: Path) -> str:
        """A tiny stand-in for ``cfg``'s data (a ``DataConfig``) written under ``root``, of its
        shape (channels, leads, length, columns): the ``data.path`` to load it from."""
        raise NotImplementedError


MODALITIES: dict[str, Modality] = {}
DATASETS: dict[str, str] = {}
"""Each dataset's name -> its modality's name."""


def register(cls: type[Modality]) -> type[Modality]:
    """Class decorator: make a :class:`Modality` and its datasets available by name."""
    if cls.name in MODALITIES:
        raise ValueError(f"modality {cls.name!r} registered twice")
    for dataset in cls.datasets:
        if dataset in DATASETS:
            raise ValueError(f"dataset {dataset!r} of modality {cls.name!r} is already {DATASETS[dataset]!r}'s")
        DATASETS[dataset] = cls.name
    MODALITIES[cls.name] = cls()
    return cls


def modality_of(dataset: str) -> Modality:
    """The modality of the dataset named ``dataset`` (``data.name``)."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; available: {', '.join(DATASETS)}")
    return MODALITIES[DATASETS[dataset]]


def dataset(name: str) -> Dataset:
    return modality_of(name).datasets[name]


def field_default(field: tuple) -> Any:
    """The default of a ``fields`` entry ``(type, default or Field(...))``."""
    default = field[1]
    return default.get_default(call_default_factory=True) if isinstance(default, FieldInfo) else default


def load_dataset(name: str, path: str | None = None, test_fraction: float = 0.2, split_seed: int = 0, stream: bool = False,
                 on_bad_file: str = "fail", samples: int | None = None, **keys) -> SplitData:
    """Load a dataset by its config name: the keyword arguments are ``DataConfig.load_args()``:
    the shared ones (``on_bad_file``, fail | skip, is what a streamed dataset does with a file it
    cannot read; ``samples``, how many a generated dataset makes) and each modality's ``loads`` (``image_size`` resizes images; ``columns`` and
    ``missing`` describe a CSV/Parquet table; ``signal_length``, ``sampling_rate``, ``leads`` and
    ``labels`` shape WFDB records; ...), their defaults where not given."""
    defaults = {key: field_default(kind.fields[key]) for kind in MODALITIES.values() for key in kind.loads}
    unknown = sorted(set(keys) - set(defaults))
    if unknown:
        raise TypeError(f"load_dataset got unknown keys {', '.join(unknown)}")
    args = {**defaults, **keys, "name": name, "path": path, "test_fraction": test_fraction, "split_seed": split_seed,
            "stream": stream, "on_bad_file": on_bad_file, "samples": samples}
    return dataset(name).load(args)
