"""Pyramidal tiled TIFF / OME-TIFF H&E: stored levels kept lazily, the patch reader's level choice, bad pyramids.

Real files written by tifffile in the test (tiled, JPEG / deflate / LZW), read by the public readers.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import xarray as xr
from _helpers.images import halve, smooth_rgb, write_pyramid

from spacrd_sc import _images, _patch_reader
from spacrd_sc._images import _TiffLevel
from spacrd_sc._patch_reader import _choose_level, _PatchReader
from spacrd_sc.io import legacy_st
from spacrd_sc.io._checks import _check_image
from spacrd_sc.pp import spot_patches

SIDE = 2048  # level 0: 2048 px; levels 1024 and 512 px; 256 px tiles
PX_PER_UNIT = 200.0  # legacy ST: 200 µm spacing = 200 px → 1 µm/px, a 100 µm spot = 100 px


def _section(n: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts and a spot file: an n x n grid of spots 200 px apart inside the 2048 px image."""
    xs, ys = np.meshgrid(np.arange(n), np.arange(n))
    x, y = xs.ravel(), ys.ravel()
    ids = [f"{a}x{b}" for a, b in zip(x, y, strict=True)]
    spots = pd.DataFrame(
        {"x": x, "y": y, "pixel_x": 250.0 + x * PX_PER_UNIT + 0.3, "pixel_y": 230.0 + y * PX_PER_UNIT + 0.7}
    )
    counts = pd.DataFrame(np.random.default_rng(0).poisson(3.0, (len(ids), 4)), index=ids, columns=list("ABCD"))
    return counts, spots


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return smooth_rgb(SIDE, SIDE, seed=3)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory, image) -> Path:
    return write_pyramid(tmp_path_factory.mktemp("pyr") / "he.ome.tif", image)


# ---------------------------------------------------------------------------------------------- level choice
@pytest.mark.parametrize(
    ("side", "size", "expected"),
    [
        (448.0, 224, 1),  # exactly 224 px on level 1 (downsample 2)
        (446.0, 224, 1),  # 223 px: within the 1 % tolerance
        (440.0, 224, 0),  # 220 px on level 1 would be upsampled: level 0
        (3000.0, 224, 3),  # 375 px on level 3; 187 px on level 4 is too few
        (100.0, 224, 0),  # even level 0 is too coarse: level 0 (upsampled)
        (1e6, 224, 4),  # the coarsest level
    ],
)
def test_choose_level(side, size, expected):
    assert _choose_level([1.0, 2.0, 4.0, 8.0, 16.0], side, size) == expected


def test_choose_level_odd_sizes():
    """Rounded levels of odd-sized images (downsample 2.0004, 4.001) are still chosen."""
    assert _choose_level([1.0, 2.0004, 4.001], 448.0, 224) == 1
    assert _choose_level([1.0, 2.0004, 4.001], 896.0, 224) == 2


# ---------------------------------------------------------------------------------------------- reading
def test_stored_levels_become_the_element_levels_lazily(pyramid, monkeypatch):
    """legacy_st(image=<OME-TIFF>) keeps the 3 stored levels as scale0..2, as dask arrays over the tiles."""
    reads: list[tuple[int, int]] = []
    original = _TiffLevel.__getitem__

    def counting(self, key):
        out = original(self, key)
        if out.size:  # dask probes each array with an empty slice for its dtype
            reads.append((self.level, out.size // 3))
        return out

    monkeypatch.setattr(_TiffLevel, "__getitem__", counting)
    counts, spots = _section()
    sdata = legacy_st(counts, spots, image=pyramid, pixel_size_um=1.0)
    element = sdata.images["he"]
    assert isinstance(element, xr.DataTree)
    assert list(element.children) == ["scale0", "scale1", "scale2"]
    shapes = [element[f"scale{i}"]["image"].shape for i in range(3)]
    assert shapes == [(3, 2048, 2048), (3, 1024, 1024), (3, 512, 512)]
    assert all(hasattr(element[f"scale{i}"]["image"].data, "dask") for i in range(3))
    # the hires copy (2000 px) was cut from level 0; nothing else was decoded
    assert {lv for lv, _ in reads} <= {0}
    reads.clear()
    monkeypatch.setattr(_patch_reader, "_IN_MEMORY_MAX_BYTES", 0)  # window by window, not the whole level
    reader = _PatchReader(sdata, size=24)
    assert reader.level == 2  # 100 px spots: 25 px on level 2 ≥ 24
    assert reader.read([0, 9]).shape == (2, 24, 24, 3)
    assert reads and {lv for lv, _ in reads} == {2}  # only tiles of the chosen level
    assert sum(px for _, px in reads) <= 2 * 4 * 256 * 256  # a few tiles under two windows
    assert len(pickle.dumps(reader)) < 200_000  # workers get the path, not pixels


@pytest.mark.parametrize(("size", "level"), [(24, 2), (48, 1), (64, 0)])
def test_patches_from_a_level_match_level0_downsampled(pyramid, image, size, level):
    """A patch cut from level 1 or 2 equals (within JPEG + resampling tolerance) the one cut from level 0."""
    counts, spots = _section()
    from_pyramid = legacy_st(counts, spots, image=pyramid, pixel_size_um=1.0)
    in_memory = legacy_st(counts, spots, image=image, pixel_size_um=1.0)  # derived levels: level 0 is read
    reader = _PatchReader(from_pyramid, size=size)
    assert reader.level == level and _PatchReader(in_memory, size=size).level == 0
    a = reader.read().astype(float)
    b = spot_patches(in_memory, size=size).astype(float)
    assert np.abs(a - b).mean() < 2.0
    assert np.abs(a - b).max() < 40
    # the same reader honours a field given per call (4x the spot: level 2 for every size here)
    wide = reader.read([0], side_px=4 * reader.side_px)
    ref = _PatchReader(in_memory, size=size, context=4.0).read([0])
    assert np.abs(wide.astype(float) - ref).mean() < 2.0


@pytest.mark.parametrize("compression", ["zlib", "lzw"])
def test_lossless_tiles_give_exact_level0_patches(tmp_path, image, compression):
    """Deflate / LZW tiles: level-0 patches equal those of the in-memory image exactly."""
    path = write_pyramid(tmp_path / "he.tif", image, n_levels=2, compression=compression)
    counts, spots = _section(3)
    a = spot_patches(legacy_st(counts, spots, image=path, pixel_size_um=1.0), size=112)
    b = spot_patches(legacy_st(counts, spots, image=image, pixel_size_um=1.0), size=112)
    np.testing.assert_array_equal(a, b)


def test_sparse_pyramid_gets_coarse_levels_added(tmp_path):
    """Two stored levels (2560, 1280 px): a derived 640 px level is added for overviews; the reader skips it."""
    img = smooth_rgb(2560, 2560, seed=1)
    path = write_pyramid(tmp_path / "he.tif", img, n_levels=2, compression="zlib")
    counts, spots = _section(3)
    sdata = legacy_st(counts, spots, image=path, pixel_size_um=1.0)
    assert [sdata.images["he"][k]["image"].shape[1] for k in sdata.images["he"].children] == [2560, 1280, 640]
    reader = _PatchReader(sdata, size=8)  # 100 px → 12.5 px on level 3 would do, but it is not stored
    assert len(reader.levels) == 2 and reader.level == 1
    coarse = sdata.images["he"]["scale2"]["image"].data[:, :4, :4].compute()
    np.testing.assert_allclose(coarse[:, 0, 0], halve(halve(img))[0, 0], atol=2)


def test_upsampling_is_logged(pyramid, caplog):
    counts, spots = _section(2)
    sdata = legacy_st(counts, spots, image=pyramid, pixel_size_um=1.0)
    with caplog.at_level("WARNING", logger="spacrd_sc"):
        _PatchReader(sdata, size=224)
    assert "upsampled 2.2x to 224 px" in caplog.text


# ---------------------------------------------------------------------------------------------- bad pyramids
def _write_levels(path: Path, levels: list[np.ndarray]) -> Path:
    opts = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(levels[0], subifds=len(levels) - 1, metadata={"axes": "YXS"}, **opts)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, **opts)
    return path


def test_inconsistent_pyramid_is_refused_before_reading(tmp_path):
    """A level shrunk 2x in y but 4x in x is no downsampled copy of level 0: named error, file and sizes."""
    img = smooth_rgb(1024, 1024)
    bad = _write_levels(tmp_path / "aniso.tif", [img, img[::2, ::4].copy()])
    counts, spots = _section(2)
    msg = r"pyramid level 1 \(256 x 512 px\) is not a downsampled copy of level 0 \(1024 x 1024 px\)"
    with pytest.raises(ValueError, match=msg):
        legacy_st(counts, spots, image=bad, pixel_size_um=1.0)
    with pytest.raises(ValueError, match="aniso.tif"):
        _check_image(bad, "Full-resolution image")


def test_pyramid_level_larger_than_the_previous_is_refused(tmp_path):
    img = smooth_rgb(1024, 1024)
    with tifffile.TiffWriter(tmp_path / "grow.tif", ome=True) as tw:
        opts = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
        tw.write(img[::2, ::2].copy(), subifds=1, metadata={"axes": "YXS"}, **opts)
        tw.write(img, subfiletype=1, **opts)
    with pytest.raises(ValueError, match="not smaller than level 0"):
        _images._read_he_lazy(tmp_path / "grow.tif")


def test_not_a_tiff_is_a_named_error(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="is not a readable TIFF"):
        _images._read_he_lazy(tmp_path / "x.tif")


# ---------------------------------------------------------------------------------------------- readers
def test_visium_fullres_pyramid(tmp_path):
    """Visium ``fullres_image_file=``: the pyramid's levels are the full image's levels."""
    from _helpers.tenx.visium import write_visium

    from spacrd_sc.io import visium

    fx = write_visium(tmp_path / "v", source="synthetic", fullres=True)
    full = tifffile.imread(tmp_path / "v" / "tissue_image.tif")
    write_pyramid(tmp_path / "v" / "tissue_image.tif", full, n_levels=3, compression="zlib")
    sdata = visium(tmp_path / "v", fullres_image_file="tissue_image.tif")
    key = next(k for k in sdata.images if k.endswith("_full_image"))
    shapes = [sdata.images[key][k]["image"].shape[1:] for k in sdata.images[key].children]
    assert shapes == [(1200, 1200), (600, 600), (300, 300)]
    reader = _PatchReader(sdata, size=8)  # 22 px spots: 11 px on level 1
    assert reader.level == 1
    del fx
    # a pyramid whose level 1 is no downsampled copy of level 0: refused before spatialdata-io reads anything
    _write_levels(tmp_path / "v" / "tissue_image.tif", [full, full[::2, ::3].copy()])
    with pytest.raises(ValueError, match=r"Full-resolution image .*tissue_image.tif.*pyramid level 1 \(400 x 600"):
        visium(tmp_path / "v", fullres_image_file="tissue_image.tif")


# ---------------------------------------------------------------------------------------------- extract_uni
def test_extract_uni_workers_read_the_pyramid_in_parallel(pyramid, monkeypatch, tmp_path):
    """num_workers=2 gives the same features as reading in the main process (each worker opens the file)."""
    import torch
    from safetensors.torch import save_file

    from spacrd_sc.model._backbones import build_backbone
    from spacrd_sc.tl import extract_uni

    torch.manual_seed(0)
    model, _ = build_backbone("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    monkeypatch.setattr(_patch_reader, "_IN_MEMORY_MAX_BYTES", 0)  # windows read from the file in the workers
    counts, spots = _section(5)
    sdata = legacy_st(counts, spots, image=pyramid, pixel_size_um=1.0)
    kw = {"backbone": "resnet18", "weights": tmp_path / "w.safetensors", "size": 48, "progress_bar": False}
    a = extract_uni(sdata, batch_size=8, num_workers=0, copy=True, **kw).obsm["X_uni"]
    b = extract_uni(sdata, batch_size=8, num_workers=2, copy=True, **kw).obsm["X_uni"]
    assert a.shape == (25, 512) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
