"""Tests of the image-element helpers (``_images``) and the ``uns['spatial']`` writer (``_spatial``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _helpers.user_warnings import no_user_warnings

from spacrd_sc._images import _allow_large_images, _global_to_pixel, _image_model, _read_image_file
from spacrd_sc._spatial import _add_scanpy_spatial


def _sdata(image_element, xy):
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    adata = ad.AnnData(np.zeros((len(xy), 1), np.float32))
    adata.obsm["spatial"] = np.asarray(xy, float)
    return SpatialData(images={"he": image_element}, tables={"table": TableModel.parse(adata)})


def test_image_model_single_and_multiscale():
    from xarray import DataArray, DataTree

    small = _image_model(np.zeros((100, 120, 3), np.uint8))
    assert isinstance(small, DataArray) and small.dims == ("c", "y", "x") and list(small.c.values) == ["r", "g", "b"]
    big = _image_model(np.zeros((50, 4100, 3), np.uint8))
    assert isinstance(big, DataTree)
    sides = [max(node["image"].shape[1:]) for node in big.children.values()]
    assert sides[0] == 4100 and sides[-1] <= 1024
    assert isinstance(_image_model(np.zeros((50, 4100, 3), np.uint8), scale_factors=None), DataArray)


def test_image_model_dask_and_alpha():
    import dask.array as da

    rgba = da.from_array(np.full((40, 30, 4), 9, np.uint8))
    m = _image_model(rgba)
    assert m.shape == (3, 40, 30) and int(m.data.max().compute()) == 9


@pytest.mark.parametrize(
    ("shape", "dtype", "match"),
    [
        ((10, 10), np.uint8, "grayscale"),
        ((10, 10, 1), np.uint8, "grayscale"),
        ((10, 10, 5), np.uint8, "got 5 channels"),
        ((3, 10, 10, 2), np.uint8, "shape"),
        ((10, 10, 3), np.float64, "must be uint8"),
    ],
)
def test_image_model_rejects(shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        _image_model(np.zeros(shape, dtype))


def test_global_to_pixel_and_scanpy_spatial_with_scale_transform():
    """A Visium-like hires image stored at 1/4 of the global frame (Scale(4) to global)."""
    from spatialdata.transformations import Scale

    img = np.random.default_rng(0).integers(0, 256, (500, 300, 3), dtype=np.uint8)
    elem = _image_model(img, transformations={"global": Scale([4.0, 4.0], axes=("x", "y"))})
    sdata = _sdata(elem, [[400.0, 800.0]])
    m = _global_to_pixel(sdata, "he")
    np.testing.assert_allclose(m, np.diag([0.25, 0.25, 1.0]))

    _add_scanpy_spatial(
        sdata,
        table_key="table",
        library_id="V1",
        spot_diameter_px=180.0,
        image_key="he",
        platform="visium",
        metadata={"pixel_size_um": 0.3, "missing": None},
        hires_max_px=200,
    )
    entry = sdata.tables["table"].uns["spatial"]["V1"]
    sf = entry["scalefactors"]
    assert sf["spot_diameter_fullres"] == 180.0
    assert sf["tissue_hires_scalef"] == pytest.approx(0.25 * 200 / 500)  # global → stored hires pixels
    assert entry["images"]["hires"].shape == (200, 120, 3) and entry["images"]["hires"].dtype == np.uint8
    assert entry["metadata"] == {"platform": "visium", "image_key": "he", "pixel_size_um": 0.3}


def test_scanpy_spatial_reads_coarse_level():
    """From a multiscale image the hires copy comes from a pyramid level (same picture, smaller)."""
    img = np.zeros((4400, 2200, 3), np.uint8)
    img[:2200] = 255  # top half white
    sdata = _sdata(_image_model(img), [[10.0, 10.0]])
    _add_scanpy_spatial(
        sdata, table_key="table", library_id="x", spot_diameter_px=10.0, image_key="he", platform="test"
    )
    entry = sdata.tables["table"].uns["spatial"]["x"]
    hires = entry["images"]["hires"]
    assert hires.shape == (2000, 1000, 3)
    assert (hires[:990] == 255).all() and (hires[1010:] == 0).all()
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(2000 / 4400)


def test_scanpy_spatial_without_image():
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    adata = ad.AnnData(np.zeros((2, 1), np.float32))
    adata.obsm["spatial"] = np.zeros((2, 2))
    sdata = SpatialData(tables={"table": TableModel.parse(adata)})
    _add_scanpy_spatial(
        sdata, table_key="table", library_id="s", spot_diameter_px=5.0, image_key=None, platform="legacy_st"
    )
    entry = sdata.tables["table"].uns["spatial"]["s"]
    # tissue_hires_scalef is recorded without an image too (obsm['spatial'] is in full-resolution px)
    assert entry["scalefactors"] == {"spot_diameter_fullres": 5.0, "tissue_hires_scalef": 1.0}
    assert "images" not in entry


def test_imageless_section_plots_with_squidpy_without_warnings():
    """An image-less section renders its spots with ``sq.pl.spatial_scatter(..., img=False)``, silently."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import squidpy as sq
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    xs, ys = np.meshgrid(np.arange(8), np.arange(6))
    xy = np.c_[xs.ravel(), ys.ravel()] * 20.0 + 10.0
    adata = ad.AnnData(np.ones((len(xy), 2), np.float32))
    adata.obsm["spatial"] = xy
    adata.obs["score"] = np.linspace(0, 1, len(xy))
    adata.obs["pathology"] = pd.Categorical(np.where(xy[:, 0] < 80, "cancer", "stroma"))
    sdata = SpatialData(tables={"table": TableModel.parse(adata)})
    _add_scanpy_spatial(
        sdata, table_key="table", library_id="s", spot_diameter_px=10.0, image_key=None, platform="legacy_st"
    )
    t = sdata.tables["table"]
    with no_user_warnings():
        sq.pl.spatial_scatter(t, color=["score", "pathology"], img=False)
    fig = plt.gcf()
    axes = [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]
    assert len(axes) >= 2
    assert all(not ax.images for ax in axes)  # no image drawn
    assert sum(len(c.get_offsets()) if hasattr(c, "get_offsets") else 0 for c in axes[0].collections) >= 1
    plt.close(fig)


def test_global_to_pixel_errors():
    from spatialdata.transformations import Identity

    sdata = _sdata(_image_model(np.zeros((10, 10, 3), np.uint8), transformations={"aligned": Identity()}), [[1.0, 1.0]])
    with pytest.raises(ValueError, match=r"no transformation to the 'global' coordinate system.*aligned"):
        _global_to_pixel(sdata, "he")
    with pytest.raises(KeyError, match="No image 'nope'"):
        _global_to_pixel(sdata, "nope")


def test_read_image_file_large_limit_is_restored(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100  # smaller than the image: only the temporary raise lets it be read
    try:
        assert _read_image_file(path).shape == (20, 30, 3)
        assert Image.MAX_IMAGE_PIXELS == 100
        with _allow_large_images():
            assert Image.MAX_IMAGE_PIXELS > 10**9
        assert Image.MAX_IMAGE_PIXELS == 100
    finally:
        Image.MAX_IMAGE_PIXELS = before
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        _read_image_file(tmp_path / "nope.tif")


def test_read_tif(tmp_path):
    import tifffile

    img = np.random.default_rng(0).integers(0, 256, (3, 20, 30), dtype=np.uint8)  # channel-first TIFF
    tifffile.imwrite(tmp_path / "x.tif", img, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(_read_image_file(tmp_path / "x.tif"), np.moveaxis(img, 0, -1))
