"""Kinds of data, one module each (``modalities/<name>.py``), registered by name in
:data:`MODALITIES` (see ``base.py`` for the contract). Every module of this package other than
``base`` is imported here, so a new modality file registers itself and its datasets."""

import importlib
import pkgutil

from selfsup.modalities.base import DATASETS, MODALITIES, Dataset, Modality, dataset, load_dataset, modality_of

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "MODALITIES", "Dataset", "Modality", "dataset", "load_dataset", "modality_of"]
