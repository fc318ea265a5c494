"""Readers: a section → :class:`~spatialdata.SpatialData` (image ``"he"``, spots, table ``"table"``)."""

from __future__ import annotations

from ._annotations import annotations
from ._legacy_st import legacy_st
from ._tenx import visium, visium_hd, xenium

__all__ = ["legacy_st", "visium", "visium_hd", "xenium"]
__all__ += ["annotations"]
