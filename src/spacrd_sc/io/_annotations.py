"""Drawn annotations (QuPath / GeoJSON polygons with class names) → a shapes GeoDataFrame."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._constants import CLASS_COLOR_COLUMN, CLASS_COLUMN
from .._geometry import AREA_TYPES, _check_geometry
from .._logging import logger
from ._checks import _number

if TYPE_CHECKING:
    from geopandas import GeoDataFrame
    from shapely.geometry.base import BaseGeometry

#: Properties tried in turn when no ``class_key`` is given (QuPath: ``classification.name``, then ``name``).
DEFAULT_CLASS_KEYS = ("classification.name", "classification", "name")
#: GeoJSON geometry types (RFC 7946). Only the areal ones label spots; the others are skipped with a warning.
GEOJSON_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
)


def _feature_label(i: int, feature: Mapping[str, Any] | None = None, cls: Any = None) -> str:
    """``feature 3 (class 'Tumor', name 'region 2')``: how messages name a feature / polygon."""
    props = (feature or {}).get("properties") or {}
    if cls is None and isinstance(props, Mapping):
        cls = next((v for k in DEFAULT_CLASS_KEYS if (v := _lookup(props, k)) is not None), None)
    parts = [f"class {cls!r}"] if cls is not None else []
    name = props.get("name") if isinstance(props, Mapping) else None
    if isinstance(name, str) and name != cls:
        parts.append(f"name {name!r}")
    return f"feature {i}" + (f" ({', '.join(parts)})" if parts else "")


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


def _hex_color(value: Any) -> str | None:
    """A QuPath class colour as ``"#rrggbb"``: an ``[r, g, b]`` list of ints 0–255 (QuPath's GeoJSON export) or a
    packed int (``0xAARRGGBB`` / ``0xRRGGBB``, possibly negative as a signed 32-bit int, as QuPath stores
    colours internally); ``None`` for anything else (an unreadable colour is not an error: the class then
    takes a palette colour)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        v = value & 0xFFFFFF
        return f"#{(v >> 16) & 255:02x}{(v >> 8) & 255:02x}{v & 255:02x}"
    if isinstance(value, list | tuple) and len(value) in (3, 4):
        rgb = value[:3]
        if all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in rgb):
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    return None


def _class_color(props: Mapping[str, Any] | None) -> str | None:
    """The feature's ``classification.color`` (the classification may be a JSON string) as hex, else ``None``."""
    cls = (props or {}).get("classification") if isinstance(props, Mapping) else None
    if isinstance(cls, str):
        try:
            cls = json.loads(cls)
        except ValueError:
            return None
    return _hex_color(cls.get("color")) if isinstance(cls, Mapping) else None


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


def _features(source: str | Path | Mapping[str, Any] | list) -> list[tuple[int, Mapping[str, Any]]]:
    """The areal features of a GeoJSON file / dict (FeatureCollection, list of features (QuPath), one feature).

    Returns ``(position in the file, feature)`` pairs. Features without a geometry or with a non-areal one
    (points, lines) are skipped with a warning; a malformed feature or an unknown geometry type is a
    :class:`ValueError` naming the feature.
    """
    if isinstance(source, Mapping | list):
        doc: Any = source
    elif isinstance(source, str | os.PathLike) and not isinstance(source, bytes):
        path = Path(source).expanduser()
        if path.is_dir():
            raise FileNotFoundError(f"GeoJSON file {str(path)!r} is a folder, not a file.")
        if not path.is_file():
            raise FileNotFoundError(f"GeoJSON file {str(path)!r} does not exist.")
        try:
            doc = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None
    else:
        raise TypeError(
            "annotations must be a GeoJSON file path, a GeoJSON dict or a list of features; "
            f"got {type(source).__name__}."
        )
    if isinstance(doc, Mapping) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features", [])
        if not isinstance(feats, list):
            raise ValueError(f"The FeatureCollection's 'features' must be a list; got {type(feats).__name__}.")
    elif isinstance(doc, Mapping) and doc.get("type") == "Feature":
        feats = [doc]
    elif isinstance(doc, list):
        feats = doc
    else:
        what = f"type {doc.get('type')!r}" if isinstance(doc, Mapping) else type(doc).__name__
        raise ValueError(f"Expected a GeoJSON FeatureCollection, a Feature or a list of Features; got {what}.")
    out, skipped = [], Counter()
    for i, f in enumerate(feats):
        if not isinstance(f, Mapping):
            raise ValueError(f"feature {i} is not a GeoJSON Feature object (got {type(f).__name__}).")
        geom = f.get("geometry")
        if geom is None:
            skipped["no geometry"] += 1
            continue
        gtype = geom.get("type") if isinstance(geom, Mapping) else None
        if gtype not in GEOJSON_TYPES:
            raise ValueError(
                f"{_feature_label(i, f)} has the unknown geometry type {gtype!r} "
                f"(GeoJSON types: {list(GEOJSON_TYPES)})."
            )
        if gtype not in AREA_TYPES:
            skipped[gtype] += 1
            continue
        out.append((i, f))
    if skipped:
        logger.warning(
            "Skipping %d features that are not areas (%s): spots are labelled by polygons only.",
            sum(skipped.values()),
            ", ".join(f"{k}: {v}" for k, v in skipped.items()),
        )
    return out


def _shape(i: int, feature: Mapping[str, Any]) -> BaseGeometry:
    """The shapely geometry of a feature; a malformed one is a :class:`ValueError` naming it."""
    from shapely.geometry import shape

    try:
        with warnings.catch_warnings():  # NaN coordinates: reported by _check_geometry instead
            warnings.simplefilter("ignore", RuntimeWarning)
            return shape(feature["geometry"])
    except Exception as err:  # noqa: BLE001  shapely raises ValueError / TypeError / IndexError / GEOSException
        raise ValueError(f"{_feature_label(i, feature)} has malformed coordinates ({err}).") from None


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
    (so ``sdata.shapes["annotations"] = ...`` works), with column ``class`` (str), column ``class_color``
    (QuPath's ``classification.color`` as ``"#rrggbb"``, from an ``[r, g, b]`` list or QuPath's packed int;
    ``None`` where the feature has none) and the feature's other top-level properties; ``attrs["class_key"]``
    names the property the classes came from. Features without a class are dropped with a warning; so are
    features that are not areas (points, lines, geometry collections) and features without a geometry.

    Every polygon is checked. An invalid one (self-intersecting "bow-tie", a ring touching itself) is
    repaired with :func:`shapely.make_valid` (its polygonal part) and a warning naming the feature (position in
    the file, class, ``name``); one whose repair has no area is refused. Messages name a feature by its
    position among the file's features (from 0).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (or is a folder).
    TypeError
        ``path`` is neither a path nor parsed GeoJSON; ``class_key`` / ``object_type`` not a str.
    ValueError
        Not GeoJSON; no polygon features (after ``object_type``); a feature with an unknown geometry type,
        malformed, NaN or infinite coordinates, no coordinates, a ring of fewer than 3 distinct points or no
        area once repaired (the message names the feature); ``scale`` not a positive finite number.
    KeyError
        No feature has ``class_key`` (the message lists the properties present).
    """
    import geopandas as gpd
    from shapely import affinity
    from spatialdata.models import ShapesModel

    scale = _number(scale, "scale")
    for name, value in (("class_key", class_key), ("object_type", object_type)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str or None; got {type(value).__name__} {value!r}.")
    feats = _features(path)
    if object_type is not None:
        feats = [(i, f) for i, f in feats if (f.get("properties") or {}).get("objectType") == object_type]
    if not feats:
        what = f" of objectType {object_type!r}" if object_type is not None else ""
        raise ValueError(f"No polygon features{what} in the GeoJSON; annotations must be drawn as areas.")
    props = pd.Series([f.get("properties") or {} for _, f in feats], dtype=object)
    names, used = _class_names(props, class_key)
    keep = names.notna().to_numpy()
    if not keep.all():
        logger.warning("Dropping %d polygons without a %r class.", int((~keep).sum()), used)
    kept = [(i, f, c) for (i, f), c, k in zip(feats, names, keep, strict=True) if k]
    geoms = [_check_geometry(_shape(i, f), _feature_label(i, f, c)) for i, f, c in kept]
    if scale != 1.0:
        geoms = [affinity.scale(g, scale, scale, origin=(0, 0)) for g in geoms]
    table = pd.DataFrame(
        [
            {k: v for k, v in (f.get("properties") or {}).items() if k not in ("geometry", CLASS_COLUMN)}
            for _, f, _ in kept
        ]
    )
    table[CLASS_COLUMN] = [c for _, _, c in kept]
    table[CLASS_COLOR_COLUMN] = [_class_color(f.get("properties")) for _, f, _ in kept]
    # nested dict properties (classification, measurements) do not survive writing; keep flat ones only
    flat = [c for c in table.columns if not table[c].map(lambda v: isinstance(v, Mapping | list)).any()]
    gdf = ShapesModel.parse(gpd.GeoDataFrame(table[flat], geometry=gpd.GeoSeries(geoms)))
    gdf.attrs["class_key"] = used
    return gdf
