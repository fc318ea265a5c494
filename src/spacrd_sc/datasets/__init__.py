"""Public example data sets (read from a local copy or downloaded once with pooch) and the her2st model."""

from __future__ import annotations

from ._her2st import her2st
from ._reference import her2st_model

__all__ = ["her2st", "her2st_model"]
