"""pp.annotate_spots on her2st A1 with a GeoJSON drawn (by the test) on its full-resolution H&E frame."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import spacrd_sc as sc_crd

SCALE = 2000 / 6954  # A1's H&E is the 6954 px original downscaled to 2000 px (spot centres are in that frame)
BLOCK = (18, 21)  # array x and y range of the drawn "Tumor" square
INNER = "19x20"  # one spot inside it gets its own, smaller "Stroma" polygon


def square(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


@pytest.fixture(scope="module")
def a1(data_dir):
    return sc_crd.datasets.her2st("A1", path=data_dir)  # own copy: the tests add elements


@pytest.fixture(scope="module")
def drawing(a1) -> tuple[dict, np.ndarray, int]:
    """QuPath-style GeoJSON in full-resolution pixels; the mask of spots in the block; the inner spot's row."""
    t = a1.tables["table"]
    ax, ay = t.obs["array_x"].to_numpy(), t.obs["array_y"].to_numpy()
    block = (ax >= BLOCK[0]) & (ax <= BLOCK[1]) & (ay >= BLOCK[0]) & (ay <= BLOCK[1])
    assert block.sum() >= 12
    xy = t.obsm["spatial"][block]
    half = 25.0  # px of the 2000 px frame, below half the 62.5 px spot spacing
    outer = square(*(xy.min(axis=0) - half), *(xy.max(axis=0) + half))
    inner_row = t.obs_names.get_loc(INNER)
    cx, cy = t.obsm["spatial"][inner_row]
    inner = square(cx - 10, cy - 10, cx + 10, cy + 10)
    feats = []
    for geom, cls in [(outer, "Tumor"), (inner, "Stroma")]:
        ring = (np.asarray(geom["coordinates"][0]) / SCALE).tolist()  # drawn on the full-resolution image
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation", "classification": {"name": cls, "color": [255, 0, 0]}},
            }
        )
    return {"type": "FeatureCollection", "features": feats}, block, inner_row


def expected(block: np.ndarray, inner_row: int, outside: str = "unannotated") -> np.ndarray:
    out = np.where(block, "Tumor", outside).astype(object)
    out[inner_row] = "Stroma"
    return out


def test_geojson_in_image_frame(a1, drawing, tmp_path):
    doc, block, inner_row = drawing
    path = tmp_path / "A1.geojson"
    path.write_text(json.dumps(doc))
    polys = sc_crd.io.annotations(path, scale=SCALE)  # full-resolution pixels → the 2000 px frame
    out = sc_crd.pp.annotate_spots(a1, polys, key_added="drawn", copy=True)
    np.testing.assert_array_equal(out.obs["drawn"].to_numpy().astype(object), expected(block, inner_row))
    assert list(out.obs["drawn"].cat.categories) == ["Tumor", "Stroma", "unannotated"]
    assert out.uns["drawn"]["n_inside"] == block.sum()
    assert out.uns["drawn"]["n_overlap"] == 1  # the inner spot: "Stroma" (smaller) over "Tumor", reported
    assert "drawn" not in a1.tables["table"].obs  # copy=True


def test_relabelling_warns_before_overwriting(a1, drawing, caplog):
    doc, block, inner_row = drawing
    polys = sc_crd.io.annotations(doc, scale=SCALE)
    out = sc_crd.pp.annotate_spots(a1, polys, key_added="drawn", copy=True)
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        sc_crd.pp.annotate_spots(out, polys, key_added="drawn", outside="none")
    assert "Overwriting adata.obs['drawn']" in caplog.text and "Overwriting adata.uns['drawn']" in caplog.text
    np.testing.assert_array_equal(out.obs["drawn"].to_numpy().astype(object), expected(block, inner_row, "none"))


def test_named_coordinate_system_and_shapes_element(a1, drawing):
    from spatialdata.transformations import Scale, set_transformation

    doc, block, inner_row = drawing
    # a coordinate system in full-resolution pixels: the spots reach it by scaling up
    set_transformation(a1.shapes["spots"], Scale([1 / SCALE, 1 / SCALE], axes=("x", "y")), "fullres")
    sc_crd.pp.annotate_spots(a1, doc, coordinate_system="fullres", outside=None)
    got = a1.tables["table"].obs["annotation"]
    np.testing.assert_array_equal(got.isna().to_numpy(), ~block)
    np.testing.assert_array_equal(got.to_numpy()[block].astype(str), expected(block, inner_row)[block])
    # the same polygons as a shapes element of the SpatialData, placed in "fullres" too
    a1.shapes["drawn"] = sc_crd.io.annotations(doc)
    set_transformation(a1.shapes["drawn"], {"fullres": Scale([1.0, 1.0], axes=("x", "y"))}, set_all=True)
    sc_crd.pp.annotate_spots(a1, "drawn", coordinate_system="fullres", key_added="from_shapes")
    obs = a1.tables["table"].obs
    np.testing.assert_array_equal(obs["from_shapes"].to_numpy().astype(object), expected(block, inner_row))


def test_bad_input(a1, drawing):
    doc, _, _ = drawing
    with pytest.raises(ValueError, match="No spot centre lies inside"):
        sc_crd.pp.annotate_spots(a1, doc)  # full-resolution polygons on the 2000 px frame: wrong frame
    with pytest.raises(KeyError, match="class_key 'tissue'"):
        sc_crd.pp.annotate_spots(a1, doc, class_key="tissue")
    with pytest.raises(KeyError, match="coordinate_system 'nope'"):
        sc_crd.pp.annotate_spots(a1, doc, coordinate_system="nope")
    with pytest.raises(ValueError, match="No polygon features"):
        sc_crd.pp.annotate_spots(a1, {"type": "FeatureCollection", "features": []})
    with pytest.raises(FileNotFoundError, match="neither a GeoJSON file nor a shapes element"):
        sc_crd.pp.annotate_spots(a1, "no_such_element")
    with pytest.raises(ValueError, match="needs a SpatialData"):
        sc_crd.pp.annotate_spots(a1.tables["table"], doc, coordinate_system="global")


def test_colours_and_training_label_on_a_real_section(a1, drawing):
    """QuPath colours become ``uns['drawn_colors']`` and squidpy paints A1's spots with them; ``cancer_classes``
    writes the boolean label the training reads."""
    import copy

    import matplotlib.pyplot as plt
    import squidpy as sq
    from matplotlib.colors import to_hex

    doc, block, inner_row = drawing
    doc = copy.deepcopy(doc)
    doc["features"][0]["properties"]["classification"]["color"] = [0, 0, 255]  # Tumor blue
    doc["features"][1]["properties"]["classification"]["color"] = [0, 160, 0]  # Stroma green
    polys = sc_crd.io.annotations(doc, scale=SCALE)
    out = sc_crd.pp.annotate_spots(
        a1, polys, key_added="drawn", cancer_classes=["Tumor"], label_key="drawn_cancer", copy=True
    )
    assert out.uns["drawn_colors"] == ["#0000ff", "#00a000", "#bfbfbf"]
    want = block.copy()
    want[inner_row] = False
    np.testing.assert_array_equal(out.obs["drawn_cancer"].to_numpy(), want)
    assert out.obs["drawn_cancer"].dtype == bool
    sq.pl.spatial_scatter(out, color="drawn", img=False, shape=None, size=20, return_ax=False)
    coll = [c for c in plt.gcf().axes[0].collections if len(c.get_offsets()) == out.n_obs]
    assert {to_hex(f) for f in coll[0].get_facecolors()} == {"#0000ff", "#00a000", "#bfbfbf"}
    plt.close("all")
