"""SpaCRD for scverse: cancer tissue regions from H&E histology and spatial transcriptomics."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from .model import SpaCRD

try:
    __version__ = version("spacrd_sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["SpaCRD", "datasets", "io", "pl", "pp", "tl", "__version__"]
