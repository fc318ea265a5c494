"""Readers: a section → :class:`~spatialdata.SpatialData` (image, spots, table ``"table"``)."""

from __future__ import annotations

from ._annotations import annotations
from ._export import write_qupath
from ._legacy_st import legacy_st
from ._visium import visium
from ._visium_hd import visium_hd
from ._xenium import xenium

__all__ = ["legacy_st", "visium", "visium_hd", "xenium"]
__all__ += ["annotations", "write_qupath"]
