"""Bad inputs of every public ``sc_crd.pp`` function and the named error or warning each must get (issue #23).

``annotate_spots``: polygons (invalid, NaN, degenerate, overlapping, duplicated with different classes,
points, another frame) on a synthetic 10 x 10 spot grid and on the real her2st A1 section; ``spot_patches``:
sizes, indices and sections without an image. Each row: the input, the error type + message regex (raised in
spacrd_sc), or ``WARNS`` + the regex of the logged warning (the call then succeeds and the labels are checked).
"""

from __future__ import annotations

import json
import logging
import re
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from anndata import AnnData
from conftest import synthetic_image, synthetic_tables
from shapely import wkt
from shapely.geometry import Point, box

import spacrd_sc as sc_crd

WARNS = "warns"
NAN = float("nan")


def _expect(call: Callable[[], Any], error: type[BaseException] | str, match: str, caplog) -> Any:
    if error == WARNS:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
            out = call()
        messages = [r.getMessage() for r in caplog.records]
        assert any(re.search(match, m) for m in messages), f"no warning matching {match!r} in {messages}"
        return out
    with pytest.raises(error, match=match) as info:
        call()
    origin = traceback.extract_tb(info.value.__traceback__)[-1].filename
    assert "spacrd_sc" in origin, f"{error.__name__} raised from {origin}, not by spacrd_sc"
    return None


# --------------------------------------------------------------------------------------------------------
# a 10 x 10 grid of spots at (5, 5), (5, 15), ..., (95, 95)
# --------------------------------------------------------------------------------------------------------
def grid() -> AnnData:
    xy = np.array([[x, y] for x in range(10) for y in range(10)], dtype=float) * 10 + 5
    a = AnnData(np.ones((100, 3), dtype=np.float32))
    a.obs_names = [f"s{i}" for i in range(100)]
    a.obsm["spatial"] = xy
    return a


def inside(a: AnnData, geom) -> np.ndarray:
    return np.array([geom.covers(Point(x, y)) for x, y in a.obsm["spatial"]])


def gdf(*rows: tuple[Any, Any], column: str = "class") -> gpd.GeoDataFrame:
    """``gdf((geometry, class), ...)``: geometries may be WKT strings."""
    with warnings.catch_warnings():  # shapely warns on the NaN vertices these tests feed it
        warnings.simplefilter("ignore", RuntimeWarning)
        geoms = [wkt.loads(g) if isinstance(g, str) else g for g, _ in rows]
    return gpd.GeoDataFrame({column: [c for _, c in rows]}, geometry=geoms)


def feature(coords: list, cls: str, gtype: str = "Polygon") -> dict:
    return {"type": "Feature", "geometry": {"type": gtype, "coordinates": coords}, "properties": {"name": cls}}


BIG = box(0, 0, 60, 60)  # 36 spots
SMALL = box(30, 30, 50, 50)  # 4 spots, inside BIG
SIDE = box(40, 0, 90, 30)  # 15 spots, overlapping BIG on x in [40, 60], y < 30 (6 spots)
BOWTIE = "POLYGON ((0 0, 50 50, 50 0, 0 50, 0 0))"


def _annotate(annotations: Any, data: Callable[[], Any] = grid, **kwargs) -> Callable[[Path], Any]:
    def call(tmp_path: Path) -> Any:
        a = data()
        ann = annotations(tmp_path) if callable(annotations) else annotations
        out = sc_crd.pp.annotate_spots(a, ann, copy=True, **kwargs)
        return out

    return call


def _nan_centre() -> AnnData:
    a = grid()
    a.obsm["spatial"][7] = [NAN, 3.0]
    return a


def _no_spatial() -> AnnData:
    a = grid()
    del a.obsm["spatial"]
    return a


def _legacy_sdata():
    c, s = synthetic_tables()
    return sc_crd.io.legacy_st(c, s, synthetic_image())


def _with_shapes(name: str, shapes: gpd.GeoDataFrame) -> Callable[[], Any]:
    def make():
        from spatialdata.models import ShapesModel

        sd = _legacy_sdata()
        sd.shapes[name] = ShapesModel.parse(shapes)
        return sd

    return make


def _file(content: Any, name: str = "a.geojson") -> Callable[[Path], Path]:
    def write(tmp_path: Path) -> Path:
        p = tmp_path / name
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        return p

    return write


ANNOTATE: list = [
    # invalid geometries
    (
        "bow-tie GeoDataFrame repaired",
        _annotate(gdf((BOWTIE, "Tumor"))),
        WARNS,
        r"polygon 0 \(class 'Tumor'\) of the GeoDataFrame is invalid \(Self-intersection.*make_valid",
    ),
    (
        "bow-tie GeoJSON repaired",
        _annotate(
            {"type": "FeatureCollection", "features": [feature([[[0, 0], [50, 50], [50, 0], [0, 50], [0, 0]]], "T")]}
        ),
        WARNS,
        r"feature 0 \(class 'T'\) is invalid",
    ),
    (
        "NaN vertex (GeoDataFrame)",
        _annotate(gdf((SMALL, "Stroma"), ("POLYGON ((0 0, NaN 10, 10 0, 0 0))", "Tumor"))),
        ValueError,
        r"polygon 1 \(class 'Tumor'\) of the GeoDataFrame has NaN or infinite coordinates",
    ),
    (
        "NaN vertex (GeoJSON)",
        _annotate([feature([[[0, 0], [NAN, 10], [10, 0], [0, 0]]], "Tumor")]),
        ValueError,
        r"feature 0 \(class 'Tumor'\) has NaN",
    ),
    (
        "two distinct points",
        _annotate(gdf(("POLYGON ((0 0, 10 10, 0 0, 0 0))", "Tumor"))),
        ValueError,
        r"polygon 0 \(class 'Tumor'\) .* degenerate ring \(2 distinct points",
    ),
    (
        "zero area (collinear)",
        _annotate(gdf(("POLYGON ((0 0, 5 5, 10 10, 0 0))", "Tumor"))),
        ValueError,
        "is invalid .* has no area",
    ),
    ("empty polygon", _annotate(gdf(("POLYGON EMPTY", "Tumor"))), ValueError, "polygon 0 .* has no coordinates"),
    # overlaps: one rule (smallest polygon wins), reported
    (
        "nested polygons of different classes",
        _annotate(gdf((BIG, "Tumor"), (SMALL, "Stroma"))),
        WARNS,
        r"4 spot centres lie in overlapping polygons of different classes.*'Stroma' over 'Tumor' \(4 spots\)",
    ),
    (
        "nested, listed the other way round",
        _annotate(gdf((SMALL, "Stroma"), (BIG, "Tumor"))),
        WARNS,
        r"'Stroma' over 'Tumor' \(4 spots\)",
    ),
    (
        "partly overlapping polygons",
        _annotate(gdf((BIG, "Tumor"), (SIDE, "Stroma"))),
        WARNS,
        r"6 spot centres .*'Stroma' over 'Tumor' \(6 spots\)",
    ),
    (
        "three classes stacked",
        _annotate(gdf((BIG, "Tumor"), (SMALL, "Stroma"), (box(30, 30, 40, 40), "Immune"))),
        WARNS,
        r"'Immune' over 'Stroma', 'Tumor' \(1 spots\).*'Stroma' over 'Tumor' \(3 spots\)",
    ),
    (
        "duplicated polygon, different classes",
        _annotate(gdf((SMALL, "Tumor"), (SMALL, "Stroma"))),
        ValueError,
        r"4 spot centres lie in polygons of the same area but different classes "
        r"\(polygon 0 \('Tumor'\), polygon 1 \('Stroma'\)\)",
    ),
    (
        "duplicated polygon inside a bigger one",
        _annotate(gdf((BIG, "Normal"), (SMALL, "Tumor"), (SMALL, "Stroma"))),
        ValueError,
        "same area but different classes",
    ),
    (
        "duplicated GeoJSON features, different classes",
        _annotate(
            [feature([[[0, 0], [30, 0], [30, 30], [0, 30], [0, 0]]], c) for c in ("Tumor", "Stroma")],
        ),
        ValueError,
        "same area but different classes",
    ),
    # classes
    (
        "missing class dropped",
        _annotate(gdf((BIG, "Tumor"), (SMALL, None))),
        WARNS,
        r"Dropping 1 polygons of the GeoDataFrame without a class \(column 'class'\)",
    ),
    ("all classes missing", _annotate(gdf((BIG, None), (SMALL, None))), ValueError, "all missing"),
    ("no class column", _annotate(gdf((BIG, "Tumor"), column="kind")), KeyError, "no class column 'class'"),
    # not polygons / nothing to label
    ("Point shapes only", _annotate(gdf((Point(5, 5), "Tumor"))), ValueError, "hold no polygons"),
    ("Point GeoJSON only", _annotate([feature([5, 5], "Tumor", "Point")]), ValueError, "No polygon features"),
    ("empty FeatureCollection", _annotate({"type": "FeatureCollection", "features": []}), ValueError, "No polygon"),
    ("empty GeoJSON file", _annotate(_file("")), ValueError, "is not valid JSON"),
    ("unknown geometry type", _annotate([feature([], "T", "Circle")]), ValueError, "unknown geometry type 'Circle'"),
    (
        "polygons in another frame (far outside)",
        _annotate(gdf((box(1e5, 1e5, 2e5, 2e5), "Tumor"))),
        ValueError,
        r"No spot centre lies inside any of the 1 polygons: polygon extent .*100000",
    ),
    (
        "polygons in a negative frame",
        _annotate(gdf((box(-500, -500, -100, -100), "Tumor"))),
        ValueError,
        "No spot centre lies inside",
    ),
    # paths and types
    (
        "missing GeoJSON file",
        _annotate("no_such.geojson"),
        FileNotFoundError,
        "neither a GeoJSON file nor a shapes element",
    ),
    ("folder instead of a file", _annotate(lambda t: t), FileNotFoundError, "is a folder, not a file"),
    ("annotations an int", _annotate(3), TypeError, "annotations must be"),
    ("annotations a list of ints", _annotate([1, 2]), ValueError, "feature 0 is not a GeoJSON Feature"),
    # spots
    (
        "cancer_classes naming a class not drawn",
        _annotate(gdf((BIG, "Tumor"), (SIDE, "Fat")), cancer_classes=["Tumour"]),
        ValueError,
        r"cancer_classes \['Tumour'\] are not classes of the annotations; classes found: \['Tumor', 'Fat'\]",
    ),
    ("cancer_classes as one string", _annotate(gdf((BIG, "Tumor")), cancer_classes="Tumor"), TypeError, "list of"),
    ("NaN spot centre", _annotate(gdf((BIG, "Tumor")), data=_nan_centre), ValueError, r"NaN|finite"),
    ("no obsm['spatial']", _annotate(gdf((BIG, "Tumor")), data=_no_spatial), KeyError, r"obsm\['spatial'\]"),
    (
        "coordinate_system with an AnnData",
        _annotate(gdf((BIG, "Tumor")), coordinate_system="global"),
        ValueError,
        "needs a SpatialData",
    ),
    (
        "unknown coordinate_system",
        _annotate(gdf((BIG, "Tumor")), data=_legacy_sdata, coordinate_system="nope"),
        KeyError,
        "coordinate_system 'nope'",
    ),
    (
        "shapes element without a class column",
        _annotate("drawn", data=_with_shapes("drawn", gdf((box(0, 0, 200, 200), "T"), column="kind"))),
        KeyError,
        "Shapes 'drawn' have no class column 'class'",
    ),
    (
        "shapes element with a bow-tie",
        _annotate("drawn", data=_with_shapes("drawn", gdf(("POLYGON ((0 0, 200 200, 200 0, 0 200, 0 0))", "T")))),
        WARNS,
        r"polygon 0 \(class 'T'\) of shapes 'drawn' is invalid",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in ANNOTATE])
def test_annotate_spots(call, error, match, tmp_path, caplog) -> None:
    out = _expect(lambda: call(tmp_path), error, match, caplog)
    if error == WARNS:
        assert out.obs["annotation"].notna().all()


def test_overlap_rule_labels() -> None:
    """Smallest polygon wins whatever the order; ``n_overlap`` counts the spots of mixed classes."""
    for rows in [
        ((BIG, "Tumor"), (SMALL, "Stroma"), (SIDE, "Fat")),
        ((SIDE, "Fat"), (SMALL, "Stroma"), (BIG, "Tumor")),
    ]:
        a = grid()
        sc_crd.pp.annotate_spots(a, gdf(*rows))
        labels = a.obs["annotation"].astype(str).to_numpy()
        in_big, in_small, in_side = inside(a, BIG), inside(a, SMALL), inside(a, SIDE)
        # areas: SMALL 400 < SIDE 1500 < BIG 3600
        expected = np.where(in_small, "Stroma", np.where(in_side, "Fat", np.where(in_big, "Tumor", "unannotated")))
        np.testing.assert_array_equal(labels, expected)
        assert a.uns["annotation"]["n_overlap"] == int((in_big & (in_small | in_side)).sum())
        assert a.uns["annotation"]["n_inside"] == int((in_big | in_side).sum())


def test_same_class_duplicates_are_not_a_conflict(caplog) -> None:
    """Duplicated polygons of one class (QuPath copies) label as one polygon, without an overlap warning."""
    a = grid()
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        sc_crd.pp.annotate_spots(a, gdf((SMALL, "Tumor"), (SMALL, "Tumor")))
    assert "overlapping" not in caplog.text
    assert (a.obs["annotation"] == "Tumor").sum() == 4 and a.uns["annotation"]["n_overlap"] == 0


def test_equal_tiles_sharing_a_border(caplog) -> None:
    """Equal-area tiles drawn edge to edge are not duplicates: a centre on the shared edge takes the first tile."""
    a = grid()
    left, right = box(0, 0, 15, 50), box(15, 0, 30, 50)  # spots at x = 15 lie on the shared edge
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        sc_crd.pp.annotate_spots(a, gdf((left, "Tumor"), (right, "Stroma")))
    on_edge = (a.obsm["spatial"][:, 0] == 15) & (a.obsm["spatial"][:, 1] < 50)
    assert on_edge.sum() == 5
    assert "5 of them lie on the shared border of equal-area polygons" in caplog.text
    labels = a.obs["annotation"].astype(str).to_numpy()
    assert (labels[on_edge] == "Tumor").all()
    assert (labels[inside(a, right) & ~on_edge] == "Stroma").all() and a.uns["annotation"]["n_overlap"] == 5


def test_bowtie_labels_both_lobes() -> None:
    """A bow-tie drawn over 50 x 50 px is repaired into its two triangles: spots in both lobes are labelled."""
    a = grid()
    sc_crd.pp.annotate_spots(a, gdf((BOWTIE, "Tumor")))
    fixed = wkt.loads("MULTIPOLYGON (((0 0, 25 25, 0 50, 0 0)), ((50 0, 50 50, 25 25, 50 0)))")  # left, right
    got = (a.obs["annotation"] == "Tumor").to_numpy()
    np.testing.assert_array_equal(got, inside(a, fixed))
    assert got.sum() > 0


# --------------------------------------------------------------------------------------------------------
# real section: her2st A1 (polygons drawn by the test in its 2000 px frame)
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def a1(her2st_loader):
    return her2st_loader("A1")


def _block(a1) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    t = a1.tables["table"]
    ax, ay = t.obs["array_x"].to_numpy(), t.obs["array_y"].to_numpy()
    block = (ax >= 18) & (ax <= 21) & (ay >= 18) & (ay <= 21)
    lo, hi = t.obsm["spatial"][block].min(0) - 25, t.obsm["spatial"][block].max(0) + 25
    return box(*lo, *hi), block


def test_real_section_duplicate_with_another_class(a1) -> None:
    outline, block = _block(a1)
    with pytest.raises(ValueError, match=rf"{block.sum()} spot centres lie in polygons of the same area"):
        sc_crd.pp.annotate_spots(a1, gdf((outline, "invasive cancer"), (outline, "connective tissue")), copy=True)


def test_real_section_bowtie_and_nested(a1, caplog) -> None:
    outline, block = _block(a1)
    x0, y0, x1, y1 = outline.bounds
    bowtie = wkt.loads(f"POLYGON (({x0} {y0}, {x1} {y1}, {x1} {y0}, {x0} {y1}, {x0} {y0}))")
    t = a1.tables["table"]
    inner = box(*(t.obsm["spatial"][block][0] - 10), *(t.obsm["spatial"][block][0] + 10))
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        out = sc_crd.pp.annotate_spots(a1, gdf((bowtie, "cancer"), (inner, "stroma")), copy=True)
    assert re.search(r"polygon 0 \(class 'cancer'\) of the GeoDataFrame is invalid", caplog.text)
    assert "'stroma' over 'cancer' (1 spots)" in caplog.text
    repaired = shapely.make_valid(bowtie)
    want = np.where(inside(t, repaired), "cancer", "unannotated").astype(object)
    want[np.flatnonzero(block)[0]] = "stroma"
    np.testing.assert_array_equal(out.obs["annotation"].astype(str).to_numpy(), want.astype(str))


# --------------------------------------------------------------------------------------------------------
# spot_patches
# --------------------------------------------------------------------------------------------------------
def _patches(data: Callable[[], Any] = _legacy_sdata, **kwargs) -> Callable[[Path], Any]:
    return lambda tmp_path: sc_crd.pp.spot_patches(data(), **kwargs)


def _imageless():
    c, s = synthetic_tables()
    return sc_crd.io.legacy_st(c, s)


def _legacy_nan_centre():
    sd = _legacy_sdata()
    sd.tables["table"].obsm["spatial"][0] = [NAN, 10.0]
    return sd


PATCHES: list = [
    *[
        (f"diameter_px={v!r}", _patches(diameter_px=v), ValueError, "`diameter_px` must be a positive")
        for v in (NAN, float("inf"), 0, -3)
    ],
    *[(f"size={v!r}", _patches(size=v), ValueError, "Patch `size` must be an integer") for v in (0, 2.5, "224", True)],
    *[(f"context={v!r}", _patches(context=v), ValueError, "`context` must be a positive") for v in (NAN, 0, -1)],
    ("index out of range", _patches(indices=[100]), IndexError, "Spot index 100 out of range for 29 spots"),
    ("unknown image_key", _patches(image_key="nope"), KeyError, "No image 'nope'"),
    ("unknown table_key", _patches(table_key="nope"), KeyError, "no table 'nope'"),
    ("image-less section", _patches(data=_imageless), ValueError, "no H&E image"),
    ("data an int", _patches(data=lambda: 3), TypeError, "Expected an AnnData or a SpatialData"),
    ("NaN spot centre", _patches(data=_legacy_nan_centre), ValueError, r"NaN/inf coordinates for 1 spots"),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in PATCHES])
def test_spot_patches(call, error, match, tmp_path, caplog) -> None:
    _expect(lambda: call(tmp_path), error, match, caplog)
