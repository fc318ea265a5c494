"""Public example data sets (read from a local copy or downloaded once with pooch)."""

from __future__ import annotations

from ._her2st import her2st

__all__ = ["her2st"]
