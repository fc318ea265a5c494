"""Drawn annotations (QuPath / GeoJSON polygons with class names) → a shapes GeoDataFrame."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._constants import CLASS_COLUMN
from .._logging import logger

if TYPE_CHECKING:
    from geopandas import GeoDataFrame

#: Properties tried in turn when no ``class_key`` is given (QuPath: ``classification.name``, then ``name``).
DEFAULT_CLASS_KEYS = ("classification.name", "classification", "name")


def _lookup(props: Mapping[str, Any] | None, dotted: str) -> Any:
    """``props["a"]["b"]`` for ``"a.b"``; a nested object is accepted as a JSON string too; ``None`` if absent."""
    value: Any = props
    for part in dotted.split("."):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _class_names(props: pd.Series, class_key: str | None) -> tuple[pd.Series, str]:
    """The class name of every feature from ``class_key`` (or the first default that names any feature)."""
    candidates = (class_key,) if class_key is not None else DEFAULT_CLASS_KEYS
    for key in candidates:
        names = props.map(lambda p, k=key: _lookup(p, k))
        if names.notna().any():
            return names.map(lambda v: None if v is None else str(v)), key
    seen = sorted({k for p in props if isinstance(p, Mapping) for k in p})
    tried = f"class_key {class_key!r}" if class_key is not None else f"the properties {list(DEFAULT_CLASS_KEYS)}"
    raise KeyError(
        f"No feature has {tried}; the features carry the properties {seen or 'none'}. "
        "Pass `class_key=` naming the property with the class (dotted for nested, e.g. 'classification.name')."
    )


def _features(source: str | Path | Mapping[str, Any] | list) -> list[Mapping[str, Any]]:
    """The features of a GeoJSON file / dict: a FeatureCollection, a list of features (QuPath) or one feature."""
    if isinstance(source, Mapping | list):
        doc: Any = source
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GeoJSON file {str(path)!r} does not exist.")
        try:
            doc = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from err
    if isinstance(doc, Mapping) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features", [])
    elif isinstance(doc, Mapping) and doc.get("type") == "Feature":
        feats = [doc]
    elif isinstance(doc, list):
        feats = doc
    else:
        raise ValueError("Expected a GeoJSON FeatureCollection, a Feature or a list of Features.")
    return [f for f in feats if isinstance(f, Mapping) and f.get("geometry")]


def annotations(
    path: str | Path | Mapping[str, Any] | list,
    *,
    class_key: str | None = None,
    object_type: str | None = None,
    scale: float = 1.0,
) -> GeoDataFrame:
    """Read drawn polygons and their class names from GeoJSON (e.g. a QuPath export).

    QuPath's "Export objects as GeoJSON" writes a FeatureCollection (or a list of features) whose features
    carry ``properties.classification.name`` (the class) and ``properties.objectType``
    (``"annotation"``, ``"detection"``, …), in pixels of the full-resolution image.

    Parameters
    ----------
    path
        GeoJSON file, or the parsed GeoJSON (a FeatureCollection / Feature dict or a list of features).
    class_key
        Property holding the class name; dotted for nested properties (``"classification.name"``). Default:
        the first of ``classification.name``, ``classification``, ``name`` that any feature has.
    object_type
        Keep only features whose ``properties.objectType`` equals this (e.g. ``"annotation"``). Default: all.
    scale
        Factor applied to the coordinates, for an image read at another resolution than the one drawn on
        (e.g. ``2000 / 6954`` for her2st A1's downscaled H&E).

    Returns
    -------
    :class:`geopandas.GeoDataFrame` of the (multi)polygons, parsed by :class:`spatialdata.models.ShapesModel`
    (so ``sdata.shapes["annotations"] = ...`` works), with column ``class`` (str) and the feature's other
    top-level properties; ``attrs["class_key"]`` names the property the classes came from. Features without
    a class are dropped with a warning.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not GeoJSON, or no polygon features (after ``object_type``).
    KeyError
        No feature has ``class_key`` (the message lists the properties present).
    """
    import geopandas as gpd
    from shapely import affinity
    from spatialdata.models import ShapesModel

    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}.")
    feats = _features(path)
    if object_type is not None:
        feats = [f for f in feats if (f.get("properties") or {}).get("objectType") == object_type]
    gdf = gpd.GeoDataFrame.from_features([{**f, "properties": f.get("properties") or {}} for f in feats])
    if not gdf.empty:
        gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    if gdf.empty:
        what = f" of objectType {object_type!r}" if object_type is not None else ""
        raise ValueError(f"No polygon features{what} in the GeoJSON; annotations must be drawn as areas.")
    props = pd.Series([f.get("properties") or {} for f in feats], dtype=object).iloc[gdf.index.to_numpy()]
    names, used = _class_names(props.reset_index(drop=True), class_key)
    gdf = gdf.reset_index(drop=True)
    gdf[CLASS_COLUMN] = names.to_numpy()
    n_missing = int(gdf[CLASS_COLUMN].isna().sum())
    if n_missing:
        logger.warning("Dropping %d polygons without a %r class.", n_missing, used)
        gdf = gdf[gdf[CLASS_COLUMN].notna()].reset_index(drop=True)
    if scale != 1.0:
        gdf = gdf.set_geometry(gdf.geometry.map(lambda g: affinity.scale(g, scale, scale, origin=(0, 0))))
    # nested dict properties (classification, measurements) do not survive writing; keep flat ones only
    flat = [c for c in gdf.columns if c == "geometry" or not gdf[c].map(lambda v: isinstance(v, Mapping)).any()]
    gdf = ShapesModel.parse(gpd.GeoDataFrame(gdf[flat], geometry="geometry"))
    gdf.attrs["class_key"] = used
    return gdf
