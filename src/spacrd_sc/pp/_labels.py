"""Spot labels from drawn polygons (a pathologist's QuPath / GeoJSON annotation or shapes in a SpatialData)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _validate
from .._constants import CLASS_COLOR_COLUMN, CLASS_COLUMN, LABEL_KEY, TABLE_KEY
from .._docs import inject_docs
from .._geometry import _check_finite_xy, _checked_polygons
from .._logging import logger
from .._utils import _get_table
from ..io import annotations as read_annotations

if TYPE_CHECKING:
    from anndata import AnnData
    from geopandas import GeoDataFrame
    from spatialdata import SpatialData

#: Relative tolerance under which two polygon areas count as equal (a tie that the overlap rule cannot break).
AREA_RTOL = 1e-9
#: Colour of the ``outside`` category in ``uns[f"{key_added}_colors"]``: a neutral grey.
OUTSIDE_COLOR = "#bfbfbf"
#: Palette for classes drawn without a colour (matplotlib's ``tab20``), taken in category order, skipping
#: colours the drawing already uses.
DEFAULT_PALETTE = "tab20"


def _class_table(source: Any, key: str, what: str) -> GeoDataFrame:
    """``class`` + geometry of a GeoDataFrame / shapes element; rows without a class dropped with a warning.

    Missing classes (NaN / None) would otherwise become the class ``"nan"``; geometries are checked as
    :func:`spacrd_sc.io.annotations` checks GeoJSON (invalid ones repaired with a warning, NaN / degenerate
    ones refused), naming the polygon by its row and class.
    """
    import geopandas as gpd

    cls = source[key]
    missing = cls.isna().to_numpy()
    if missing.all():
        raise ValueError(f"{what} have no class in column {key!r} (all missing).")
    if missing.any():
        logger.warning("Dropping %d polygons of %s without a class (column %r).", int(missing.sum()), what, key)
    cls = cls[~missing].astype(str).to_numpy()
    geoms = list(source.geometry.to_numpy()[~missing])
    rows = np.flatnonzero(~missing)
    labels = [f"polygon {r} (class {c!r}) of {what}" for r, c in zip(rows, cls, strict=True)]
    cols = {CLASS_COLUMN: cls}
    if CLASS_COLOR_COLUMN in source.columns:  # e.g. shapes read by io.annotations: keep the drawn colours
        cols[CLASS_COLOR_COLUMN] = source[CLASS_COLOR_COLUMN].to_numpy()[~missing]
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries(_checked_polygons(geoms, labels)))


def _category_colors(polys: GeoDataFrame, categories: list[str], outside: str | None) -> list[str]:
    """``"#rrggbb"`` per category: the class's drawn colour (first polygon with one), grey for ``outside``,
    else the next :data:`DEFAULT_PALETTE` colour not already used."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    drawn: dict[str, str] = {}
    if CLASS_COLOR_COLUMN in polys.columns:
        for c, col in zip(polys[CLASS_COLUMN], polys[CLASS_COLOR_COLUMN], strict=True):
            if isinstance(col, str) and col.startswith("#") and str(c) not in drawn:
                drawn[str(c)] = col.lower()
    cmap = colormaps[DEFAULT_PALETTE]
    palette = [h for h in (to_hex(cmap(i)) for i in range(cmap.N)) if h not in drawn.values()]
    out = []
    for cat in categories:
        if cat in drawn:
            out.append(drawn[cat])
        elif outside is not None and cat == outside:
            out.append(OUTSIDE_COLOR)
        else:
            out.append(palette.pop(0) if palette else OUTSIDE_COLOR)
    return out


def _resolve_overlaps(hits: pd.DataFrame, polys: GeoDataFrame, points: GeoDataFrame) -> tuple[pd.DataFrame, int]:
    """One polygon per spot by the overlap rule; report the spots where classes overlap.

    The rule: a spot whose centre lies in several polygons takes the class of the **smallest** one (by area).
    Nested drawings are the usual case (a gland or a stroma island drawn inside a tumour outline) and the
    smaller, more specific polygon is the deliberate one; the rule does not depend on the order of the
    features in the file, which QuPath does not guarantee. Spots where polygons of *different* classes overlap
    are counted and reported in a warning (classes and spot counts). Where the smallest polygons holding a
    centre have the same area (relative tolerance :data:`AREA_RTOL`) but different classes:

    - the centre lies *inside* several of them (duplicated polygons): no rule can choose, a
      :class:`ValueError` names the polygons;
    - the centre lies only on their shared border (equal tiles drawn edge to edge): the polygon with the
      lowest row wins, and the warning says how many spots were on such a border.

    ``hits``: rows of the spatial join (``row`` = spot, ``index_right`` = polygon, ``class``, ``area``).
    Returns the winning hit per spot and the number of spots in overlapping polygons of different classes.
    """
    import shapely

    interior = shapely.contains(
        polys.geometry.to_numpy()[hits["index_right"].to_numpy()], points.geometry.to_numpy()[hits["row"].to_numpy()]
    )
    smallest = hits.groupby("row")["area"].transform("min").to_numpy()
    is_min = np.isclose(hits["area"].to_numpy(), smallest, rtol=AREA_RTOL, atol=0.0)
    hits = hits.assign(_min=is_min, _interior=interior)
    # winner: among the smallest polygons, one holding the centre inside rather than on its border, lowest row
    order = hits.assign(_a=~hits["_min"], _b=~hits["_interior"])
    hits = order.sort_values(["row", "_a", "_b", "area", "index_right"], kind="stable").drop(columns=["_a", "_b"])
    best = hits.drop_duplicates("row", keep="first")
    n_classes = hits.groupby("row")[CLASS_COLUMN].nunique()
    mixed = n_classes.index[n_classes > 1]
    if len(mixed) == 0:
        return best.drop(columns=["_min", "_interior"]), 0
    h = hits[hits["row"].isin(mixed) & hits["_min"]]
    inside = h[h["_interior"]]
    n_inside_classes = inside.groupby("row")[CLASS_COLUMN].nunique()
    dup_rows = n_inside_classes.index[n_inside_classes > 1]
    if len(dup_rows):
        t = inside[inside["row"].isin(dup_rows)]
        which = sorted({(int(i), str(c)) for i, c in zip(t["index_right"], t[CLASS_COLUMN], strict=True)})
        shown = ", ".join(f"polygon {i} ({c!r})" for i, c in which[:6])
        raise ValueError(
            f"{len(dup_rows)} spot centres lie in polygons of the same area but different classes ({shown}): "
            "duplicated polygons with conflicting classes, which the overlap rule (smallest polygon wins) cannot "
            "resolve. Remove the wrong copy or give the copies one class."
        )
    n_min_classes = h.groupby("row")[CLASS_COLUMN].nunique()
    n_border = int(((n_min_classes > 1) & ~n_min_classes.index.isin(inside["row"])).sum())
    winners = best.set_index("row").loc[mixed, CLASS_COLUMN]
    others = hits[hits["row"].isin(mixed)].groupby("row")[CLASS_COLUMN].agg(lambda c: tuple(sorted(set(map(str, c)))))
    pairs: dict[tuple[str, tuple[str, ...]], int] = {}
    for row, win in winners.items():
        key = (str(win), tuple(c for c in others[row] if c != win))
        pairs[key] = pairs.get(key, 0) + 1
    border = (
        f" {n_border} of them lie on the shared border of equal-area polygons and took the class of the one listed "
        "first."
        if n_border
        else ""
    )
    logger.warning(
        "%d spot centres lie in overlapping polygons of different classes; each took the class of the smallest "
        "polygon holding it: %s.%s",
        len(mixed),
        "; ".join(f"{w!r} over {', '.join(map(repr, lo))} ({n} spots)" for (w, lo), n in sorted(pairs.items())),
        border,
    )
    return best.drop(columns=["_min", "_interior"]), len(mixed)


def _polygons(
    data: AnnData | SpatialData, annotations: Any, class_key: str | None, coordinate_system: str | None
) -> GeoDataFrame:
    """The annotation polygons with a ``class`` column, in ``coordinate_system`` when one is used."""
    import geopandas as gpd
    from spatialdata import SpatialData
    from spatialdata import transform as sd_transform

    if isinstance(annotations, str) and isinstance(data, SpatialData) and annotations in data.shapes:
        gdf = data.shapes[annotations]
        if coordinate_system is not None:
            gdf = sd_transform(gdf, to_coordinate_system=coordinate_system)
        key = class_key or CLASS_COLUMN
        if key not in gdf.columns:
            raise KeyError(
                f"Shapes {annotations!r} have no class column {key!r} (columns: {list(gdf.columns)}); "
                "pass `class_key=`."
            )
        gdf = _class_table(gdf, key, f"shapes {annotations!r}")
    elif isinstance(annotations, gpd.GeoDataFrame):
        key = class_key or CLASS_COLUMN
        if key not in annotations.columns:
            raise KeyError(f"The GeoDataFrame has no class column {key!r} (columns: {list(annotations.columns)}).")
        gdf = _class_table(annotations, key, "the GeoDataFrame")
    elif isinstance(annotations, str | os.PathLike | Mapping | list):  # a list: QuPath's list of features
        if isinstance(annotations, str) and not Path(annotations).expanduser().exists():
            have = list(data.shapes) if isinstance(data, SpatialData) else []
            raise FileNotFoundError(
                f"annotations {annotations!r} is neither a GeoJSON file nor a shapes element "
                f"(shapes: {have or 'none'})."
            )
        gdf = read_annotations(annotations, class_key=class_key)
    else:
        raise TypeError(
            "annotations must be a GeoJSON path, dict or list of features, a GeoDataFrame, or the name of a shapes "
            f"element, got {type(annotations).__name__}."
        )
    n_other = int((~gdf.geom_type.isin(["Polygon", "MultiPolygon"])).sum())
    if n_other:
        logger.warning("Skipping %d annotation shapes that are not polygons (points, lines).", n_other)
    gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    if gdf.empty:
        raise ValueError("The annotations hold no polygons.")
    return gdf.reset_index(drop=True)


def _spot_centres(adata: AnnData, data: AnnData | SpatialData, coordinate_system: str | None) -> np.ndarray:
    """Spot centres ``(n, 2)``: ``obsm['spatial']``, or the table's spot shapes moved to ``coordinate_system``."""
    from spatialdata import SpatialData
    from spatialdata import transform as sd_transform
    from spatialdata.transformations import get_transformation

    if coordinate_system is None:
        return _validate.coordinates(adata)  # (n, 2) float64, present and finite
    if not isinstance(data, SpatialData):
        raise ValueError("coordinate_system= needs a SpatialData (an AnnData has only obsm['spatial']).")
    attrs = adata.uns.get("spatialdata_attrs", {})
    region, region_key, instance_key = attrs.get("region"), attrs.get("region_key"), attrs.get("instance_key")
    region = region[0] if isinstance(region, list | tuple | np.ndarray) and len(region) == 1 else region
    if not isinstance(region, str) or region not in data.shapes:
        raise ValueError(f"The table does not annotate one shapes element (region {region!r}); cannot place spots.")
    spots = data.shapes[region]
    have = list(get_transformation(spots, get_all=True))
    if coordinate_system not in have:
        raise KeyError(f"coordinate_system {coordinate_system!r} unknown for shapes {region!r} (have {have}).")
    moved = sd_transform(spots, to_coordinate_system=coordinate_system)
    centres = np.c_[moved.geometry.centroid.x, moved.geometry.centroid.y]
    pos = pd.Index(moved.index).get_indexer(adata.obs[instance_key].to_numpy())
    if (pos < 0).any() or (region_key in adata.obs and (adata.obs[region_key].astype(str) != region).any()):
        raise ValueError(f"Some table rows have no circle in shapes {region!r}.")
    _check_finite_xy(centres[pos], f"spot centres of shapes {region!r}", list(adata.obs_names))
    return centres[pos]


@inject_docs
def annotate_spots(
    data: AnnData | SpatialData,
    annotations: str | Path | Mapping[str, Any] | list | GeoDataFrame,
    *,
    class_key: str | None = None,
    key_added: str = "annotation",
    outside: str | None = "unannotated",
    coordinate_system: str | None = None,
    table_key: str = TABLE_KEY,
    cancer_classes: Sequence[str] | None = None,
    label_key: str = LABEL_KEY,
    copy: bool = False,
    overwrite: bool = False,
) -> AnnData | None:
    """Label every spot with the class of the drawn polygon that holds its centre.

    Turns a pathologist's region drawing (QuPath "Export objects as GeoJSON", or polygons already in a
    :class:`~spatialdata.SpatialData`) into a per-spot training label, e.g. for :func:`spacrd_sc.tl.fit_vrbca`.
    **Overlap rule.** A spot whose centre lies inside (or on the edge of) several polygons takes the class of
    the smallest one (by area), so a gland drawn inside a tumour outline wins over the outline, whatever the
    order of the features in the file. Spots where polygons of different classes overlap are reported in a
    warning (the classes and how many spots each took) and counted in ``uns[key_added]["n_overlap"]``.
    Duplicated polygons (equal area, relative tolerance ``1e-9``) of different classes holding a spot centre
    cannot be resolved by the rule and are refused. Polygons are checked as in :func:`spacrd_sc.io.annotations`
    (invalid ones repaired with a warning naming them, NaN / degenerate ones refused); messages name a
    polygon by its row in the annotations table. Point-in-polygon tests are geopandas spatial joins.

    Parameters
    ----------
    {data}
    annotations
        A GeoJSON file, dict or list of features (read by :func:`spacrd_sc.io.annotations`), a GeoDataFrame with a class
        column, or the name of a shapes element of ``data``.
    class_key
        For GeoJSON: the property with the class name (default ``classification.name``, then
        ``classification``, ``name``). For a GeoDataFrame / shapes element: the class column (default
        ``"class"``).
    key_added
        ``obs`` column to write.
    outside
        Value for spots outside every polygon (``None``: missing, NaN).
    coordinate_system
        Compare in this coordinate system of ``data`` (a SpatialData): the table's spot circles and a shapes
        element are transformed into it, and a GeoJSON is taken to be drawn in it. Default: the frame of
        ``obsm['spatial']`` — for the :mod:`spacrd_sc.io` readers the H&E's pixels (``"global"``).
    {table_key}
    cancer_classes
        Classes that count as cancer (e.g. ``["Tumor"]``): also write the boolean training label
        ``obs[label_key]`` (spot's class in ``cancer_classes``; spots outside every polygon are ``False``), read
        by :func:`spacrd_sc.tl.fit_vrbca`. A name that is not a class of the drawing is an error naming it and
        the classes found. Default: no label column.
    label_key
        ``obs`` column for the boolean label written with ``cancer_classes``.
    {copy}
    overwrite
        Replace existing keys (``obs[key_added]``, ``uns[key_added]``, ``uns[f"{key_added}_colors"]``,
        ``obs[label_key]``) that spacrd_sc did not write (refused otherwise, e.g. ``key_added="pathology"``); keys
        it wrote are replaced with a warning.

    Returns
    -------
    ``None`` (or the table with ``copy=True``); writes ``obs[key_added]``, categorical with the classes in
    the order of first appearance, then ``outside``; ``uns[f"{key_added}_colors"]``, one ``"#rrggbb"`` per
    category in category order (the colours scanpy and squidpy plot the column with): the class's QuPath colour
    (``classification.color`` of its first polygon that has one, see :func:`spacrd_sc.io.annotations`), grey
    ``#bfbfbf`` for ``outside``, and for classes drawn without a colour the next colour of matplotlib's
    ``tab20`` palette not used by the drawing; with ``cancer_classes``, ``obs[label_key]`` (bool); and
    ``uns[key_added]["params"]`` plus
    ``uns[key_added]["n_inside"]`` (spots inside a polygon) and ``uns[key_added]["n_overlap"]`` (spots inside
    overlapping polygons of different classes, labelled by the overlap rule).

    Raises
    ------
    KeyError
        Unknown class property/column (the message lists those present), unknown coordinate system.
    ValueError
        No polygons; no spot centre inside any polygon (the polygons are likely in another frame: the
        message gives both extents); a polygon with NaN / infinite coordinates, a ring of fewer than 3
        distinct points or no area once repaired; duplicated polygons of different classes holding a spot
        centre; NaN / infinite spot centres; a GeoDataFrame / shapes element whose class column is all missing;
        ``cancer_classes`` naming classes not in the drawing, or ``label_key`` equal to ``key_added``.
    TypeError
        ``cancer_classes`` not a list of str.
    """
    import geopandas as gpd

    adata = _validate.table(_get_table(data, table_key), what="annotate_spots")
    if cancer_classes is not None:
        if isinstance(cancer_classes, str) or not all(isinstance(c, str) for c in cancer_classes):
            raise TypeError(f"cancer_classes must be a list of class names (str), got {cancer_classes!r}.")
        cancer_classes = list(cancer_classes)
        if label_key == key_added:
            raise ValueError(f"label_key and key_added must differ (both {key_added!r}).")
    written = {"obs": [key_added], "uns": [key_added, f"{key_added}_colors"]}
    if cancer_classes is not None:
        written["obs"].append(label_key)
    _validate.writable_keys(adata, written, overwrite=overwrite, record=key_added)
    if coordinate_system is None:
        _validate.coordinates(adata)
    polys = _polygons(data, annotations, class_key, coordinate_system)
    classes = list(pd.unique(polys[CLASS_COLUMN]))
    if cancer_classes is not None:
        unknown = [c for c in cancer_classes if c not in classes]
        if unknown:
            raise ValueError(f"cancer_classes {unknown} are not classes of the annotations; classes found: {classes}.")
    xy = _spot_centres(adata, data, coordinate_system)
    points = gpd.GeoDataFrame({"row": np.arange(adata.n_obs)}, geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]))
    polys = polys.assign(area=polys.geometry.area)
    hits = gpd.sjoin(points, polys, how="inner", predicate="intersects")
    if hits.empty:
        pb = np.round(polys.total_bounds, 1).tolist()
        sb = np.round([*xy.min(axis=0), *xy.max(axis=0)], 1).tolist()
        raise ValueError(
            f"No spot centre lies inside any of the {len(polys)} polygons: polygon extent (xmin, ymin, xmax, ymax) "
            f"{pb} vs spot extent {sb}. Are the polygons in another frame (e.g. drawn on the full-resolution "
            "image while the section uses a downscaled one: `sc_crd.io.annotations(..., scale=)`), or pass "
            "`coordinate_system=`."
        )
    best, n_overlap = _resolve_overlaps(hits, polys, points)
    labels = np.full(adata.n_obs, outside if outside is not None else None, dtype=object)
    labels[best["row"].to_numpy()] = best[CLASS_COLUMN].to_numpy()
    categories = classes + ([outside] if outside is not None and outside not in classes else [])
    if copy:
        adata = adata.copy()
    adata.obs[key_added] = pd.Categorical(labels, categories=categories)
    adata.uns[f"{key_added}_colors"] = _category_colors(polys, categories, outside)
    if cancer_classes is not None:
        adata.obs[label_key] = np.isin(labels.astype(str), cancer_classes) & pd.notna(labels)
    params = {
        "class_key": class_key,
        "outside": outside,
        "coordinate_system": coordinate_system,
        "cancer_classes": cancer_classes,
        "label_key": label_key if cancer_classes is not None else None,
    }
    adata.uns[key_added] = {
        "params": {k: v for k, v in params.items() if v is not None},
        "n_inside": len(best),
        "n_overlap": n_overlap,
    }
    _validate.record_written(adata, written)
    logger.info("%d of %d spots lie inside an annotated polygon.", len(best), adata.n_obs)
    return adata if copy else None
