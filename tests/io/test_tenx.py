"""Tests of the 10x readers ``visium``, ``visium_hd``, ``xenium`` (:mod:`spacrd_sc.io`).

The 10x folders are written into tmp dirs by ``_helpers.tenx`` in the exact formats spatialdata-io 0.7.1
reads; the Visium one reuses the real shared section's positions, scale factors and lowres image when
the shared data folder is present (and a synthetic grid otherwise).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers import tenx as fx
from scipy import sparse

from spacrd_sc._images import _global_to_pixel, _image_hw, _image_levels
from spacrd_sc.io import visium, visium_hd, xenium


# --------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vis(tmp_path_factory: pytest.TempPathFactory) -> fx.VisiumFixture:
    return fx.write_visium(tmp_path_factory.mktemp("visium") / "outs", source="auto")


@pytest.fixture(scope="module")
def vis_full(tmp_path_factory: pytest.TempPathFactory) -> fx.VisiumFixture:
    return fx.write_visium(
        tmp_path_factory.mktemp("visium_full"),
        source="synthetic",
        positions_format="v2",
        fullres=True,
        prefix="LIB_",
    )


@pytest.fixture(scope="module")
def hd(tmp_path_factory: pytest.TempPathFactory) -> fx.VisiumHDFixture:
    return fx.write_visium_hd(tmp_path_factory.mktemp("visium_hd"))


@pytest.fixture(scope="module")
def xe(tmp_path_factory: pytest.TempPathFactory) -> fx.XeniumFixture:
    return fx.write_xenium(tmp_path_factory.mktemp("xenium") / "xenium_rep1", version="1.0.1", he_format="ome.tif")


@pytest.fixture(scope="module")
def xe2(tmp_path_factory: pytest.TempPathFactory) -> fx.XeniumFixture:
    return fx.write_xenium(tmp_path_factory.mktemp("xenium2") / "xenium_v2", version="2.0.0.10", he_format="png")


@pytest.fixture(scope="module")
def sd_vis(vis: fx.VisiumFixture):
    return visium(vis.path)


@pytest.fixture(scope="module")
def sd_hd(hd: fx.VisiumHDFixture):
    return visium_hd(hd.path)


@pytest.fixture(scope="module")
def sd_xe_he(xe: fx.XeniumFixture):
    return xenium(xe.path, he_image=xe.he_file, he_alignment=xe.alignment_file)


@pytest.fixture(scope="module")
def sd_xe_plain(xe2: fx.XeniumFixture):
    return xenium(xe2.path)


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _check_conventions(sdata, *, platform: str, table_key: str = "table") -> tuple:
    """The conventions every 10x reader output follows; returns (adata, library_id, spots_key, meta)."""
    adata = sdata.tables[table_key]
    attrs = adata.uns["spatialdata_attrs"]
    assert attrs["region_key"] == "region"
    assert attrs["instance_key"] == "spot_id"
    spots_key = attrs["region"] if isinstance(attrs["region"], str) else attrs["region"][0]
    circles = sdata.shapes[spots_key]
    assert (circles.geometry.geom_type == "Point").all()
    assert "radius" in circles.columns
    np.testing.assert_array_equal(circles.index.to_numpy(), adata.obs["spot_id"].to_numpy())
    np.testing.assert_allclose(
        np.column_stack([circles.geometry.x, circles.geometry.y]), adata.obsm["spatial"], rtol=0, atol=1e-6
    )
    assert (adata.obs["region"] == spots_key).all()
    from spatialdata.transformations import get_transformation

    assert "global" in get_transformation(circles, get_all=True)

    assert sparse.issparse(adata.X) and adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    assert adata.var_names.is_unique
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    assert adata.obsm["spatial"].dtype == np.float64

    (library_id,) = adata.uns["spatial"].keys()
    entry = adata.uns["spatial"][library_id]
    meta = entry["metadata"]
    assert meta["platform"] == platform
    assert meta["spots_key"] == spots_key
    assert meta["library_id"] == library_id
    diam = entry["scalefactors"]["spot_diameter_fullres"]
    np.testing.assert_allclose(circles["radius"].to_numpy(), diam / 2.0)
    if "image_key" in meta:
        assert meta["image_key"] in sdata.images
        assert entry["images"]["hires"].dtype == np.uint8
        assert entry["images"]["hires"].shape[2] == 3
    return adata, library_id, spots_key, meta


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sparse.issparse(X) else X)


def _squidpy_runs(adata, tmp_path: Path, *, imageless: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import squidpy as sq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # squidpy 1.8.2 deprecates spatial_neighbors
        sq.gr.spatial_neighbors(adata, n_neighs=6, coord_type="generic")
    assert adata.obsp["spatial_connectivities"].shape == (adata.n_obs, adata.n_obs)
    kw = {"img": False, "scale_factor": 1.0} if imageless else {}
    sq.pl.spatial_scatter(adata, color=adata.var_names[0], dpi=30, figsize=(2, 2), **kw)
    out = tmp_path / "scatter.png"
    plt.savefig(out, dpi=30)
    plt.close("all")
    assert out.stat().st_size > 0


# --------------------------------------------------------------------------------------------------------
# Visium
# --------------------------------------------------------------------------------------------------------
def test_visium_conventions(vis: fx.VisiumFixture, sd_vis, tmp_path: Path) -> None:
    adata, lib, spots_key, meta = _check_conventions(sd_vis, platform="visium")
    assert lib == vis.library_id == spots_key
    assert meta["image_key"] == f"{lib}_hires_image"
    assert meta["counts_file"] == "filtered_feature_bc_matrix.h5"

    # counts: the written matrix, rows in matrix order
    np.testing.assert_array_equal(adata.obs_names.to_numpy(), vis.barcodes)
    np.testing.assert_array_equal(_dense(adata.X), _dense(vis.counts).astype(np.float32))
    # duplicated symbol made unique, ids kept
    assert "KRT19" in adata.var_names and "KRT19-1" in adata.var_names
    np.testing.assert_array_equal(adata.var["gene_ids"].to_numpy(), vis.features["id"].to_numpy())

    # obsm['spatial'] = (pxl_col, pxl_row) in full-resolution px, the positions written
    pos = vis.positions.loc[vis.barcodes]
    np.testing.assert_allclose(
        adata.obsm["spatial"], pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=float)
    )
    sf = vis.scalefactors
    entry = adata.uns["spatial"][lib]
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(sf["spot_diameter_fullres"])
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(sf["tissue_hires_scalef"])
    assert entry["images"]["hires"].shape[:2] == vis.hires_shape
    # the patch image: global (full-res px) -> hires px is the hires scale factor
    A = _global_to_pixel(sd_vis, meta["image_key"])
    np.testing.assert_allclose(A[:2, :2], np.eye(2) * sf["tissue_hires_scalef"], rtol=1e-6)
    np.testing.assert_allclose(A[:2, 2], 0, atol=1e-9)
    assert "global" in sd_vis.coordinate_systems and lib not in sd_vis.coordinate_systems
    # every spot lies on the hires image
    hires_xy = adata.obsm["spatial"] * sf["tissue_hires_scalef"]
    assert (hires_xy >= 0).all() and (hires_xy < np.array(vis.hires_shape[::-1])).all()
    _squidpy_runs(adata, tmp_path)


def test_visium_fullres_v2_positions(vis_full: fx.VisiumFixture) -> None:
    sdata = visium(vis_full.path, fullres_image_file=vis_full.fullres_file, table_key="spots_table")
    adata, lib, spots_key, meta = _check_conventions(sdata, platform="visium", table_key="spots_table")
    assert "table" not in sdata.tables
    assert lib == "LIB"  # from the counts-file prefix
    assert meta["image_key"] == "LIB_full_image"
    np.testing.assert_allclose(_global_to_pixel(sdata, "LIB_full_image"), np.eye(3))
    pos = vis_full.positions.loc[vis_full.barcodes]
    np.testing.assert_allclose(
        adata.obsm["spatial"], pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=float)
    )
    # hires copy of the 1200 px full-res image: no downscaling needed (<= 2000 px)
    assert adata.uns["spatial"][lib]["images"]["hires"].shape[:2] == vis_full.fullres_shape
    assert adata.uns["spatial"][lib]["scalefactors"]["tissue_hires_scalef"] == pytest.approx(1.0)


def test_visium_library_id(tmp_path: Path) -> None:
    f = fx.write_visium(tmp_path / "outs", source="synthetic", library_id="from_h5")
    sdata = visium(f.path)
    assert list(sdata["table"].uns["spatial"]) == ["from_h5"]  # the matrix's library_ids attribute
    sdata = visium(f.path, library_id="my section")
    assert list(sdata["table"].uns["spatial"]) == ["my_section"]
    assert "my_section" in sdata.shapes and "my_section_hires_image" in sdata.images


@pytest.mark.parametrize(
    ("remove", "match"),
    [
        ("filtered_feature_bc_matrix.h5", "Count matrix not found: no 'filtered_feature_bc_matrix.h5'"),
        ("spatial/tissue_positions_list.csv", "Spot positions file not found"),
        ("spatial/scalefactors_json.json", "Scale factors file not found: .*scalefactors_json.json"),
    ],
)
def test_visium_missing_files(tmp_path: Path, remove: str, match: str) -> None:
    f = fx.write_visium(tmp_path / "outs", source="synthetic")
    (f.path / remove).unlink()
    with pytest.raises(FileNotFoundError, match=match):
        visium(f.path)


def test_visium_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Visium folder not found: .*nowhere"):
        visium(tmp_path / "nowhere")
    f = fx.write_visium(tmp_path / "outs", source="synthetic")
    with pytest.raises(FileNotFoundError, match="Full-resolution image not found: .*missing.tif"):
        visium(f.path, fullres_image_file="missing.tif")
    with pytest.raises(TypeError, match="library_id"):
        visium(f.path, dataset_id="x")


# --------------------------------------------------------------------------------------------------------
# Visium HD
# --------------------------------------------------------------------------------------------------------
def _expected_hd(hd: fx.VisiumHDFixture, k: int) -> tuple[pd.DataFrame, np.ndarray]:
    pos = hd.positions.loc[hd.barcodes]
    R = pos["array_row"].to_numpy() // k
    C = pos["array_col"].to_numpy() // k
    keys = pd.Series(list(zip(R, C, strict=True)))
    codes, uniq = pd.factorize(keys, sort=True)
    G = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniq), len(codes)))
    summed = _dense(G @ hd.counts)
    blocks = pd.DataFrame(list(uniq), columns=["array_row", "array_col"])
    blocks["n_bins"] = np.asarray(G.sum(1)).ravel().astype(int)
    return blocks, summed


def test_visium_hd_aggregation(hd: fx.VisiumHDFixture, sd_hd, tmp_path: Path) -> None:
    adata, lib, spots_key, meta = _check_conventions(sd_hd, platform="visium_hd")
    k = 28  # 55 µm from 2 µm bins -> 28 x 28 bins = 56 µm
    assert lib == hd.dataset_id  # from the feature_slice.h5 prefix
    assert spots_key == f"{lib}_square_056um"
    assert meta["bins_per_side"] == k and meta["bin_size_um"] == 56.0 and meta["bin_size_um_requested"] == 55.0
    assert meta["source_bin_um"] == 2.0 and meta["microns_per_pixel"] == pytest.approx(hd.microns_per_pixel)
    assert meta["image_key"] == f"{lib}_hires_image"
    # the 2 µm bins are dropped by default
    assert "square_002um" not in sd_hd.tables and f"{lib}_square_002um" not in sd_hd.shapes

    blocks, summed = _expected_hd(hd, k)
    got = adata.obs[["array_row", "array_col"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, blocks[["array_row", "array_col"]], check_dtype=False)
    np.testing.assert_array_equal(adata.obs["n_bins"].to_numpy(), blocks["n_bins"].to_numpy())
    np.testing.assert_array_equal(_dense(adata.X), summed.astype(np.float32))
    assert adata.X.sum() == hd.counts.sum()

    # centres: the geometric centre of each full k x k square, mapped by the array -> pixel affine
    idx = np.column_stack(
        [blocks["array_col"] * k + (k - 1) / 2, blocks["array_row"] * k + (k - 1) / 2, np.ones(len(blocks))]
    )
    expected_xy = (hd.array_to_px @ idx.T).T[:, :2]
    np.testing.assert_allclose(adata.obsm["spatial"], expected_xy, atol=1e-6)
    side_px = k * 2.0 / hd.microns_per_pixel
    assert adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(side_px)
    _squidpy_runs(adata, tmp_path)


def test_visium_hd_options(hd: fx.VisiumHDFixture) -> None:
    sdata = visium_hd(hd.path, bin_size_um=16, keep_source=True, library_id="sec")
    adata, lib, spots_key, meta = _check_conventions(sdata, platform="visium_hd")
    # elements keep spatialdata-io's names (feature-slice prefix); library_id names uns['spatial']
    assert lib == "sec" and spots_key == "HD_test_square_016um" and meta["bins_per_side"] == 8
    assert "square_002um" in sdata.tables and "HD_test_square_002um" in sdata.shapes
    blocks, summed = _expected_hd(hd, 8)
    np.testing.assert_array_equal(_dense(adata.X), summed.astype(np.float32))
    with pytest.raises(ValueError, match="smaller than the source bins"):
        visium_hd(hd.path, bin_size_um=1.0)
    with pytest.raises(FileNotFoundError, match="square_008um"):
        visium_hd(hd.path, bin_size=8)


def test_visium_hd_fullres_contiguous_tiff_is_memory_mapped(tmp_path: Path, monkeypatch) -> None:
    """A contiguous TIFF whose one chunk exceeds the window limit is memory-mapped (reads touch only windows)."""
    import tifffile

    from spacrd_sc import _images

    f = fx.write_visium_hd(tmp_path / "outs", n_rows=40, n_cols=40, fullres=True)
    monkeypatch.setattr(_images, "_IN_MEMORY_WINDOW_BYTES", 0)
    mapped = []
    real_memmap = tifffile.memmap

    def spy(*args, **kwargs):
        out = real_memmap(*args, **kwargs)
        mapped.append(out)
        return out

    monkeypatch.setattr(tifffile, "memmap", spy)
    level0 = _image_levels(visium_hd(f.path).images["HD_test_full_image"])[0]
    assert len(mapped) == 1 and isinstance(mapped[0], np.memmap)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(level0[:, 5:25, 7:30]), 0, -1), mapped[0][5:25, 7:30])


def test_visium_hd_fullres(tmp_path: Path) -> None:
    f = fx.write_visium_hd(tmp_path / "outs", n_rows=60, n_cols=60, fullres=True)
    sdata = visium_hd(f.path)
    adata, lib, spots_key, meta = _check_conventions(sdata, platform="visium_hd")
    assert meta["image_key"] == "HD_test_full_image"
    np.testing.assert_allclose(_global_to_pixel(sdata, "HD_test_full_image"), np.eye(3))
    assert adata.uns["spatial"][lib]["scalefactors"]["tissue_hires_scalef"] == pytest.approx(1.0)
    # the microscope TIFF is read window by window (memory-mapped, chunked), not decoded whole per window
    level0 = _image_levels(sdata.images["HD_test_full_image"])[0]
    assert level0.data.numblocks[1] > 1 and level0.data.chunksize[1] <= 512
    import tifffile

    np.testing.assert_array_equal(
        np.moveaxis(np.asarray(level0[:, 100:140, 200:260]), 0, -1),
        tifffile.imread(f.path / "microscope_image" / "tissue_image.tif")[100:140, 200:260],
    )
    with pytest.raises(FileNotFoundError, match="Full-resolution image not found"):
        visium_hd(f.path, fullres_image_file=tmp_path / "missing.tif")


def test_visium_hd_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Visium HD folder not found"):
        visium_hd(tmp_path / "nowhere")
    f = fx.write_visium_hd(tmp_path / "outs", n_rows=30, n_cols=30)
    matrix = f.path / "binned_outputs" / "square_002um" / "filtered_feature_bc_matrix.h5"
    matrix.unlink()
    with pytest.raises(
        FileNotFoundError, match="Count matrix not found: .*square_002um.*filtered_feature_bc_matrix.h5"
    ):
        visium_hd(f.path)
    (f.path / f"{f.dataset_id}_feature_slice.h5").unlink()
    with pytest.raises(FileNotFoundError, match="feature_slice.h5"):
        visium_hd(f.path)


# --------------------------------------------------------------------------------------------------------
# Xenium
# --------------------------------------------------------------------------------------------------------
def _expected_xenium(x: fx.XeniumFixture, bin_um: float) -> tuple[pd.DataFrame, np.ndarray]:
    gex = (x.features["feature_type"] == "Gene Expression").to_numpy()
    R = np.floor(x.centroids_um[:, 1] / bin_um).astype(int)
    C = np.floor(x.centroids_um[:, 0] / bin_um).astype(int)
    codes, uniq = pd.factorize(pd.Series(list(zip(R, C, strict=True))), sort=True)
    G = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniq), len(codes)))
    blocks = pd.DataFrame(list(uniq), columns=["array_row", "array_col"])
    blocks["n_cells"] = np.asarray(G.sum(1)).ravel().astype(int)
    return blocks, _dense(G @ x.counts[:, gex])


def test_xenium_with_he(xe: fx.XeniumFixture, sd_xe_he, tmp_path: Path) -> None:
    adata, lib, spots_key, meta = _check_conventions(sd_xe_he, platform="xenium")
    assert lib == "xenium_rep1" and spots_key == "square_055um"
    assert meta["image_key"] == "he_image" and meta["global_frame"] == "he_pixels"
    assert meta["pixel_size_um"] == pytest.approx(0.2125) and meta["n_cells"] == len(xe.cell_ids)
    np.testing.assert_allclose(meta["he_to_morphology"], xe.he_to_morph)

    blocks, summed = _expected_xenium(xe, 55.0)
    pd.testing.assert_frame_equal(
        adata.obs[["array_row", "array_col", "n_cells"]].reset_index(drop=True), blocks, check_dtype=False
    )
    np.testing.assert_array_equal(_dense(adata.X), summed.astype(np.float32))  # gene-expression features only
    assert adata.n_vars == int((xe.features["feature_type"] == "Gene Expression").sum())

    # bin centres: µm -> morphology px -> H&E px (inverse of the 10x alignment, which maps H&E -> morphology)
    centre_px = np.column_stack([(blocks["array_col"] + 0.5) * 55.0, (blocks["array_row"] + 0.5) * 55.0]) / 0.2125
    hom = np.column_stack([centre_px, np.ones(len(centre_px))])
    expected = (np.linalg.inv(xe.he_to_morph) @ hom.T).T[:, :2]
    np.testing.assert_allclose(adata.obsm["spatial"], expected, atol=1e-6)
    # H&E at 1 µm/px: a 55 µm bin is 55 px wide
    assert adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(55.0)
    np.testing.assert_allclose(_global_to_pixel(sd_xe_he, "he_image"), np.eye(3))
    assert _image_hw(_image_levels(sd_xe_he.images["he_image"])[0]) == tuple(xe.he_shape)
    # every centre falls inside the H&E
    h, w = xe.he_shape
    assert (adata.obsm["spatial"] >= 0).all() and (adata.obsm["spatial"][:, 0] < w).all()
    assert (adata.obsm["spatial"][:, 1] < h).all()
    _squidpy_runs(adata, tmp_path)
    sd_xe_he.write(tmp_path / "xenium.zarr")  # metadata (3x3 alignment, strings, numbers) is writable


def test_xenium_imageless(xe2: fx.XeniumFixture, sd_xe_plain, tmp_path: Path) -> None:
    adata, lib, spots_key, meta = _check_conventions(sd_xe_plain, platform="xenium")
    assert "image_key" not in meta and "images" not in adata.uns["spatial"][lib]
    assert meta["global_frame"] == "morphology_pixels" and len(sd_xe_plain.images) == 0
    blocks, summed = _expected_xenium(xe2, 55.0)
    np.testing.assert_array_equal(_dense(adata.X), summed.astype(np.float32))
    centre_px = np.column_stack([(blocks["array_col"] + 0.5) * 55.0, (blocks["array_row"] + 0.5) * 55.0]) / 0.2125
    np.testing.assert_allclose(adata.obsm["spatial"], centre_px, atol=1e-6)
    assert adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(55.0 / 0.2125)
    _squidpy_runs(adata, tmp_path, imageless=True)


def test_xenium_he_variants(xe: fx.XeniumFixture, xe2: fx.XeniumFixture, sd_xe_he) -> None:
    # spatialdata-io's own discovery of '*_he_image.ome.tif' + '*_he_imagealignment.csv'
    auto = xenium(xe.path, aligned_images=True)
    np.testing.assert_allclose(auto["table"].obsm["spatial"], sd_xe_he["table"].obsm["spatial"], atol=1e-6)
    np.testing.assert_allclose(_global_to_pixel(auto, "he_image"), np.eye(3), atol=1e-9)
    # a PNG H&E and the alignment as an array; keep the cell table
    png = xenium(xe2.path, he_image=xe2.he_file, he_alignment=xe2.he_to_morph, bin_size_um=40, keep_source=True)
    adata, lib, spots_key, meta = _check_conventions(png, platform="xenium")
    assert spots_key == "square_040um" and meta["image_key"] == "he_image"
    assert png["cell_table"].n_obs == len(xe2.cell_ids) and "cell_circles" in png.shapes
    blocks, summed = _expected_xenium(xe2, 40.0)
    np.testing.assert_array_equal(_dense(adata.X), summed.astype(np.float32))
    # cell circles moved into the H&E frame with the same alignment
    cells_he = png.shapes["cell_circles"]
    from spatialdata import transform

    moved = transform(cells_he, to_coordinate_system="global")
    hom = np.column_stack([xe2.centroids_um / 0.2125, np.ones(len(xe2.cell_ids))])
    expected = (np.linalg.inv(xe2.he_to_morph) @ hom.T).T[:, :2]
    np.testing.assert_allclose(np.column_stack([moved.geometry.x, moved.geometry.y]), expected, atol=1e-4)
    # an in-memory H&E
    from PIL import Image

    arr = np.asarray(Image.open(xe2.he_file).convert("RGB"))
    mem = xenium(xe2.path, he_image=arr, he_alignment=xe2.alignment_file, bin_size_um=40)
    np.testing.assert_allclose(mem["table"].obsm["spatial"], adata.obsm["spatial"], atol=1e-6)


def test_xenium_bad_input(tmp_path: Path, xe: fx.XeniumFixture) -> None:
    with pytest.raises(FileNotFoundError, match="Xenium folder not found"):
        xenium(tmp_path / "nowhere")
    f = fx.write_xenium(tmp_path / "xen", n_cells=50, with_he=False)
    with pytest.raises(FileNotFoundError, match="H&E image not found: .*missing.ome.tif"):
        xenium(f.path, he_image=tmp_path / "missing.ome.tif")
    bad = tmp_path / "bad_alignment.csv"
    bad.write_text("1,0,0\n0,1,0\n")
    with pytest.raises(ValueError, match="3 x 3 affine"):
        xenium(f.path, he_image=xe.he_file, he_alignment=bad)
    with pytest.raises(ValueError, match="positive"):
        xenium(f.path, bin_size_um=0)
    (f.path / "cell_feature_matrix.h5").unlink()
    with pytest.raises(FileNotFoundError, match="Cell count matrix not found: .*cell_feature_matrix.h5"):
        xenium(f.path)
    shutil.rmtree(f.path)
