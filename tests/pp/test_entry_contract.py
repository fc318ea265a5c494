"""The input contract at the entry of the public ``pp`` functions (#23): tables, coordinates, written keys.

The polygon checks of ``pp.annotate_spots`` (invalid or overlapping geometries) are tested with the annotation
readers; here only what every function checks before work, one row per case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spacrd_sc as sc_crd

pp = sc_crd.pp


def grid(n_x: int = 6, n_y: int = 5) -> ad.AnnData:
    """A 6 x 5 grid of spots 10 units apart, with the pathologist's labels in ``obs["pathology"]``."""
    xs, ys = np.meshgrid(np.arange(n_x), np.arange(n_y))
    a = ad.AnnData(np.zeros((n_x * n_y, 2), np.float32), obs=pd.DataFrame(index=[f"s{i}" for i in range(n_x * n_y)]))
    a.obsm["spatial"] = np.c_[xs.ravel(), ys.ravel()].astype(float) * 10
    a.obs["pathology"] = pd.Categorical(np.where(xs.ravel() < 3, "invasive cancer", "stroma"))
    return a


def polygons() -> Any:
    import geopandas as gpd
    from shapely.geometry import box

    return gpd.GeoDataFrame({"class": ["Tumor"]}, geometry=[box(-1, -1, 21, 21)])


def _nan_xy(a: ad.AnnData) -> ad.AnnData:
    xy = a.obsm["spatial"].copy()
    xy[4] = np.nan
    a.obsm["spatial"] = xy
    return a


def _no_xy(a: ad.AnnData) -> ad.AnnData:
    del a.obsm["spatial"]
    return a


REFUSED = r"already exists? and spacrd_sc did not write"

RAISED: list[Any] = [
    pytest.param(
        lambda: pp.annotate_spots(grid(), polygons(), key_added="pathology"),
        ValueError,
        r"adata.obs\['pathology'\] " + REFUSED + r".*overwrite=True",
        id="annotate-key-added-user-column",
    ),
    pytest.param(
        lambda: pp.annotate_spots(grid(), polygons(), key_added="pathology", overwrite=1),
        TypeError,
        r"overwrite must be True or False",
        id="annotate-overwrite-not-bool",
    ),
    pytest.param(
        lambda: pp.annotate_spots(grid()[:0].copy(), polygons()),
        ValueError,
        r"0 spots; annotate_spots",
        id="annotate-empty",
    ),
    pytest.param(
        lambda: pp.annotate_spots(_nan_xy(grid()), polygons()),
        ValueError,
        r"NaN/inf coordinates for 1 spots \(e.g. 's4'\)",
        id="annotate-nan-coordinates",
    ),
    pytest.param(
        lambda: pp.annotate_spots(_no_xy(grid()), polygons()),
        KeyError,
        r"obsm\['spatial'\] \(spot centres\) is missing",
        id="annotate-no-coordinates",
    ),
    pytest.param(lambda: pp.spot_patches(grid()[:0].copy()), ValueError, r"0 spots; spot_patches", id="patches-empty"),
    pytest.param(lambda: pp.spot_patches(_nan_xy(grid())), ValueError, r"NaN/inf coordinates", id="patches-nan-xy"),
    pytest.param(lambda: pp.spot_patches(grid()), ValueError, r"no H&E image", id="patches-no-image"),
    pytest.param(lambda: pp.spot_patches(grid(), size=0), ValueError, r"size` must be an integer", id="patches-size-0"),
]


@pytest.mark.parametrize(("call", "exc", "match"), RAISED)
def test_bad_input_is_refused(call: Callable[[], Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_user_column_kept_unless_overwrite(caplog: pytest.LogCaptureFixture) -> None:
    a = grid()
    before = a.obs["pathology"].copy()
    with pytest.raises(ValueError, match="pathology"):
        pp.annotate_spots(a, polygons(), key_added="pathology")
    pd.testing.assert_series_equal(a.obs["pathology"], before)
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        pp.annotate_spots(a, polygons(), key_added="pathology", overwrite=True)
    assert "Overwriting adata.obs['pathology'] (not written by spacrd_sc; overwrite=True)" in caplog.text
    assert set(a.obs["pathology"].cat.categories) == {"Tumor", "unannotated"}


def test_own_column_rewritten_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    a = grid()
    pp.annotate_spots(a, polygons())
    assert a.uns["spacrd_sc"]["written"] == {"obs": ["annotation"], "uns": ["annotation", "annotation_colors"]}
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        pp.annotate_spots(a, polygons(), outside="none")
    assert "Overwriting adata.obs['annotation']." in caplog.text
    assert (a.obs["annotation"] == "Tumor").sum() == 9
