"""Writers: regions (and spot scores) to a QuPath GeoJSON FeatureCollection on the original H&E."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _validate
from .._constants import CLASS_COLUMN, SPATIAL_KEY, TABLE_KEY
from .._docs import inject_docs
from .._logging import logger
from .._spatial import _spot_diameter_px
from .._utils import _get_table

if TYPE_CHECKING:
    from anndata import AnnData
    from geopandas import GeoDataFrame
    from spatialdata import SpatialData

#: Shapes element that :func:`spacrd_sc.tl.region_shapes` writes by default.
DEFAULT_REGIONS_KEY = "spacrd_regions"
#: Colour of a class without one (QuPath's grey).
DEFAULT_COLOR = (128, 128, 128)
#: Columns of a region table written as QuPath measurements (where present).
REGION_MEASUREMENTS = ("area_um2", "mean_score", "n_spots")


def _rgb(colour: Any) -> list[int]:
    """``"#rrggbb"`` (or any matplotlib colour) → ``[r, g, b]`` ints, QuPath's ``classification.color``."""
    from matplotlib.colors import to_rgb

    try:
        return [round(255 * c) for c in to_rgb(colour)]
    except (ValueError, TypeError):
        return list(DEFAULT_COLOR)


def _full_res_scale(adata: AnnData) -> float:
    """Full-resolution pixels of the original H&E per unit of ``obsm['spatial']``.

    The legacy-ST reader records ``metadata['image_scale']`` (spot-file pixels → the image it placed the spots
    on, e.g. 2000 / 6954 for a downscaled copy); the 10x readers place spots in full-resolution pixels (1).
    """
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or len(spatial) != 1:
        return 1.0
    entry = next(iter(spatial.values()))
    meta = dict(entry.get("metadata", {}) or {}) if isinstance(entry, Mapping) else {}
    image_scale = float(meta.get("image_scale", 1.0))
    if not (np.isfinite(image_scale) and image_scale > 0):
        raise ValueError(f"uns['spatial'][...]['metadata']['image_scale'] is {image_scale!r}; pass `scale=`.")
    return 1.0 / image_scale


def _number(value: Any) -> float | int | None:
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _region_features(regions: GeoDataFrame, scale: float) -> list[dict[str, Any]]:
    from shapely import affinity
    from shapely.geometry import mapping

    if CLASS_COLUMN not in regions.columns:
        raise KeyError(f"The regions have no {CLASS_COLUMN!r} column (columns: {list(regions.columns)}).")
    feats = []
    for _, row in regions.iterrows():
        geom = row.geometry
        if geom is None or geom.is_empty:
            continue
        if geom.geom_type == "MultiPolygon" and len(geom.geoms) == 1:
            geom = geom.geoms[0]
        geom = affinity.scale(geom, scale, scale, origin=(0, 0))
        name = str(row[CLASS_COLUMN])
        props: dict[str, Any] = {
            "objectType": "annotation",
            "classification": {"name": name, "color": _rgb(row.get("color"))},
            "name": f"{name} {row['region']}" if "region" in row else name,
            "measurements": {k: _number(row[k]) for k in REGION_MEASUREMENTS if k in row},
        }
        feats.append({"type": "Feature", "geometry": mapping(geom), "properties": props})
    return feats


def _spot_features(
    adata: AnnData, spot_keys: Sequence[str], class_key: str | None, scale: float
) -> list[dict[str, Any]]:
    import shapely
    from shapely.geometry import mapping

    xy = _validate.coordinates(adata) * scale
    radius = _spot_diameter_px(adata) * scale / 2
    circles = shapely.buffer(shapely.points(xy), radius, quad_segs=8)
    values = {}
    for k in spot_keys:
        col = _validate.obs_column(adata, k, param="spot_keys")
        values[k] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    if class_key is not None:
        classes = _validate.obs_column(adata, class_key, param="class_key").astype(str).to_numpy()
        cats = list(pd.unique(classes))
        if isinstance(adata.obs[class_key].dtype, pd.CategoricalDtype):
            cats = [str(c) for c in adata.obs[class_key].cat.categories]
        colours = dict(zip(cats, adata.uns.get(f"{class_key}_colors", []), strict=False))
    feats = []
    for i, name in enumerate(adata.obs_names):
        props: dict[str, Any] = {
            "objectType": "detection",
            "name": str(name),
            "measurements": {k: _number(values[k][i]) for k in spot_keys},
        }
        if class_key is not None:
            props["classification"] = {"name": classes[i], "color": _rgb(colours.get(classes[i]))}
        feats.append({"type": "Feature", "geometry": mapping(circles[i]), "properties": props})
    return feats


@inject_docs
def write_qupath(
    data: AnnData | SpatialData,
    path: str | Path,
    regions: GeoDataFrame | str | None = None,
    *,
    spot_keys: Sequence[str] | None = None,
    class_key: str | None = "spacrd_region",
    scale: float | None = None,
    table_key: str = TABLE_KEY,
    overwrite: bool = False,
) -> Path:
    """Write region polygons (and, optionally, spots with their scores) as a GeoJSON that QuPath imports.

    The file is a FeatureCollection in the **full-resolution pixel frame of the original H&E**, so
    QuPath's *File → Import objects* (or drag and drop) places it on the slide as scanned: coordinates of
    ``obsm['spatial']`` are multiplied by ``scale`` (for a legacy-ST section read with a downscaled copy of the
    image, 1 / ``metadata['image_scale']``, e.g. 6954 / 2000 for her2st A1). Each region is one Feature with
    ``objectType "annotation"``, ``classification {{"name", "color": [r, g, b]}}`` (the class and its colour
    from :func:`spacrd_sc.tl.region_shapes`), a ``name`` (class and region id) and ``measurements`` (area in
    µm², mean score, number of spots); its geometry is a Polygon, or a MultiPolygon only where one region's
    class has several parts. With ``spot_keys``, every spot is added as an ``objectType "detection"`` (a circle
    of the spot diameter) classified by ``obs[class_key]`` and carrying those ``obs`` columns as measurements.
    Read back with :func:`spacrd_sc.io.annotations` (``object_type="annotation"``, ``scale=`` the inverse of this
    one) or :func:`spacrd_sc.pp.annotate_spots`.

    Parameters
    ----------
    {data}
    path
        The ``.geojson`` file to write.
    regions
        A GeoDataFrame from :func:`spacrd_sc.tl.region_shapes` (in the frame of ``obsm['spatial']``), or the
        name of a shapes element of ``data``. Default: the shapes element ``"spacrd_regions"`` of a SpatialData.
    spot_keys
        ``obs`` columns (e.g. ``["spacrd_score"]``) written as measurements of one detection per spot.
        Default: no detections.
    class_key
        ``obs`` column classifying the detections (colours from ``uns[f"{{class_key}}_colors"]``); ``None``:
        unclassified detections.
    scale
        Full-resolution pixels per unit of ``obsm['spatial']``. Default: 1 / ``uns['spatial'][lib]['metadata']
        ['image_scale']`` where the reader recorded it, else 1.
    {table_key}
    overwrite
        Replace an existing file (refused otherwise).

    Returns
    -------
    The path written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    KeyError
        No regions given and no shapes element ``"spacrd_regions"``; regions without a ``class`` column; an
        unknown ``spot_keys`` / ``class_key`` column.
    ValueError
        ``scale`` not a positive finite number; regions of several sections; NaN spot coordinates.
    """
    from anndata import AnnData

    adata = _validate.table(_get_table(data, table_key), what="write_qupath")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
    if scale is None:
        scale = _full_res_scale(adata)
    if not (isinstance(scale, int | float) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"`scale` must be a positive finite number, got {scale!r}.")
    if regions is None or isinstance(regions, str):
        key = DEFAULT_REGIONS_KEY if regions is None else regions
        shapes = {} if isinstance(data, AnnData) else data.shapes
        if key not in shapes:
            raise KeyError(
                f"No shapes element {key!r}: pass `regions=` (the GeoDataFrame of `sc_crd.tl.region_shapes`) or "
                "run `sc_crd.tl.region_shapes` on the SpatialData first."
            )
        regions = shapes[key]
    if "section" in regions.columns and regions["section"].nunique() > 1:
        raise ValueError(
            f"The regions span sections {sorted(regions['section'].unique())}; a QuPath file belongs to one image: "
            "pass `regions[regions['section'] == name]` and that section's table."
        )
    features = _region_features(regions, float(scale))
    if spot_keys:
        features += _spot_features(adata, list(spot_keys), class_key, float(scale))
    collection = {"type": "FeatureCollection", "features": features}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(collection))
    os.replace(tmp, path)
    logger.info("Wrote %d features to %s (scale %.4g to full-resolution pixels).", len(features), path, scale)
    return path
