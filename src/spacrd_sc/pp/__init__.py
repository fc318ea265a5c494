"""Preprocessing: per-spot H&E patches."""

from __future__ import annotations

from ._labels import annotate_spots
from ._patches import spot_patches

__all__ = ["spot_patches"]
__all__ += ["annotate_spots"]
