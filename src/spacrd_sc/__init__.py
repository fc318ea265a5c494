"""SpaCRD for scverse: cancer tissue regions from H&E histology and spatial transcriptomics.

Submodules (``io``, ``pp``, ``tl``, ``pl``, ``datasets``) and :class:`SpaCRD` are imported on first use, so
``import spacrd_sc`` stays light (torch and spatialdata load only when a function needs them).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._settings import settings

try:
    __version__ = version("spacrd_sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

_SUBMODULES = ("datasets", "io", "pl", "pp", "tl")

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import datasets, io, pl, pp, tl
    from .model import SpaCRD


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "SpaCRD":
        from .model import SpaCRD

        return SpaCRD
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["SpaCRD", "datasets", "io", "pl", "pp", "settings", "tl", "__version__"]
