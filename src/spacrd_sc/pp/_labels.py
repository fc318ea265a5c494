"""Spot labels from drawn polygons (a pathologist's QuPath / GeoJSON annotation or shapes in a SpatialData)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _validate
from .._constants import SPATIAL_KEY, TABLE_KEY
from .._docs import inject_docs
from .._logging import logger
from .._utils import _get_table
from ..io import annotations as read_annotations

if TYPE_CHECKING:
    from anndata import AnnData
    from geopandas import GeoDataFrame
    from spatialdata import SpatialData

CLASS_COLUMN = "class"


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
        gdf = gpd.GeoDataFrame({CLASS_COLUMN: gdf[key].astype(str)}, geometry=gdf.geometry.to_numpy())
    elif isinstance(annotations, gpd.GeoDataFrame):
        key = class_key or CLASS_COLUMN
        if key not in annotations.columns:
            raise KeyError(f"The GeoDataFrame has no class column {key!r} (columns: {list(annotations.columns)}).")
        gdf = gpd.GeoDataFrame({CLASS_COLUMN: annotations[key].astype(str)}, geometry=annotations.geometry.to_numpy())
    elif isinstance(annotations, str | Path | Mapping):
        if isinstance(annotations, str) and not Path(annotations).expanduser().exists():
            have = list(data.shapes) if isinstance(data, SpatialData) else []
            raise FileNotFoundError(
                f"annotations {annotations!r} is neither a GeoJSON file nor a shapes element "
                f"(shapes: {have or 'none'})."
            )
        gdf = read_annotations(annotations, class_key=class_key)
    else:
        raise TypeError(
            "annotations must be a GeoJSON path or dict, a GeoDataFrame, or the name of a shapes element, "
            f"got {type(annotations).__name__}."
        )
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
        if SPATIAL_KEY not in adata.obsm:
            raise KeyError("adata.obsm['spatial'] (spot centres) is missing.")
        return np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)[:, :2]
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
    return centres[pos]


@inject_docs
def annotate_spots(
    data: AnnData | SpatialData,
    annotations: str | Path | Mapping[str, Any] | GeoDataFrame,
    *,
    class_key: str | None = None,
    key_added: str = "annotation",
    outside: str | None = "unannotated",
    coordinate_system: str | None = None,
    table_key: str = TABLE_KEY,
    copy: bool = False,
    overwrite: bool = False,
) -> AnnData | None:
    """Label every spot with the class of the drawn polygon that holds its centre.

    Turns a pathologist's region drawing (QuPath "Export objects as GeoJSON", or polygons already in a
    :class:`~spatialdata.SpatialData`) into a per-spot training label, e.g. for :func:`spacrd_sc.tl.fit_vrbca`.
    A spot whose centre lies inside (or on the edge of) several polygons takes the class of the smallest
    one, so a gland drawn inside a tumour outline wins over the outline. Point-in-polygon tests are
    geopandas spatial joins.

    Parameters
    ----------
    {data}
    annotations
        A GeoJSON file or dict (read by :func:`spacrd_sc.io.annotations`), a GeoDataFrame with a class
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
    {copy}
    overwrite
        Replace an existing ``obs[key_added]`` / ``uns[key_added]`` that spacrd_sc did not write (refused
        otherwise, e.g. ``key_added="pathology"``); keys it wrote are replaced with a warning.

    Returns
    -------
    ``None`` (or the table with ``copy=True``); writes ``obs[key_added]``, categorical with the classes in
    the order of first appearance, then ``outside``, and ``uns[key_added]["params"]`` plus
    ``uns[key_added]["n_inside"]`` (spots inside a polygon).

    Raises
    ------
    KeyError
        Unknown class property/column (the message lists those present), unknown coordinate system.
    ValueError
        No polygons, or no spot centre inside any polygon (the polygons are likely in another frame: the
        message gives both extents).
    """
    import geopandas as gpd

    adata = _validate.table(_get_table(data, table_key), what="annotate_spots")
    written = {"obs": [key_added], "uns": [key_added]}
    _validate.writable_keys(adata, written, overwrite=overwrite, record=key_added)
    if coordinate_system is None:
        _validate.coordinates(adata)
    polys = _polygons(data, annotations, class_key, coordinate_system)
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
    best = hits.sort_values(["row", "area"]).drop_duplicates("row", keep="first")
    classes = list(pd.unique(polys[CLASS_COLUMN]))
    labels = np.full(adata.n_obs, outside if outside is not None else None, dtype=object)
    labels[best["row"].to_numpy()] = best[CLASS_COLUMN].to_numpy()
    categories = classes + ([outside] if outside is not None and outside not in classes else [])
    if copy:
        adata = adata.copy()
    adata.obs[key_added] = pd.Categorical(labels, categories=categories)
    params = {"class_key": class_key, "outside": outside, "coordinate_system": coordinate_system}
    adata.uns[key_added] = {"params": {k: v for k, v in params.items() if v is not None}, "n_inside": len(best)}
    _validate.record_written(adata, written)
    logger.info("%d of %d spots lie inside an annotated polygon.", len(best), adata.n_obs)
    return adata if copy else None
