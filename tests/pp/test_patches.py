"""Tests of ``pp.spot_patches`` and the lazy ``_PatchReader`` (synthetic geometry + real her2st images)."""

from __future__ import annotations

import logging
import pickle

import anndata as ad
import numpy as np
import pytest
from PIL import Image

from spacrd_sc import _patch_reader as _patches
from spacrd_sc._images import _image_model
from spacrd_sc._patch_reader import PAD_VALUE, _PatchReader
from spacrd_sc.pp import spot_patches


def gradient_image(height: int = 120, width: int = 200) -> np.ndarray:
    """R = x, G = y, B = 7 (pixel index, so a patch's values say where it was cut)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)


def make_sdata(image, xy, diameter, *, transformations=None, table=True, lib="lib"):
    """A SpatialData with image ``he`` and a table whose spots sit at ``xy`` (global units)."""
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    adata = ad.AnnData(np.zeros((len(xy), 1), np.float32), obs={"i": np.arange(len(xy))})
    adata.obs_names = [f"s{i}" for i in range(len(xy))]
    adata.obsm["spatial"] = np.asarray(xy, dtype=float)
    adata.uns["spatial"] = {lib: {"scalefactors": {"spot_diameter_fullres": float(diameter)}, "metadata": {}}}
    images = {} if image is None else {"he": _image_model(image, transformations=transformations)}
    return SpatialData(images=images, tables={"table": TableModel.parse(adata)} if table else {})


# ------------------------------------------------------------------------------------------------ geometry
def test_identity_resize_is_exact_crop():
    img = gradient_image()
    sdata = make_sdata(img, [[100.0, 60.0]], 20.0)
    patch = spot_patches(sdata, size=20)
    assert patch.shape == (1, 20, 20, 3) and patch.dtype == np.uint8
    np.testing.assert_array_equal(patch[0], img[50:70, 90:110])  # crop [cx - d/2, cx + d/2)


def test_resize_geometry_up_and_down():
    img = gradient_image()
    sdata = make_sdata(img, [[100.0, 60.0]], 20.0)
    up = spot_patches(sdata, size=40)[0].astype(float)  # output pixel j centred at 90 + (j + .5) / 2
    # pixel i holds value i at its centre i + .5; the read window has a margin, so even the outermost
    # output pixels interpolate between real neighbours
    offsets = (np.arange(40) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[20, :, 0], 90 + offsets, atol=0.51)
    np.testing.assert_allclose(up[:, 20, 1], 50 + offsets, atol=0.51)
    down = spot_patches(sdata, size=10)[0].astype(float)  # each output pixel averages 2 source pixels
    np.testing.assert_allclose(down[5, :, 0], 90 + 2 * np.arange(10) + 0.5, atol=0.51)
    assert (down[..., 2] == 7).all()


def test_matches_whole_image_resize():
    """Cutting a window with a margin gives PIL's resize of the whole (padded) image."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    xy = np.array([[40.3, 33.7], [101.9, 50.2], [3.0, 4.0]])
    d = 17.3
    for size in (8, 31, 64):
        got = spot_patches(make_sdata(img, xy, d), size=size)
        pad = 40
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
        for k, (cx, cy) in enumerate(xy):
            box = (cx - d / 2 + pad, cy - d / 2 + pad, cx + d / 2 + pad, cy + d / 2 + pad)
            ref = np.asarray(Image.fromarray(padded).resize((size, size), Image.Resampling.BILINEAR, box=box))
            diff = np.abs(got[k].astype(int) - ref)  # ±1: float rounding of the shifted box
            assert diff.max() <= 1 and diff.mean() < 0.05


def test_padding_at_image_edge():
    img = gradient_image()
    sdata = make_sdata(img, [[5.0, 5.0], [195.0, 118.0]], 20.0)
    p = spot_patches(sdata, size=20)
    # top-left spot: crop [-5, 15) on both axes → 5 padded rows/columns of white
    assert (p[0, :5] == PAD_VALUE).all() and (p[0, :, :5] == PAD_VALUE).all()
    np.testing.assert_array_equal(p[0, 5:, 5:], img[0:15, 0:15])
    # bottom-right spot: crop x [185, 205), y [108, 128) → 5 columns and 8 rows outside
    assert (p[1, :, 15:] == PAD_VALUE).all() and (p[1, 12:] == PAD_VALUE).all()
    np.testing.assert_array_equal(p[1, :12, :15], img[108:120, 185:200])


def test_context_and_diameter_override():
    img = gradient_image()
    sdata = make_sdata(img, [[100.0, 60.0]], 20.0)
    wide = spot_patches(sdata, size=40, context=2.0)[0]
    np.testing.assert_array_equal(wide, img[40:80, 80:120])
    r = _PatchReader(sdata, size=10, diameter_px=10.0)
    assert r.diameter_px == 10.0 and r.side_px == 10.0
    np.testing.assert_array_equal(r[0], img[55:65, 95:105])


def test_scaled_image_transform():
    """An image stored at 1/4 of the global frame (a Visium-like hires image with a Scale to global)."""
    from spatialdata.transformations import Scale

    img = gradient_image()
    xy_global = np.array([[400.0, 240.0]])  # = pixel (100, 60)
    sdata = make_sdata(img, xy_global, 80.0, transformations={"global": Scale([4.0, 4.0], axes=("x", "y"))})
    r = _PatchReader(sdata, size=20)
    assert r.diameter_px == pytest.approx(20.0)
    np.testing.assert_allclose(r.centres_px, [[100.0, 60.0]])
    np.testing.assert_array_equal(r[0], img[50:70, 90:110])


def test_reader_indexing_pickling_and_dask_path(monkeypatch):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    xy = rng.uniform(10, 250, (25, 2))
    sdata = make_sdata(img, xy, 23.0)
    reader = _PatchReader(sdata, size=16)
    assert len(reader) == 25 and reader.image_key == "he" and reader.centres_px.shape == (25, 2)
    allp = reader.read()
    assert allp.shape == (25, 16, 16, 3)
    np.testing.assert_array_equal(reader[3], allp[3])
    np.testing.assert_array_equal(reader[-1], allp[-1])
    np.testing.assert_array_equal(reader.read([4, 2]), allp[[4, 2]])
    mask = np.zeros(25, bool)
    mask[[1, 7]] = True
    np.testing.assert_array_equal(spot_patches(sdata, size=16, indices=mask), allp[[1, 7]])
    with pytest.raises(IndexError, match="out of range"):
        reader[25]

    # window-by-window dask reading gives the same patches as the in-memory copy
    monkeypatch.setattr(_patches, "_IN_MEMORY_MAX_BYTES", 0)
    lazy = _PatchReader(sdata, size=16)
    np.testing.assert_array_equal(lazy.read(), allp)
    assert lazy._cache is None
    clone = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(clone[5], allp[5])

    # the in-memory copy is not pickled for a dask-backed image
    monkeypatch.setattr(_patches, "_IN_MEMORY_MAX_BYTES", 2**40)
    reader2 = _PatchReader(sdata, size=16)
    reader2.read([0])
    assert reader2._cache is not None
    assert pickle.loads(pickle.dumps(reader2))._cache is None


def test_anndata_falls_back_to_hires(caplog):
    img = gradient_image()
    adata = ad.AnnData(np.zeros((1, 1), np.float32))
    adata.obsm["spatial"] = np.array([[200.0, 120.0]])  # full-res units
    adata.uns["spatial"] = {
        "lib": {
            "images": {"hires": img.astype(np.float32) / 255},  # scanpy stores float images
            "scalefactors": {"spot_diameter_fullres": 40.0, "tissue_hires_scalef": 0.5},
        }
    }
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        p = spot_patches(adata, size=20)
    assert "downscaled" in caplog.text
    np.testing.assert_array_equal(p[0], img[50:70, 90:110])


# ------------------------------------------------------------------------------------------------ errors
def test_size_must_be_positive():
    sdata = make_sdata(gradient_image(), [[100.0, 60.0]], 20.0)
    with pytest.raises(ValueError, match=r"size` must be an integer ≥ 1"):
        spot_patches(sdata, size=0)
    with pytest.raises(ValueError, match="`context` must be a positive"):
        spot_patches(sdata, context=0)


def test_image_less_section():
    sdata = make_sdata(None, [[100.0, 60.0]], 20.0)
    with pytest.raises(ValueError, match="image-less section"):
        spot_patches(sdata)
    with pytest.raises(ValueError, match="image-less section"):
        spot_patches(sdata.tables["table"])


def test_image_key_choice():
    sdata = make_sdata(gradient_image(), [[100.0, 60.0]], 20.0)
    sdata.images["other"] = _image_model(gradient_image())
    with pytest.raises(ValueError, match=r"several images \['he', 'other'\] and none is recorded.*pass `image_key=`"):
        spot_patches(sdata)
    with pytest.raises(KeyError, match=r"No image 'nope'; the images are \['he', 'other'\]"):
        spot_patches(sdata, image_key="nope")
    assert spot_patches(sdata, image_key="other", size=4).shape == (1, 4, 4, 3)


def test_spots_outside_image():
    xy = [[100.0, 60.0], [-30.0, 60.0], [100.0, 131.0], [209.0, 60.0]]  # radius 10: 2nd and 3rd are out
    sdata = make_sdata(gradient_image(), xy, 20.0)
    with pytest.raises(ValueError, match=r"2 of 4 spots lie more than half a spot outside.*s1, s2"):
        spot_patches(sdata)


def test_missing_diameter_and_table():
    sdata = make_sdata(gradient_image(), [[100.0, 60.0]], 20.0)
    del sdata.tables["table"].uns["spatial"]
    with pytest.raises(KeyError, match="diameter_px="):
        spot_patches(sdata)
    assert spot_patches(sdata, diameter_px=20.0, size=20).shape == (1, 20, 20, 3)
    with pytest.raises(KeyError, match="no table 'nope'"):
        spot_patches(sdata, table_key="nope")


# ------------------------------------------------------------------------------------------------ real data
def _stats(patches: np.ndarray) -> dict[str, float]:
    p = patches.astype(float)
    return {"mean": p.mean(), "std": p.std(), "sat": (p.max(-1) - p.min(-1)).mean()}


def _patch_at(sdata, section: str, xy) -> np.ndarray:
    """Patches at arbitrary global positions, with the section's spot diameter and image."""
    table = sdata.tables["table"]
    probe = make_sdata(None, xy, table.uns["spatial"][section]["scalefactors"]["spot_diameter_fullres"])
    probe.images["he"] = sdata.images["he"]
    return spot_patches(probe)


def test_b4_patches_on_tissue(her2st_loader):
    sdata = her2st_loader("B4")
    reader = _PatchReader(sdata)
    assert reader.diameter_px == pytest.approx(144.9, abs=0.5)
    patches = reader.read(np.arange(0, len(reader), 3))
    bg = _stats(_patch_at(sdata, "B4", [[1984.0, 1488.0]]))  # top-left: glass, far from the tissue
    assert bg["mean"] > 200 and bg["std"] < 15 and bg["sat"] < 25
    means = patches.reshape(len(patches), -1).mean(axis=1)
    assert np.mean(means < bg["mean"] - 20) > 0.75  # README: 77-97 % of centres on darker tissue
    tissue = _stats(patches[np.argsort(means)[len(means) // 2]][None])
    assert tissue["mean"] < bg["mean"] - 30 and tissue["std"] > 25 and tissue["sat"] > 30


def test_a1_patches_on_tissue(her2st_loader):
    sdata = her2st_loader("A1")
    reader = _PatchReader(sdata)
    assert reader.diameter_px == pytest.approx(100 / (200 / (217.3125 * 2000 / 6954)), rel=1e-4)  # ≈ 31.25
    patches = reader.read()
    means = patches.reshape(len(patches), -1).mean(axis=1)
    bg = _stats(_patch_at(sdata, "A1", [[400.0, 300.0]]))  # masked (black) background
    assert bg["mean"] < 10
    assert np.mean(means > 60) > 0.95  # the exact 2000/6954 scale puts every spot on the tissue
    tissue = _stats(patches[np.argsort(means)[len(means) // 2]][None])
    assert 60 < tissue["mean"] < 220 and tissue["std"] > 25 and tissue["sat"] > 30
    # a scale 20 % off puts many spots on the black background
    shifted = _patch_at(sdata, "A1", sdata.tables["table"].obsm["spatial"] * 1.2)
    assert np.mean(shifted.reshape(len(shifted), -1).mean(axis=1) > 60) < 0.9


class _CountingImage:
    """A virtual ``(h, w, 3)`` uint8 image that makes its pixels on demand and records every read."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.reads: list[int] = []  # pixels per read

    def __getitem__(self, key):
        ys, xs, cs = key
        yy, xx = np.mgrid[ys, xs]
        self.reads.append(yy.size)
        img = np.stack([xx % 256, yy % 256, np.full_like(xx, 7)], axis=-1).astype(np.uint8)
        return img[..., cs]


def test_large_image_is_read_lazily_window_by_window():
    """A 6000 x 6000 px image (108 MB, above the in-memory limit) is never decoded whole: only chunks under spots."""
    import dask.array as da

    src = _CountingImage(6000, 6000)
    assert np.prod(src.shape) > _patches._IN_MEMORY_MAX_BYTES
    xy = np.array([[1000.0, 1000.0], [1030.0, 1010.0], [4000.5, 2500.25], [5990.0, 10.0]])
    sdata = make_sdata(da.from_array(src, chunks=(512, 512, 3), asarray=False), xy, 40.0)  # a lazy pyramid
    src.reads.clear()
    reader = _PatchReader(sdata, size=40)
    assert reader._cache is None  # no in-memory copy of level 0
    patches = reader.read()
    assert patches.shape == (4, 40, 40, 3)
    # the crop is exact: R = x, G = y of the pixel it came from
    assert patches[0, 20, 20, 0] == (1000 % 256) and patches[0, 20, 20, 1] == (1000 % 256)
    read_px = sum(src.reads)
    assert 0 < read_px <= 8 * 512 * 512  # a few chunks around the spots, not 36 M px
    assert max(src.reads) <= 512 * 512


def test_recorded_image_key_is_the_default():
    """With several images, the one the reader recorded in uns metadata is used (no `image_key=` needed)."""
    img = gradient_image()
    sdata = make_sdata(img, [[50.0, 40.0]], 10.0)
    sdata.images["he_small"] = _image_model(img[::2, ::2].copy())
    with pytest.raises(ValueError, match="several images"):
        _PatchReader(sdata, size=8)
    sdata.tables["table"].uns["spatial"]["lib"]["metadata"]["image_key"] = "he"
    assert _PatchReader(sdata, size=8).image_key == "he"
    assert _PatchReader(sdata, size=8, image_key="he_small").image_key == "he_small"
