"""Self-supervised methods, one module each (``methods/<name>.py``), registered by name in
:data:`METHODS`. Every module of this package other than the shared ones is imported here, so a
new method file registers itself."""

import importlib
import pkgutil

from selfsup.methods.base import METHODS, Method, build_method

importlib.import_module("selfsup.modalities")  # they register their mask makers, which the masked methods ask for

SHARED = {"base", "ema"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in SHARED:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "build_method"]
