"""Tests of ``io.legacy_st`` (synthetic files, plus real her2st sections where the data folder exists)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from spacrd_sc.io import legacy_st

SYN_PX_PER_UNIT = 20.0  # see tests/conftest.py: 10 µm/px, spot diameter 10 px


# ------------------------------------------------------------------------------------------------ synthetic
def test_synthetic_structure(tiny_legacy_st, caplog):
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        sdata = legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], tiny_legacy_st["image"])
    counts = tiny_legacy_st["counts_df"]
    n = counts.shape[0]
    assert "Dropping 2 spots" in caplog.text
    assert "duplicated" in caplog.text  # GENE_A twice

    assert set(sdata.images) == {"he"} and set(sdata.shapes) == {"spots"} and set(sdata.tables) == {"table"}
    img = sdata.images["he"]
    assert img.dims == ("c", "y", "x") and img.dtype == np.uint8 and img.shape == (3, 150, 170)
    np.testing.assert_array_equal(np.moveaxis(img.data.compute(), 0, -1), tiny_legacy_st["image_array"])

    adata = sdata.tables["table"]
    assert adata.shape == (n, 5)
    assert sparse.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), counts.to_numpy(np.float32))
    assert list(adata.var_names) == ["GENE_A", "GENE_B", "GENE_C", "GENE_A-1", "ERBB2"]
    assert list(adata.obs_names) == list(counts.index)
    assert adata.obs["array_x"].dtype == np.int64 and adata.obs["array_y"].dtype == np.int64
    assert (adata.obs_names == adata.obs["array_x"].astype(str) + "x" + adata.obs["array_y"].astype(str)).all()
    xy = adata.obsm["spatial"]
    assert xy.dtype == np.float64 and xy.shape == (n, 2)
    np.testing.assert_allclose(xy, adata.obs[["array_x", "array_y"]].to_numpy() * SYN_PX_PER_UNIT + 10)

    attrs = adata.uns["spatialdata_attrs"]
    assert attrs["region"] == "spots" and attrs["region_key"] == "region" and attrs["instance_key"] == "spot_id"
    np.testing.assert_array_equal(adata.obs["spot_id"].to_numpy(), np.arange(n))

    shapes = sdata.shapes["spots"]
    np.testing.assert_array_equal(shapes.index.to_numpy(), np.arange(n))
    np.testing.assert_allclose(np.c_[shapes.geometry.x, shapes.geometry.y], xy)
    np.testing.assert_allclose(shapes["radius"], 5.0, rtol=0.01)

    entry = adata.uns["spatial"]["S1"]  # library id from the counts file name
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(10.0, rel=0.01)
    assert entry["scalefactors"]["tissue_hires_scalef"] == 1.0  # image smaller than 2000 px: copied as is
    np.testing.assert_array_equal(entry["images"]["hires"], tiny_legacy_st["image_array"])
    meta = entry["metadata"]
    assert meta["platform"] == "legacy_st" and meta["image_key"] == "he" and meta["spots_key"] == "spots"
    assert meta["pixel_size_um"] == pytest.approx(10.0, rel=0.01) and meta["spot_diameter_um"] == 100.0
    assert None not in meta.values()


def test_dataframe_inputs_without_image(tiny_legacy_st):
    sdata = legacy_st(
        tiny_legacy_st["counts_df"],
        tiny_legacy_st["spots_df"],
        library_id="syn",
        pixel_size_um=5.0,
        spot_diameter_um=55.0,
    )
    assert len(sdata.images) == 0
    entry = sdata.tables["table"].uns["spatial"]["syn"]
    assert "images" not in entry and entry["scalefactors"]["tissue_hires_scalef"] == 1.0  # for squidpy
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(11.0)
    assert "image_key" not in entry["metadata"] and entry["metadata"]["pixel_size_um"] == 5.0
    np.testing.assert_allclose(sdata.shapes["spots"]["radius"], 5.5)


def test_image_scale_and_array_image(tiny_legacy_st):
    """A 2x downscaled image: coordinates and the spot diameter shrink with it."""
    small = tiny_legacy_st["image_array"][::2, ::2]
    sdata = legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], small, image_scale=0.5)
    adata = sdata.tables["table"]
    np.testing.assert_allclose(adata.obsm["spatial"], (adata.obs[["array_x", "array_y"]].to_numpy() * 20 + 10) / 2)
    sf = adata.uns["spatial"]["S1"]["scalefactors"]
    assert sf["spot_diameter_fullres"] == pytest.approx(5.0, rel=0.01)
    assert adata.uns["spatial"]["S1"]["metadata"]["pixel_size_um"] == pytest.approx(20.0, rel=0.01)


def test_alpha_channel_dropped(tiny_legacy_st):
    rgba = np.concatenate([tiny_legacy_st["image_array"], np.full((150, 170, 1), 255, np.uint8)], axis=-1)
    sdata = legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], rgba)
    assert sdata.images["he"].shape == (3, 150, 170)


def test_large_image_is_multiscale(tiny_legacy_st):
    from xarray import DataTree

    img = np.full((4200, 180, 3), 200, np.uint8)
    sdata = legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], img)
    assert isinstance(sdata.images["he"], DataTree)
    entry = sdata.tables["table"].uns["spatial"]["S1"]
    hires = entry["images"]["hires"]
    assert max(hires.shape[:2]) == 2000 and hires.dtype == np.uint8
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(2000 / 4200)


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_files(tiny_legacy_st, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv.gz"):
        legacy_st(tmp_path / "nope.tsv.gz", tiny_legacy_st["spots"])
    with pytest.raises(FileNotFoundError, match="Spot file not found.*nope_sel.tsv"):
        legacy_st(tiny_legacy_st["counts"], tmp_path / "nope_sel.tsv")
    with pytest.raises(FileNotFoundError, match="Image file not found.*nope.jpg"):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], tmp_path / "nope.jpg")


def test_spots_missing_from_spot_file(tiny_legacy_st):
    spots = tiny_legacy_st["spots_df"]
    spots = spots[~((spots.x == 3) & (spots.y == 2))]
    with pytest.raises(ValueError, match=r"1 spots of the count matrix are not in the spot file.*3x2"):
        legacy_st(tiny_legacy_st["counts"], spots)


def test_spot_file_columns(tiny_legacy_st):
    with pytest.raises(ValueError, match=r"lacks the columns \['pixel_x'\]"):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots_df"].drop(columns="pixel_x"))


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((150, 170), np.uint8), "grayscale"),
        (np.zeros((150, 170, 1), np.uint8), "grayscale"),
        (np.zeros((150, 170, 2), np.uint8), "got 2 channels"),
        (np.zeros((150, 170, 3), np.float32), "must be uint8"),
        (np.zeros((150, 170, 3), np.uint16), "must be uint8"),
    ],
)
def test_non_rgb_image(tiny_legacy_st, image, match):
    with pytest.raises(ValueError, match=match):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], image)


def test_grayscale_image_file(tiny_legacy_st, tmp_path):
    from PIL import Image

    path = tmp_path / "gray.png"
    Image.fromarray(tiny_legacy_st["image_array"][..., 0]).save(path)
    with pytest.raises(ValueError, match="grayscale"):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], path)


def test_coordinates_outside_image(tiny_legacy_st):
    with pytest.raises(ValueError, match=r"29 of 29 spot centres lie outside the 170 x 150 px image"):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], tiny_legacy_st["image_array"], image_scale=3.0)
    small = tiny_legacy_st["image_array"][:100]  # rows y = 5, 6 (pixels 110, 130) fall outside
    with pytest.raises(ValueError, match=r"12 of 29 spot centres lie outside"):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], small)


def test_bad_parameters(tiny_legacy_st):
    with pytest.raises(ValueError, match="image_scale must be a positive"):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], image_scale=0)
    with pytest.raises(ValueError, match="pixel_size_um must be a positive"):
        legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], pixel_size_um=-1.0)
    one_col = tiny_legacy_st["spots_df"].assign(new_x=3.0)
    with pytest.raises(ValueError, match="Pass `pixel_size_um=`"):
        legacy_st(tiny_legacy_st["counts"], one_col)


def test_duplicated_spot_ids(tiny_legacy_st):
    counts = tiny_legacy_st["counts_df"]
    dup = pd.concat([counts, counts.iloc[:1]])
    with pytest.raises(ValueError, match="duplicated spot ids"):
        legacy_st(dup, tiny_legacy_st["spots_df"])


# ------------------------------------------------------------------------------------------------ real data
def test_b4_full_resolution(her2st_dir: Path, her2st_loader):
    sdata = her2st_loader("B4")
    adata = sdata.tables["table"]
    assert adata.shape == (283, 15289)
    he = sdata.images["he"]
    assert he["scale0"]["image"].shape == (3, 9923, 9272)  # multiscale, full resolution at level 0
    entry = adata.uns["spatial"]["B4"]
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(100 / (200 / 289.7), rel=0.002)
    assert max(entry["images"]["hires"].shape[:2]) == 2000
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(2000 / 9923)
    sel = pd.read_csv(her2st_dir / "data" / "ST-spotfiles" / "B4_selection.tsv", sep="\t")
    sel.index = sel.x.astype(str) + "x" + sel.y.astype(str)
    np.testing.assert_allclose(adata.obsm["spatial"], sel.loc[adata.obs_names, ["pixel_x", "pixel_y"]].to_numpy())


def test_real_counts_match_file(her2st_dir: Path):
    """The reader itself on the real files (no dataset wrapper): counts and ids are the file's."""
    counts_path = her2st_dir / "data" / "ST-cnts" / "C2.tsv.gz"
    sdata = legacy_st(counts_path, her2st_dir / "data" / "ST-spotfiles" / "C2_selection.tsv")
    df = pd.read_csv(counts_path, sep="\t", index_col=0)
    adata = sdata.tables["table"]
    assert list(adata.obs_names) == list(df.index) and list(adata.var_names) == list(df.columns)
    np.testing.assert_array_equal(adata.X.toarray(), df.to_numpy(np.float32))
    assert adata.uns["spatial"]["C2"]["metadata"]["pixel_size_um"] == pytest.approx(200 / 289.8, rel=0.002)


@pytest.mark.parametrize("section", ["A1", "G2"])  # with and without image
def test_squidpy_on_reader_output(her2st_loader, section, tmp_path):
    import matplotlib.pyplot as plt
    import squidpy as sq

    adata = her2st_loader(section).tables["table"].copy()
    sq.gr.spatial_neighbors(adata)  # default: grid from uns['spatial']
    deg = np.asarray(adata.obsp["spatial_connectivities"].sum(axis=1)).ravel()
    assert np.median(deg) >= 4  # legacy ST: square grid, ~4-6 neighbours inside the tissue
    sq.gr.spatial_neighbors(adata, n_neighs=6, coord_type="generic")
    assert adata.obsp["spatial_distances"].nnz == 6 * adata.n_obs
    kwargs = {} if section == "A1" else {"shape": None}
    sq.pl.spatial_scatter(adata, color=["pathology", "ERBB2"], **kwargs)
    out = tmp_path / f"{section}.png"
    plt.savefig(out, dpi=30)
    plt.close("all")
    assert out.stat().st_size > 1000


def test_write_read_roundtrip(her2st_loader, tmp_path):
    import spatialdata as sd

    from spacrd_sc.pp import spot_patches

    sdata = her2st_loader("A1")
    path = tmp_path / "A1.zarr"
    sdata.write(path)
    back = sd.read_zarr(path)
    a, b = sdata.tables["table"], back.tables["table"]
    assert (a.X != b.X).nnz == 0 and b.X.dtype == np.float32
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    pd.testing.assert_series_equal(a.obs["pathology"], b.obs["pathology"])
    np.testing.assert_array_equal(a.obs["cancer"].to_numpy(), b.obs["cancer"].to_numpy())
    np.testing.assert_allclose(sdata.shapes["spots"]["radius"], back.shapes["spots"]["radius"])
    np.testing.assert_array_equal(sdata.images["he"].data.compute(), back.images["he"].data.compute())
    assert b.uns["spatial"]["A1"]["scalefactors"] == a.uns["spatial"]["A1"]["scalefactors"]
    idx = np.arange(0, a.n_obs, 17)
    np.testing.assert_array_equal(spot_patches(sdata, indices=idx), spot_patches(back, indices=idx))


def test_multiscale_write_read_roundtrip(tiny_legacy_st, tmp_path, monkeypatch):
    """A pyramid survives zarr; patches read window by window from the zarr store equal the originals."""
    import pickle

    import spatialdata as sd

    from spacrd_sc import _patch_reader as _patches
    from spacrd_sc.pp import spot_patches

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4200, 180, 3), dtype=np.uint8)
    sdata = legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], img)
    sdata.write(tmp_path / "ms.zarr")
    back = sd.read_zarr(tmp_path / "ms.zarr")
    assert list(back.images["he"].children) == list(sdata.images["he"].children)
    np.testing.assert_array_equal(back.images["he"]["scale0"]["image"].data.compute(), img.transpose(2, 0, 1))
    expected = spot_patches(sdata, size=24)
    monkeypatch.setattr(_patches, "_IN_MEMORY_MAX_BYTES", 0)  # force dask window reads from the store
    reader = _patches._PatchReader(back, size=24)
    np.testing.assert_array_equal(reader.read(), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reader))[3], expected[3])  # DataLoader workers
