"""Self-supervised methods, one module each, registered by name in :data:`METHODS`."""

from selfsup.methods.base import METHODS, Method, build_method
from selfsup.methods import barlowtwins, byol, dino, ijepa, mae, mocov3, simclr, sjepa, tjepa, vicreg  # noqa: F401  (registers the methods)

__all__ = ["METHODS", "Method", "build_method"]
