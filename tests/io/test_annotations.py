"""io.annotations: QuPath / GeoJSON polygons with their class names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import spacrd_sc as sc_crd


def square(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def qupath_feature(geometry: dict, cls: str | None, object_type: str = "annotation", **props) -> dict:
    """A feature as QuPath's 'Export objects as GeoJSON' writes it."""
    properties = {"objectType": object_type, **props}
    if cls is not None:
        properties["classification"] = {"name": cls, "color": [200, 0, 0]}
    return {"type": "Feature", "id": "x", "geometry": geometry, "properties": properties}


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "annotations.geojson"
    path.write_text(json.dumps(doc))
    return path


def test_qupath_feature_collection(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [
            qupath_feature(square(0, 0, 10, 10), "Tumor"),
            qupath_feature(square(20, 0, 30, 10), "Stroma", name="region 2"),
            qupath_feature(square(40, 0, 41, 1), "Lymphocyte", object_type="detection"),
            qupath_feature({"type": "Point", "coordinates": [5, 5]}, "Tumor"),  # not an area: skipped
            qupath_feature(square(50, 0, 60, 10), None),  # unclassified: dropped with a warning
        ],
    }
    gdf = sc_crd.io.annotations(write(tmp_path, doc))
    assert gdf["class"].tolist() == ["Tumor", "Stroma", "Lymphocyte"]
    assert gdf.attrs["class_key"] == "classification.name"
    assert gdf.geometry.area.tolist() == [100.0, 100.0, 1.0]
    assert "classification" not in gdf.columns and gdf["name"].tolist()[1] == "region 2"
    only = sc_crd.io.annotations(doc, object_type="annotation", scale=0.5)  # a dict works too
    assert only["class"].tolist() == ["Tumor", "Stroma"]
    assert tuple(only.total_bounds) == (0.0, 0.0, 15.0, 5.0)


def test_list_of_features_and_user_property(tmp_path):
    feats = [
        {"type": "Feature", "geometry": square(0, 0, 2, 2), "properties": {"tissue": "gland", "name": "g1"}},
        {"type": "Feature", "geometry": square(5, 5, 9, 9), "properties": {"tissue": "fat", "name": "f1"}},
    ]
    path = write(tmp_path, feats)
    assert sc_crd.io.annotations(path, class_key="tissue")["class"].tolist() == ["gland", "fat"]
    assert sc_crd.io.annotations(path)["class"].tolist() == ["g1", "f1"]  # falls back to properties.name


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="No polygon features"):
        sc_crd.io.annotations({"type": "FeatureCollection", "features": []})
    doc = [qupath_feature(square(0, 0, 1, 1), "Tumor")]
    with pytest.raises(ValueError, match="objectType 'detection'"):
        sc_crd.io.annotations(doc, object_type="detection")
    with pytest.raises(KeyError, match=r"class_key 'tissue'.*classification"):
        sc_crd.io.annotations(doc, class_key="tissue")
    with pytest.raises(KeyError, match="properties"):
        sc_crd.io.annotations([{"type": "Feature", "geometry": square(0, 0, 1, 1), "properties": {"a": 1.5}}])
    with pytest.raises(FileNotFoundError, match="missing.geojson"):
        sc_crd.io.annotations(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        sc_crd.io.annotations(bad)


def test_class_colours():
    """``classification.color``: an [r, g, b] list, QuPath's packed (signed) int, a JSON-string classification;
    anything unreadable is ``None`` (the class then takes a palette colour in pp.annotate_spots)."""
    feats = [
        qupath_feature(square(0, 0, 1, 1), "Tumor"),  # [200, 0, 0]
        {
            "type": "Feature",
            "geometry": square(2, 0, 3, 1),
            "properties": {"classification": {"name": "A", "color": -16744448}},
        },
        {
            "type": "Feature",
            "geometry": square(4, 0, 5, 1),
            "properties": {"classification": {"name": "B", "color": 0x123456}},
        },
        {
            "type": "Feature",
            "geometry": square(6, 0, 7, 1),
            "properties": {"classification": '{"name": "C", "color": [1, 2, 3]}'},
        },
        {
            "type": "Feature",
            "geometry": square(8, 0, 9, 1),
            "properties": {"classification": {"name": "D", "color": [300, 0, 0]}},
        },
        {
            "type": "Feature",
            "geometry": square(10, 0, 11, 1),
            "properties": {"classification": {"name": "E", "color": "red"}},
        },
        {"type": "Feature", "geometry": square(12, 0, 13, 1), "properties": {"classification": {"name": "F"}}},
    ]
    gdf = sc_crd.io.annotations(feats)
    assert gdf["class"].tolist() == ["Tumor", "A", "B", "C", "D", "E", "F"]
    assert gdf["class_color"].tolist() == ["#c80000", "#008000", "#123456", "#010203", None, None, None]
