"""tl.tumour_regions: a grid with a known tumour disc (exact boundary ring and distances) and her2st."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.spatial import cKDTree

import spacrd_sc as sc_crd

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

STEP = 20.0  # px between grid spots; with um_per_px=10 → 200 µm, the legacy ST grid


def grid_section(n: int = 15, radius: float = 3.0, stray: bool = True) -> ad.AnnData:
    """An n x n square grid (4-neighbour graph) whose spots within ``radius`` grid units of the centre are called."""
    xs, ys = np.meshgrid(np.arange(n), np.arange(n))
    grid = np.c_[xs.ravel(), ys.ravel()].astype(float)
    a = ad.AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(n * n)]))
    a.obsm["spatial"] = grid * STEP
    pairs = cKDTree(grid).query_pairs(1.01, output_type="ndarray")
    adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n * n, n * n)).tocsr()
    a.obsp["spatial_connectivities"] = adj + adj.T
    dist = np.linalg.norm(grid - (n // 2), axis=1)
    a.obs["spacrd_score"] = np.clip(1 - dist / n, 0, 1)
    a.obs["spacrd_cancer"] = dist <= radius
    if stray:
        a.obs.loc["s0", "spacrd_cancer"] = True  # an isolated call in the corner
    a.obs["disc"] = dist <= radius
    a.obs["grid_x"], a.obs["grid_y"] = grid[:, 0], grid[:, 1]
    return a


def test_disc_boundary_ring_and_distances():
    a = grid_section()
    sc_crd.tl.tumour_regions(a, um_per_px=10.0)
    disc = a.obs["disc"].to_numpy()
    grid = a.obsm["spatial"] / STEP
    nb_disc = a.obsp["spatial_connectivities"] @ disc.astype(int)
    inner_ring = disc & (nb_disc < 4)  # disc spots with a 4-neighbour outside
    outer_ring = ~disc & (nb_disc > 0)
    region = a.obs["spacrd_region"]
    assert list(region.cat.categories) == ["tumour", "boundary", "non-tumour"]
    np.testing.assert_array_equal(region == "boundary", inner_ring | outer_ring)
    np.testing.assert_array_equal(region == "tumour", disc & ~inner_ring)
    assert region["s0"] == "non-tumour"  # the stray call is below min_region_size
    # signed distance: ±(nearest centre of the other class − half the 200 µm spacing), in µm
    d_in = cKDTree(grid[~disc]).query(grid[disc])[0] * 200
    d_out = cKDTree(grid[disc]).query(grid[~disc])[0] * 200
    dist = a.obs["spacrd_region_distance_um"].to_numpy()
    np.testing.assert_allclose(dist[disc], -(d_in - 100))
    np.testing.assert_allclose(dist[~disc], d_out - 100)
    centre = (grid == 7).all(axis=1)
    # nearest outside centre of the r=3 disc: 3 across, 1 up (√10 grid units); the edge lies half a step before it
    assert dist[centre][0] == pytest.approx(-(np.sqrt(10) * 200 - 100))
    uns = a.uns["spacrd_region"]
    assert uns["n_removed"] == 1 and uns["n_regions"] == 1
    assert uns["spot_spacing_um"] == {"all": pytest.approx(200.0)}
    assert uns["params"]["min_region_size"] == 3
    assert a.obs["spacrd_region_id"].to_numpy()[disc].tolist() == [0] * disc.sum()
    assert (a.obs["spacrd_region_id"].to_numpy()[~disc] == -1).all()
    assert a.uns["spacrd_region_colors"] == ["#d62728", "#ffb000", "#1f77b4"]


def test_min_region_size_and_width():
    a = grid_section()
    out = sc_crd.tl.tumour_regions(a, um_per_px=10.0, min_region_size=1, boundary_width=2, copy=True)
    assert "spacrd_region" not in a.obs  # copy=True leaves the input alone
    assert out.uns["spacrd_region"]["n_regions"] == 2 and out.uns["spacrd_region"]["n_removed"] == 0
    assert out.obs["spacrd_region"]["s0"] == "boundary"  # kept now: a one-spot region is all boundary
    wide = (out.obs["spacrd_region"] == "boundary").sum()
    sc_crd.tl.tumour_regions(a, um_per_px=10.0, min_region_size=1)
    assert wide > (a.obs["spacrd_region"] == "boundary").sum()


def test_rerun_warns_before_overwriting(caplog):
    a = grid_section()
    sc_crd.tl.tumour_regions(a, um_per_px=10.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        sc_crd.tl.tumour_regions(a, um_per_px=10.0, min_region_size=1)
    for where, key in [("obs", "spacrd_region"), ("obs", "spacrd_region_distance_um"), ("obs", "spacrd_region_id")]:
        assert f"Overwriting adata.{where}[{key!r}]" in caplog.text
    assert "Overwriting adata.uns['spacrd_region']" in caplog.text
    assert a.uns["spacrd_region"]["params"]["min_region_size"] == 1


def test_threshold_and_um_per_px_from_scalefactors():
    a = grid_section(stray=False)
    a.uns["spatial"] = {"L": {"scalefactors": {"spot_diameter_fullres": 10.0}, "metadata": {"platform": "legacy_st"}}}
    sc_crd.tl.tumour_regions(a, threshold=0.8, key_added="reg")  # 100 µm / 10 px
    assert a.uns["reg"]["um_per_px"] == {"all": 10.0}
    np.testing.assert_array_equal(a.obs["reg"] != "non-tumour", a.obs["reg_distance_um"] < 150)
    a.uns["spatial"]["L"]["metadata"]["platform"] = "visium"  # 55 µm spots
    sc_crd.tl.tumour_regions(a, threshold=0.8, key_added="reg")
    assert a.uns["reg"]["um_per_px"] == {"all": 5.5}
    sc_crd.tl.tumour_regions(a, threshold=0.8, spot_diameter_um=65.0, key_added="reg")
    assert a.uns["reg"]["um_per_px"] == {"all": 6.5}


def test_several_sections():
    a, b = grid_section(), grid_section(radius=2.0)
    both = ad.concat({"A": a, "B": b}, label="section", index_unique="-", pairwise=True)
    sc_crd.tl.tumour_regions(both, um_per_px=10.0, library_key="section")
    sc_crd.tl.tumour_regions(b, um_per_px=10.0)
    np.testing.assert_array_equal(both.obs["spacrd_region"].to_numpy()[a.n_obs :], b.obs["spacrd_region"].to_numpy())
    assert set(both.uns["spacrd_region"]["um_per_px"]) == {"A", "B"}


def test_bad_input():
    a = grid_section()
    with pytest.raises(KeyError, match="x_cancer"):
        sc_crd.tl.tumour_regions(a.copy(), score_key="x_score", um_per_px=1.0)
    b = a.copy()
    del b.obsp["spatial_connectivities"]
    with pytest.raises(KeyError, match="spatial_connectivities"):
        sc_crd.tl.tumour_regions(b, um_per_px=1.0)
    with pytest.raises(KeyError, match="um_per_px"):
        sc_crd.tl.tumour_regions(a)  # no uns['spatial']: the pixel size is unknown
    with pytest.raises(ValueError, match="min_region_size"):
        sc_crd.tl.tumour_regions(a, um_per_px=1.0, min_region_size=0)
    a.uns["spatial"] = {"L": {"scalefactors": {"spot_diameter_fullres": 10.0}, "metadata": {"platform": "xyz"}}}
    with pytest.raises(ValueError, match="spot_diameter_um"):
        sc_crd.tl.tumour_regions(a)


def test_her2st_boundary_holds_mixed_pathology(her2st_loader):
    """On held-out her2st H1 scored by SpaCRD (committed LOO scores), the boundary band holds more spots with a
    mixed cancer / non-cancer pathologist neighbourhood than the tumour core or the non-tumour rest."""
    import squidpy as sq

    t = her2st_loader("H1").tables["table"]
    a = ad.AnnData(obs=t.obs[["pathology", "cancer"]].copy(), obsm={"spatial": t.obsm["spatial"]}, uns=t.uns)
    sq.gr.spatial_neighbors(a, n_neighs=6, coord_type="generic")
    scores = pd.read_csv(RESULTS / "her2st_loo_scores.csv.gz")
    scores = scores[(scores["method"] == "SpaCRD") & (scores["section"] == "H1") & (scores["seed"] == 0)]
    a.obs["spacrd_score"] = scores.set_index("spot")["score"].loc[a.obs_names].to_numpy()
    sc_crd.tl.tumour_regions(a, threshold=0.5)
    # µm per px from the 100 µm spot diameter agrees with the reader's fit of the 200 µm grid
    assert a.uns["spacrd_region"]["um_per_px"]["all"] == pytest.approx(
        t.uns["spatial"]["H1"]["metadata"]["pixel_size_um"]
    )
    assert a.uns["spacrd_region"]["spot_spacing_um"]["all"] == pytest.approx(200, rel=0.05)

    adj = (a.obsp["spatial_connectivities"] + sparse.identity(a.n_obs)) > 0
    path = a.obs["pathology"].astype(str).to_numpy()
    cancer = a.obs["cancer"].to_numpy()
    other = ~cancer & (path != "undetermined")
    mixed = (adj @ cancer.astype(int) > 0) & (adj @ other.astype(int) > 0)
    share = pd.Series(mixed).groupby(a.obs["spacrd_region"].to_numpy()).mean()
    assert share["boundary"] > 2 * share["tumour"]
    assert share["boundary"] > 2 * share["non-tumour"]
    dist = a.obs["spacrd_region_distance_um"].to_numpy()
    region = a.obs["spacrd_region"].to_numpy()
    assert (dist[region == "tumour"] < -150).all() and (dist[region == "non-tumour"] > 150).all()


def test_spatial_scatter_draws_region_and_pathology_colours(her2st_loader):
    """squidpy draws both categorical columns with the colours stored in uns (cancer warm, normal tissue cool)."""
    import matplotlib.pyplot as plt
    import squidpy as sq
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_rgba

    t = her2st_loader("G2").tables["table"]
    a = ad.AnnData(obs=t.obs[["pathology", "cancer"]].copy(), obsm={"spatial": t.obsm["spatial"]}, uns=t.uns)
    assert a.uns["pathology_colors"][:2] == ["#d62728", "#ff7f0e"]  # invasive cancer red, in situ orange
    sq.gr.spatial_neighbors(a, n_neighs=6, coord_type="generic")
    a.obs["spacrd_cancer"] = a.obs["cancer"]
    sc_crd.tl.tumour_regions(a)
    axs = sq.pl.spatial_scatter(
        a, color=["spacrd_region", "pathology"], shape=None, library_id="G2", scale_factor=1.0, return_ax=True
    )
    for ax, key in zip(axs, ["spacrd_region", "pathology"], strict=True):
        dots = [c for c in ax.collections if isinstance(c, PathCollection)][0]
        drawn = {tuple(np.round(c, 3)) for c in dots.get_facecolors()}
        cats = a.obs[key].cat.categories
        present = [c for c in cats if (a.obs[key] == c).any()]
        want = {tuple(np.round(to_rgba(a.uns[f"{key}_colors"][list(cats).index(c)]), 3)) for c in present}
        assert drawn == want, key
    plt.close("all")
