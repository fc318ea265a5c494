"""io.write_qupath: regions (and spots) as QuPath GeoJSON on the full-resolution H&E; round trips."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.spatial import cKDTree

import spacrd_sc as sc_crd

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
IMAGE_SCALE = 0.25  # obsm['spatial'] in a 4x downscaled copy, as the legacy-ST reader records it


def _grid(n: int = 10, spacing: float = 20.0) -> ad.AnnData:
    """Square grid, 4-neighbour graph, a 4×4 tumour block plus a 2×2 one in another corner."""
    ys, xs = np.mgrid[0:n, 0:n]
    xy = np.c_[xs.ravel(), ys.ravel()].astype(float) * spacing + 30.0
    called = np.zeros((n, n), bool)
    called[2:6, 2:6] = True
    called[7:9, 7:9] = True
    pairs = np.array(sorted(cKDTree(xy).query_pairs(spacing * 1.01)))
    adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n * n, n * n)).tocsr()
    adj = sparse.csr_matrix(((adj + adj.T) > 0).astype(float))
    a = ad.AnnData(
        obs=pd.DataFrame({"spacrd_score": np.where(called.ravel(), 0.8, 0.2)}, index=[f"s{i}" for i in range(n * n)]),
        obsm={"spatial": xy},
        obsp={"spatial_connectivities": adj, "spatial_distances": adj},
        uns={
            "spatial": {
                "S": {
                    "scalefactors": {"spot_diameter_fullres": spacing / 2},
                    "metadata": {"platform": "legacy_st", "spot_diameter_um": 100.0, "image_scale": IMAGE_SCALE},
                }
            }
        },
    )
    a.obs["spacrd_cancer"] = called.ravel()
    sc_crd.tl.tumour_regions(a)
    return a


def test_geojson_is_qupath_shaped_and_in_full_resolution_pixels(tmp_path):
    a = _grid()
    regions = sc_crd.tl.region_shapes(a)
    path = sc_crd.io.write_qupath(a, tmp_path / "r.geojson", regions, spot_keys=["spacrd_score"])
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection"
    ann = [f for f in doc["features"] if f["properties"]["objectType"] == "annotation"]
    det = [f for f in doc["features"] if f["properties"]["objectType"] == "detection"]
    assert len(ann) == len(regions) and len(det) == a.n_obs
    tumour = next(f for f in ann if f["properties"]["classification"]["name"] == "tumour")
    assert tumour["properties"]["classification"]["color"] == [214, 39, 40]  # "#d62728"
    assert tumour["geometry"]["type"] == "Polygon"
    assert set(tumour["properties"]["measurements"]) == {"area_um2", "mean_score", "n_spots"}
    # coordinates are obsm['spatial'] / image_scale
    xs = np.array([p[0] for f in ann for p in f["geometry"]["coordinates"][0]])
    src = np.concatenate([np.asarray(g.exterior.coords)[:, 0] for g in regions.geometry if g.geom_type == "Polygon"])
    assert xs.max() == pytest.approx(src.max() / IMAGE_SCALE)
    d0 = det[0]
    assert d0["properties"]["measurements"] == {"spacrd_score": pytest.approx(0.2)}
    assert d0["properties"]["classification"]["name"] == str(a.obs["spacrd_region"].iloc[0])
    x0, y0 = a.obsm["spatial"][0] / IMAGE_SCALE
    ring = np.asarray(d0["geometry"]["coordinates"][0])
    assert np.hypot(ring[:, 0] - x0, ring[:, 1] - y0).max() == pytest.approx(10.0 / 2 / IMAGE_SCALE, rel=1e-6)


def test_read_back_gives_the_same_region_for_every_spot(tmp_path):
    a = _grid()
    sdata_like = sc_crd.tl.region_shapes(a)
    path = sc_crd.io.write_qupath(a, tmp_path / "r.geojson", sdata_like, spot_keys=["spacrd_score"])
    polys = sc_crd.io.annotations(path, object_type="annotation", scale=IMAGE_SCALE)
    sc_crd.pp.annotate_spots(a, polys, key_added="back", outside="non-tumour")
    assert (a.obs["back"].astype(str) == a.obs["spacrd_region"].astype(str)).all()


def test_refuses_to_overwrite_and_bad_inputs(tmp_path):
    a = _grid()
    regions = sc_crd.tl.region_shapes(a)
    path = sc_crd.io.write_qupath(a, tmp_path / "r.geojson", regions)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sc_crd.io.write_qupath(a, path, regions)
    sc_crd.io.write_qupath(a, path, regions, overwrite=True, scale=1.0)
    with pytest.raises(KeyError, match="region_shapes"):
        sc_crd.io.write_qupath(a, tmp_path / "s.geojson")
    with pytest.raises(ValueError, match="scale"):
        sc_crd.io.write_qupath(a, tmp_path / "s.geojson", regions, scale=-1.0)
    with pytest.raises(KeyError, match="nope"):
        sc_crd.io.write_qupath(a, tmp_path / "s.geojson", regions, spot_keys=["nope"])


@pytest.mark.parametrize("section", ["A1", "H1"])
def test_her2st_regions_round_trip_through_qupath_geojson(her2st_loader, tmp_path, section):
    """Score a real her2st section (committed LOO SpaCRD scores, seed 0), call regions, export to QuPath GeoJSON
    in full-resolution pixels, read back with pp.annotate_spots: the same region class for ≥ 99 % of spots.
    A1 carries a 2000 px copy of its H&E (image_scale 2000/6954), so the export undoes that scale."""
    import squidpy as sq

    t = her2st_loader(section).tables["table"]
    scores = pd.read_csv(RESULTS / "her2st_loo_scores.csv.gz")
    scores = scores[(scores["method"] == "SpaCRD") & (scores["section"] == section) & (scores["seed"] == 0)]
    scores = scores.set_index("spot")["score"]
    keep = t.obs_names.isin(scores.index)
    a = ad.AnnData(obs=t.obs.loc[keep, ["pathology"]].copy(), obsm={"spatial": t.obsm["spatial"][keep]}, uns=t.uns)
    sq.gr.spatial_neighbors(a, n_neighs=6, coord_type="generic")
    a.obs["spacrd_score"] = scores.loc[a.obs_names].to_numpy()
    sc_crd.tl.tumour_regions(a, threshold=0.5)
    regions = sc_crd.tl.region_shapes(a)
    assert set(regions["class"]) == {"tumour", "boundary"}
    path = sc_crd.io.write_qupath(a, tmp_path / f"{section}.geojson", regions, spot_keys=["spacrd_score"])
    image_scale = float(t.uns["spatial"][section]["metadata"].get("image_scale", 1.0))
    if section == "A1":
        assert image_scale == pytest.approx(2000 / 6954)
    polys = sc_crd.io.annotations(path, object_type="annotation", scale=image_scale)
    sc_crd.pp.annotate_spots(a, polys, key_added="back", outside="non-tumour")
    agree = float((a.obs["back"].astype(str) == a.obs["spacrd_region"].astype(str)).mean())
    print(f"{section}: {a.n_obs} spots, {len(regions)} polygons, round-trip agreement {agree:.4f}")
    assert agree >= 0.99
