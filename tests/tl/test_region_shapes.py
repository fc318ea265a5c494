"""tl.region_shapes: polygons of tumour regions and boundary bands, with known areas and holes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.spatial import cKDTree

import spacrd_sc as sc_crd

SPACING_PX = 20.0  # 200 µm grid at 10 µm/px (legacy ST geometry)
UM_PER_PX = 10.0


def _grid(called: np.ndarray) -> ad.AnnData:
    """A square legacy-ST grid; ``called`` (n_y, n_x) bool; 4-neighbour spot graph; scores 0.9 / 0.1."""
    ys, xs = np.nonzero(np.ones_like(called))
    xy = np.c_[xs, ys].astype(float) * SPACING_PX + 50.0
    n = len(xy)
    pairs = np.array(sorted(cKDTree(xy).query_pairs(SPACING_PX * 1.01)))
    adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(float)
    a = ad.AnnData(
        obs=pd.DataFrame({"spacrd_score": np.where(called.ravel(), 0.9, 0.1)}, index=[f"s{i}" for i in range(n)]),
        obsm={"spatial": xy},
        obsp={"spatial_connectivities": sparse.csr_matrix(adj), "spatial_distances": sparse.csr_matrix(adj)},
        uns={
            "spatial": {
                "S": {
                    "scalefactors": {"spot_diameter_fullres": 10.0},
                    "metadata": {"platform": "legacy_st", "spot_diameter_um": 100.0},
                }
            }
        },
    )
    a.obs["spacrd_cancer"] = called.ravel()
    return a


def _block(n: int = 9, lo: int = 3, hi: int = 6) -> np.ndarray:
    called = np.zeros((n, n), bool)
    called[lo:hi, lo:hi] = True
    return called


def test_block_core_band_and_hole():
    """3×3 block: core = 1 cell, band = the 8 edge spots + 12 outer neighbours = 20 cells with the core as a hole,
    core ∪ band = 21 cells without a hole; centres fall in the polygon of their own class."""
    a = _grid(_block())
    sc_crd.tl.tumour_regions(a)
    gdf = sc_crd.tl.region_shapes(a)
    cell_um2 = (SPACING_PX * UM_PER_PX) ** 2
    assert sorted(gdf["class"]) == ["boundary", "tumour"]
    core = gdf[gdf["class"] == "tumour"].iloc[0]
    band = gdf[gdf["class"] == "boundary"].iloc[0]
    assert core.geometry.geom_type == "Polygon" and band.geometry.geom_type == "Polygon"
    assert core["area_um2"] == pytest.approx(cell_um2)
    assert band["area_um2"] == pytest.approx(20 * cell_um2)
    assert len(band.geometry.interiors) == 1
    assert core["n_spots"] == 1 and band["n_spots"] == 20
    assert core["mean_score"] == pytest.approx(0.9)
    assert band["mean_score"] == pytest.approx((8 * 0.9 + 12 * 0.1) / 20)
    union = core.geometry.union(band.geometry)
    assert union.area == pytest.approx(21 * SPACING_PX**2) and len(union.interiors) == 0
    assert gdf["color"].tolist() == [dict(tumour="#d62728", boundary="#ffb000")[c] for c in gdf["class"]]


def test_block_of_tumour_spots_is_one_square():
    """A 3×3 block labelled tumour (no band) → one Polygon of 9 cells: the union of square footprints."""
    a = _grid(_block())
    sc_crd.tl.tumour_regions(a)
    a.obs["spacrd_region"] = pd.Categorical(
        np.where(a.obs["spacrd_cancer"], "tumour", "non-tumour"), categories=["tumour", "boundary", "non-tumour"]
    )
    gdf = sc_crd.tl.region_shapes(a)
    assert len(gdf) == 1
    g = gdf.geometry.iloc[0]
    assert g.geom_type == "Polygon" and len(g.interiors) == 0
    assert gdf["area_um2"].iloc[0] == pytest.approx(9 * (SPACING_PX * UM_PER_PX) ** 2)
    lo, hi = 50 + 2.5 * SPACING_PX, 50 + 5.5 * SPACING_PX
    assert g.bounds == pytest.approx((lo, lo, hi, hi))


def test_ring_of_tumour_spots_has_a_hole_and_two_regions_are_multipolygons():
    """A ring of tumour spots → a Polygon with one hole of the inner cells; two rings of the same region id give a
    MultiPolygon."""
    called = _block(11, 2, 9)
    called[4:7, 4:7] = False  # 7×7 block with a 3×3 hole
    a = _grid(called)
    sc_crd.tl.tumour_regions(a)
    labels = np.where(called.ravel(), "tumour", "non-tumour")
    a.obs["spacrd_region"] = pd.Categorical(labels, categories=["tumour", "boundary", "non-tumour"])
    gdf = sc_crd.tl.region_shapes(a)
    g = gdf.geometry.iloc[0]
    assert g.geom_type == "Polygon" and len(g.interiors) == 1
    assert gdf["area_um2"].iloc[0] == pytest.approx((49 - 9) * (SPACING_PX * UM_PER_PX) ** 2)
    from shapely import Polygon

    assert Polygon(g.interiors[0]).area == pytest.approx(9 * SPACING_PX**2)
    # the same region id over two separate parts → one MultiPolygon feature
    called2 = np.zeros((11, 11), bool)
    called2[1:3, 1:3] = called2[7:10, 7:10] = True
    a.obs["spacrd_region"] = pd.Categorical(
        np.where(called2.ravel(), "tumour", "non-tumour"), categories=["tumour", "boundary", "non-tumour"]
    )
    a.obs["spacrd_region_id"] = np.where(called2.ravel(), 0, -1)
    gdf = sc_crd.tl.region_shapes(a)
    assert len(gdf) == 1 and gdf.geometry.iloc[0].geom_type == "MultiPolygon"
    assert len(gdf.geometry.iloc[0].geoms) == 2


def test_spatialdata_shapes_element_round_trips_through_zarr(tmp_path):
    """Written as a shapes element in "global"; sdata.write and write_element keep geometry and columns."""
    import spatialdata as sd
    from spatialdata.models import TableModel
    from spatialdata.transformations import get_transformation

    a = _grid(_block())
    sc_crd.tl.tumour_regions(a)
    sdata = sd.SpatialData(tables={"table": TableModel.parse(a)})
    assert sc_crd.tl.region_shapes(sdata) is None
    shapes = sdata.shapes["spacrd_regions"]
    assert "global" in get_transformation(shapes, get_all=True)
    with pytest.raises(ValueError, match="overwrite=True"):
        sc_crd.tl.region_shapes(sdata)
    sdata.write(tmp_path / "s.zarr")
    back = sd.read_zarr(tmp_path / "s.zarr")
    got = back.shapes["spacrd_regions"]
    assert got.geometry.geom_equals_exact(shapes.geometry, tolerance=1e-9).all()
    pd.testing.assert_frame_equal(
        pd.DataFrame(got.drop(columns="geometry")), pd.DataFrame(shapes.drop(columns="geometry")), check_dtype=False
    )
    sc_crd.tl.region_shapes(sdata, key_added="again")
    sdata.write_element("again")
    assert "again" in sd.read_zarr(tmp_path / "s.zarr").shapes


def test_sections_get_their_own_polygons_and_scale(tmp_path):
    """With library_key, each section is drawn on its own with its own µm per pixel."""
    a, b = _grid(_block()), _grid(_block(9, 1, 4))
    a.obs["section"], b.obs["section"] = "a", "b"
    both = ad.concat([a, b], index_unique="-", pairwise=True)
    both.uns = a.uns
    sc_crd.tl.tumour_regions(both, library_key="section", um_per_px=UM_PER_PX)
    gdf = sc_crd.tl.region_shapes(both)
    assert sorted(zip(gdf["section"], gdf["class"], strict=True)) == [
        ("a", "boundary"),
        ("a", "tumour"),
        ("b", "boundary"),
        ("b", "tumour"),
    ]
    assert np.allclose(gdf.loc[gdf["class"] == "tumour", "area_um2"], (SPACING_PX * UM_PER_PX) ** 2)
    with pytest.raises(ValueError, match="one image"):
        sc_crd.io.write_qupath(both, tmp_path / "x.geojson", gdf)


def test_missing_regions_are_refused():
    a = _grid(_block())
    with pytest.raises(KeyError, match="tumour_regions"):
        sc_crd.tl.region_shapes(a)
    sc_crd.tl.tumour_regions(a)
    a.obs["spacrd_region"] = "cancer"
    with pytest.raises(ValueError, match="expected"):
        sc_crd.tl.region_shapes(a)


def test_her2st_shapes_element_beside_the_he_and_read_back_by_name(her2st_loader, tmp_path):
    """On her2st A1 (LOO SpaCRD scores, seed 0) read as a SpatialData: the regions land in the H&E's coordinate
    system, survive sdata.write / read_zarr, and pp.annotate_spots on the element by name gives back each spot's
    region (the spot centres lie in the polygon of their own class)."""
    from pathlib import Path

    import spatialdata as sd
    import squidpy as sq
    from spatialdata.transformations import get_transformation

    src = her2st_loader("A1")
    scores = pd.read_csv(Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "her2st_loo_scores.csv.gz")
    scores = scores[(scores["method"] == "SpaCRD") & (scores["section"] == "A1") & (scores["seed"] == 0)]
    t = src.tables["table"]
    uns = {k: v for k, v in t.uns.items() if k != "spatialdata_attrs"}  # a table that annotates no element
    a = ad.AnnData(obs=t.obs[["pathology"]].copy(), obsm={"spatial": t.obsm["spatial"]}, uns=uns)
    a.obs["spacrd_score"] = scores.set_index("spot")["score"].loc[a.obs_names].to_numpy()
    sq.gr.spatial_neighbors(a, n_neighs=6, coord_type="generic")
    sc_crd.tl.tumour_regions(a, threshold=0.5)
    sdata = sd.SpatialData(images={"he": src.images["he"]}, tables={"table": a})
    sc_crd.tl.region_shapes(sdata)
    shapes = sdata.shapes["spacrd_regions"]
    assert set(get_transformation(shapes, get_all=True)) == set(get_transformation(src.images["he"], get_all=True))
    assert (shapes["area_um2"] > 0).all() and shapes["mean_score"].between(0, 1).all()
    sdata.write(tmp_path / "a1.zarr")
    back = sd.read_zarr(tmp_path / "a1.zarr")
    assert back.shapes["spacrd_regions"].geometry.geom_equals_exact(shapes.geometry, tolerance=1e-9).all()
    sc_crd.pp.annotate_spots(back, "spacrd_regions", key_added="back", outside="non-tumour")
    got = back.tables["table"].obs
    assert (got["back"].astype(str) == got["spacrd_region"].astype(str)).mean() >= 0.99


def test_no_tumour_region_warns_and_writes_nothing(caplog):
    """Nothing called: an empty GeoDataFrame for an AnnData; for a SpatialData no (empty) shapes element, a warning."""
    import logging

    import spatialdata as sd
    from spatialdata.models import TableModel

    a = _grid(np.zeros((6, 6), bool))
    sc_crd.tl.tumour_regions(a)
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        gdf = sc_crd.tl.region_shapes(a)
    assert gdf.empty and "No tumour region" in caplog.text
    sdata = sd.SpatialData(tables={"table": TableModel.parse(a)})
    assert sc_crd.tl.region_shapes(sdata) is None
    assert "spacrd_regions" not in sdata.shapes
