"""Geometry checks shared by the readers (:mod:`spacrd_sc.io`) and the labelling (:mod:`spacrd_sc.pp`).

Coordinates must be finite; drawn polygons must be valid areas: invalid ones are repaired with
:func:`shapely.make_valid` and a warning naming them, NaN / degenerate ones are refused with a
:class:`ValueError` naming them, never a shapely / GEOS traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._logging import logger

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

#: Geometry types that are areas (the only ones that label spots).
AREA_TYPES = ("Polygon", "MultiPolygon")


def _check_finite_xy(xy: np.ndarray, what: str, names: Sequence[Any] | None = None) -> None:
    """:class:`ValueError` naming how many (and which) coordinates of ``what`` are NaN or infinite."""
    xy = np.asarray(xy, dtype=float)
    bad = ~np.isfinite(xy).all(axis=1) if xy.ndim == 2 else ~np.isfinite(xy)
    n_bad = int(bad.sum())
    if n_bad:
        idx = np.flatnonzero(bad)[:5]
        shown = [str(names[i]) for i in idx] if names is not None else [str(i) for i in idx]
        raise ValueError(f"{n_bad} of {len(xy)} {what} are NaN or infinite (e.g. {', '.join(shown)}).")


def _check_geometry(geom: BaseGeometry, label: str) -> BaseGeometry:
    """A valid (multi)polygon with area from ``geom``, or a :class:`ValueError` naming ``label``.

    - NaN / infinite coordinates, no coordinates, a ring with fewer than 3 distinct points: refused;
    - an invalid geometry (self-intersecting "bow-tie", ring touching itself, hole outside its shell) is
      repaired with :func:`shapely.make_valid` (its polygonal part) and a warning naming the feature; one
      whose repair has no area (all points on one line) is refused.
    """
    import shapely
    from shapely.geometry import GeometryCollection, MultiPolygon, Polygon

    coords = shapely.get_coordinates(geom)
    if geom.is_empty or len(coords) == 0:
        raise ValueError(f"{label} has no coordinates; remove it or redraw it.")
    if not np.isfinite(coords).all():
        raise ValueError(f"{label} has NaN or infinite coordinates; remove it or redraw it.")
    parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
    for part in parts:
        for ring in [part.exterior, *part.interiors]:
            n = len(np.unique(np.round(np.asarray(ring.coords), 12), axis=0))
            if n < 3:
                raise ValueError(
                    f"{label} has a degenerate ring ({n} distinct points; a polygon needs at least 3): "
                    "remove it or redraw it."
                )
    if geom.is_valid:
        return geom
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom)
    if isinstance(fixed, GeometryCollection):  # make_valid may return lines / points beside the areas
        areas = [g for g in fixed.geoms if isinstance(g, Polygon | MultiPolygon)]
        fixed = shapely.union_all(areas) if areas else Polygon()
    if fixed.is_empty or not fixed.area > 0:
        raise ValueError(
            f"{label} is invalid ({reason}) and has no area (zero-area ring: its points lie on one line); "
            "remove it or redraw it."
        )
    logger.warning(
        "%s is invalid (%s); repaired with shapely.make_valid (area %.6g -> %.6g). Check the drawing.",
        label,
        reason,
        geom.area,
        fixed.area,
    )
    return fixed


def _checked_polygons(geoms: Sequence[BaseGeometry], labels: Sequence[str]) -> list[BaseGeometry]:
    """:func:`_check_geometry` on every polygon (the others are left as they are)."""
    return [
        _check_geometry(g, lab) if g is not None and g.geom_type in AREA_TYPES else g
        for g, lab in zip(geoms, labels, strict=True)
    ]
