"""Bad inputs of every public reader (``sc_crd.io.*``) and the named error or warning each must get (issue #23).

One table per reader: each row is a bad input (written to ``tmp_path`` as a real file: 10x HDF5 via h5py,
JSON, Parquet, TSV, GeoJSON) and the error type + message regex it must get, or ``WARNS`` + the regex of the
logged warning (the read then succeeds). Every error must come from :mod:`spacrd_sc` with a message naming the
file or the argument, never from deep inside h5py, pandas, pyarrow, scipy or spatialdata-io.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from _helpers import tenx as fx
from conftest import synthetic_image, synthetic_tables

import spacrd_sc as sc_crd

#: Sentinel: the call succeeds and logs a warning matching the regex.
WARNS = "warns"
NAN, INF = float("nan"), float("inf")


def _expect(call: Callable[[], Any], error: type[BaseException] | str, match: str, caplog) -> Any:
    """Run ``call``; check the named error (raised in spacrd_sc) or the logged warning."""
    if error == WARNS:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
            out = call()
        assert any(re.search(match, r.getMessage()) for r in caplog.records), (
            f"no warning matching {match!r} in {[r.getMessage() for r in caplog.records]}"
        )
        return out
    with pytest.raises(error, match=match) as info:
        call()
    origin = traceback.extract_tb(info.value.__traceback__)[-1].filename
    assert "spacrd_sc" in origin, f"{error.__name__} raised from {origin}, not by spacrd_sc"
    return None


# --------------------------------------------------------------------------------------------------------
# base folders (written once) and small editors
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    return {
        "visium": fx.write_visium(root / "visium", source="synthetic", n_genes=12).path,
        "hd": fx.write_visium_hd(root / "hd", n_rows=40, n_cols=40, n_genes=12).path,
        "xenium": fx.write_xenium(root / "xenium", n_cells=150, n_genes=12, with_he=False, with_transcripts=True).path,
    }


def _copy(bases: dict[str, Path], which: str, tmp_path: Path) -> Path:
    dst = tmp_path / which
    shutil.copytree(bases[which], dst)
    return dst


def _edit_json(file: Path, **changes: Any) -> None:
    doc = json.loads(file.read_text())
    for k, v in changes.items():
        if v is _DROP:
            doc.pop(k)
        else:
            doc[k] = v
    file.write_text(json.dumps(doc))  # NaN / Infinity are written as JSON's non-standard literals, as Python reads


_DROP = object()


def _text(file: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content)


def _h5_without_matrix(file: Path) -> None:
    file.unlink()
    with h5py.File(file, "w") as f:
        f.create_group("something_else")


# --------------------------------------------------------------------------------------------------------
# legacy_st
# --------------------------------------------------------------------------------------------------------
def _legacy(tmp_path: Path, *, counts=None, spots=None, image=None, **kwargs) -> Any:
    c, s = synthetic_tables()
    return sc_crd.io.legacy_st(c if counts is None else counts, s if spots is None else spots, image, **kwargs)


def _spots_with(**cells: Any) -> pd.DataFrame:
    """The synthetic spot file with ``{column: value}`` set on the row of the counted spot '3x2'."""
    _, s = synthetic_tables()
    s = s.astype({"pixel_x": object, "pixel_y": object}) if any(isinstance(v, str) for v in cells.values()) else s
    row = s.index[(s["x"] == 3) & (s["y"] == 2)][0]
    for col, v in cells.items():
        if col in ("x", "y"):
            s[col] = s[col].astype(float)
        s.loc[row, col] = v
    return s


def _counts_with(value: Any) -> pd.DataFrame:
    c, _ = synthetic_tables()
    c = c.astype(float)
    c.iloc[2, 1] = value
    return c


def _file(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    _text(p, content)
    return p


POS = "must be a positive finite number"
LEGACY: list = [
    # sizes: NaN, infinite, zero, negative, wrong type
    (
        "spot_diameter_um=nan",
        lambda t: _legacy(t, spot_diameter_um=NAN),
        ValueError,
        f"spot_diameter_um {POS}",
    ),
    (
        "spot_diameter_um=inf",
        lambda t: _legacy(t, spot_diameter_um=INF),
        ValueError,
        f"spot_diameter_um {POS}",
    ),
    ("spot_diameter_um=0", lambda t: _legacy(t, spot_diameter_um=0), ValueError, f"spot_diameter_um {POS}"),
    ("spot_diameter_um<0", lambda t: _legacy(t, spot_diameter_um=-100), ValueError, f"spot_diameter_um {POS}"),
    ("spot_diameter_um=str", lambda t: _legacy(t, spot_diameter_um="100"), TypeError, "spot_diameter_um must be a"),
    ("spot_diameter_um=bool", lambda t: _legacy(t, spot_diameter_um=True), TypeError, "spot_diameter_um must be a"),
    ("spot_spacing_um=inf", lambda t: _legacy(t, spot_spacing_um=INF), ValueError, f"spot_spacing_um {POS}"),
    ("spot_spacing_um=0", lambda t: _legacy(t, spot_spacing_um=0), ValueError, f"spot_spacing_um {POS}"),
    ("pixel_size_um=nan", lambda t: _legacy(t, pixel_size_um=NAN), ValueError, f"pixel_size_um {POS}"),
    ("pixel_size_um=inf", lambda t: _legacy(t, pixel_size_um=INF), ValueError, f"pixel_size_um {POS}"),
    ("pixel_size_um=0", lambda t: _legacy(t, pixel_size_um=0.0), ValueError, f"pixel_size_um {POS}"),
    ("image_scale=nan", lambda t: _legacy(t, image_scale=NAN), ValueError, f"image_scale {POS}"),
    ("image_scale<0", lambda t: _legacy(t, image_scale=-1.0), ValueError, f"image_scale {POS}"),
    ("image_scale=None", lambda t: _legacy(t, image_scale=None), TypeError, "image_scale must be a"),
    # paths
    (
        "counts missing",
        lambda t: _legacy(t, counts=t / "nope.tsv.gz"),
        FileNotFoundError,
        "Count matrix not found.*nope",
    ),
    ("counts is a folder", lambda t: _legacy(t, counts=t), FileNotFoundError, "it is a folder, not a file"),
    ("counts is an int", lambda t: _legacy(t, counts=3), TypeError, "Count matrix must be a path"),
    ("spots missing", lambda t: _legacy(t, spots=t / "nope_sel.tsv"), FileNotFoundError, "Spot file not found"),
    ("image missing", lambda t: _legacy(t, image=t / "nope.jpg"), FileNotFoundError, "Image file not found.*nope.jpg"),
    # unreadable files
    (
        "counts binary",
        lambda t: _legacy(t, counts=_file(t, "c.tsv", b"\x00\x01\xff\xfe binary")),
        ValueError,
        r"Count matrix .*c\.tsv' is not a readable tab-separated table",
    ),
    (
        "counts empty",
        lambda t: _legacy(t, counts=_file(t, "c.tsv", "")),
        ValueError,
        "is not a readable tab-separated table",
    ),
    (
        "counts corrupt gzip",
        lambda t: _legacy(t, counts=_file(t, "c.tsv.gz", b"\x1f\x8bnot really gzip")),
        ValueError,
        r"c\.tsv\.gz' is not a readable tab-separated table",
    ),
    (
        "spot file empty",
        lambda t: _legacy(t, spots=_file(t, "s.tsv", "")),
        ValueError,
        r"Spot file .*s\.tsv' is not a readable",
    ),
    (
        "image is text (.png)",
        lambda t: _legacy(t, image=_file(t, "he.png", "not an image")),
        ValueError,
        r"he\.png' is not a readable image",
    ),
    (
        "image is text (.tif)",
        lambda t: _legacy(t, image=_file(t, "he.tif", "not an image")),
        ValueError,
        r"he\.tif' is not a readable TIFF",
    ),
    # values
    ("counts NaN", lambda t: _legacy(t, counts=_counts_with(np.nan)), ValueError, "NaN, infinite or negative values"),
    ("counts inf", lambda t: _legacy(t, counts=_counts_with(np.inf)), ValueError, "NaN, infinite or negative values"),
    ("counts negative", lambda t: _legacy(t, counts=_counts_with(-2)), ValueError, "NaN, infinite or negative values"),
    ("counts text column", lambda t: _legacy(t, counts=_counts_with("x")), ValueError, "non-numeric columns"),
    (
        "spot pixel_x NaN",
        lambda t: _legacy(t, spots=_spots_with(pixel_x=np.nan)),
        ValueError,
        r"1 of 29 counted spots' pixel_x/pixel_y are NaN or infinite \(e\.g\. 3x2\)",
    ),
    (
        "spot pixel_y inf",
        lambda t: _legacy(t, spots=_spots_with(pixel_y=np.inf)),
        ValueError,
        "pixel_x/pixel_y are NaN or infinite",
    ),
    (
        "spot pixel_x text",
        lambda t: _legacy(t, spots=_spots_with(pixel_x="12,5")),
        ValueError,
        "'pixel_x' must hold pixel coordinates",
    ),
    ("spot array x NaN", lambda t: _legacy(t, spots=_spots_with(x=np.nan)), ValueError, "'x' has 1 missing array"),
    (
        "spot file lacks pixel_y",
        lambda t: _legacy(t, spots=synthetic_tables()[1].drop(columns="pixel_y")),
        ValueError,
        r"lacks the columns \['pixel_y'\]",
    ),
    (
        "single spot, no pixel size",
        lambda t: _legacy(t, counts=synthetic_tables()[0].iloc[:1], spots=synthetic_tables()[1].iloc[1:2]),
        ValueError,
        "Pass `pixel_size_um=`",
    ),
    (
        "spots outside the image",
        lambda t: _legacy(t, image=synthetic_image(40, 40)),
        ValueError,
        "spot centres lie outside the 40 x 40 px image",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in LEGACY])
def test_legacy_st(call, error, match, tmp_path, caplog) -> None:
    _expect(lambda: call(tmp_path), error, match, caplog)


def test_legacy_st_single_spot_reads(tmp_path) -> None:
    """A 1-spot section is valid data: it reads (with a pixel size) and keeps its one spot where it was."""
    c, s = synthetic_tables()
    sd = sc_crd.io.legacy_st(c.iloc[:1], s, pixel_size_um=10.0)
    t = sd.tables["table"]
    assert t.n_obs == 1 and np.isfinite(t.obsm["spatial"]).all()
    row = s[(s["x"].astype(str) + "x" + s["y"].astype(str)) == c.index[0]]
    np.testing.assert_allclose(t.obsm["spatial"][0], row[["pixel_x", "pixel_y"]].to_numpy(float)[0])


# --------------------------------------------------------------------------------------------------------
# visium
# --------------------------------------------------------------------------------------------------------
SF = "spatial/scalefactors_json.json"
POSITIONS = "spatial/tissue_positions_list.csv"
H5 = "filtered_feature_bc_matrix.h5"


def _nan_position(path: Path, *, drop: bool = False) -> None:
    """Give the first barcode of the count matrix a NaN pixel column (or drop its row)."""
    with h5py.File(path / H5, "r") as f:
        barcode = f["matrix/barcodes"][0].decode()
    file = path / POSITIONS
    pos = pd.read_csv(file, header=None, index_col=0)
    if drop:
        pos = pos.drop(index=barcode)
    else:
        pos[5] = pos[5].astype(float)
        pos.loc[barcode, 5] = np.nan
    pos.to_csv(file, header=False)


def _visium_edit(edit: Callable[[Path], None], **kwargs) -> Callable[[dict, Path], Any]:
    def call(bases: dict, tmp_path: Path) -> Any:
        path = _copy(bases, "visium", tmp_path)
        edit(path)
        return sc_crd.io.visium(path, **kwargs)

    return call


def _visium_path(path: Any) -> Callable[[dict, Path], Any]:
    return lambda bases, tmp_path: sc_crd.io.visium(path(bases, tmp_path) if callable(path) else path)


VISIUM: list = [
    ("folder missing", _visium_path(lambda b, t: t / "nowhere"), FileNotFoundError, "Visium folder not found.*nowhere"),
    (
        "path is a file",
        _visium_path(lambda b, t: b["visium"] / H5),
        FileNotFoundError,
        r"Visium folder not found: .*\.h5' \(it is a file, not a folder\)",
    ),
    ("path is an int", _visium_path(123), TypeError, "Visium folder must be a path"),
    ("path is None", _visium_path(None), TypeError, "Visium folder must be a path"),
    ("count matrix missing", _visium_edit(lambda p: (p / H5).unlink()), FileNotFoundError, "Count matrix not found"),
    (
        "count matrix is text",
        _visium_edit(lambda p: _text(p / H5, "not hdf5")),
        ValueError,
        r"Count matrix .*filtered_feature_bc_matrix\.h5' is not an HDF5 file",
    ),
    ("count matrix empty", _visium_edit(lambda p: _text(p / H5, b"")), ValueError, "is not an HDF5 file"),
    (
        "count matrix HDF5 without a matrix",
        _visium_edit(lambda p: _h5_without_matrix(p / H5)),
        ValueError,
        "is HDF5 but holds no 10x feature-barcode matrix",
    ),
    ("scale factors missing", _visium_edit(lambda p: (p / SF).unlink()), FileNotFoundError, "Scale factors file not"),
    (
        "scale factors broken JSON",
        _visium_edit(lambda p: _text(p / SF, "{broken")),
        ValueError,
        r"Scale factors file .*scalefactors_json\.json' is not valid JSON",
    ),
    ("scale factors a list", _visium_edit(lambda p: _text(p / SF, "[1, 2]")), ValueError, "must hold a JSON object"),
    *[
        (
            f"{key}={value!r}",
            _visium_edit(lambda p, k=key, v=value: _edit_json(p / SF, **{k: v})),
            ValueError,
            rf"{key} in .*scalefactors_json\.json' must be a positive",
        )
        for key, value in [
            ("spot_diameter_fullres", NAN),
            ("spot_diameter_fullres", INF),
            ("spot_diameter_fullres", 0),
            ("spot_diameter_fullres", -5),
            ("spot_diameter_fullres", "abc"),
            ("spot_diameter_fullres", None),
            ("tissue_hires_scalef", 0),
            ("tissue_lowres_scalef", NAN),
        ]
    ],
    (
        "spot_diameter_fullres absent",
        _visium_edit(lambda p: _edit_json(p / SF, spot_diameter_fullres=_DROP)),
        ValueError,
        r"lacks the keys \['spot_diameter_fullres'\]",
    ),
    ("positions missing", _visium_edit(lambda p: (p / POSITIONS).unlink()), FileNotFoundError, "positions file not"),
    (
        "positions unreadable",
        _visium_edit(lambda p: _text(p / POSITIONS, "garbage\nmore,garbage\n")),
        ValueError,
        r"tissue_positions_list\.csv' is not a readable CSV",
    ),
    (
        "positions with 4 columns",
        _visium_edit(lambda p: _text(p / POSITIONS, "AAA-1,1,0,0\nBBB-1,1,0,2\n")),
        ValueError,
        "has 4 columns; expected 6",
    ),
    (
        "positions NaN pixel centre",
        _visium_edit(_nan_position),
        ValueError,
        r"1 of \d+ spot pixel centres in .*tissue_positions_list\.csv' are NaN",
    ),
    (
        "positions lack a barcode",
        _visium_edit(lambda p: _nan_position(p, drop=True)),
        ValueError,
        r"1 barcodes of the count matrix have no row in .*tissue_positions_list\.csv",
    ),
    (
        "fullres image missing",
        _visium_edit(lambda p: None, fullres_image_file="missing.tif"),
        FileNotFoundError,
        "Full-resolution image not found.*missing.tif",
    ),
    ("dataset_id given", _visium_edit(lambda p: None, dataset_id="x"), TypeError, "library_id"),
    (
        "fullres image is text (.tif)",
        _visium_edit(lambda p: _text(p / "full.tif", "x"), fullres_image_file="full.tif"),
        ValueError,
        r"Full-resolution image .*full\.tif' is not a readable TIFF",
    ),
    (
        "hires image is text",
        _visium_edit(lambda p: _text(p / "spatial/tissue_hires_image.png", "x")),
        ValueError,
        r"tissue_hires_image\.png' is not a readable image",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in VISIUM])
def test_visium(call, error, match, bases, tmp_path, caplog) -> None:
    _expect(lambda: call(bases, tmp_path), error, match, caplog)


# --------------------------------------------------------------------------------------------------------
# visium_hd
# --------------------------------------------------------------------------------------------------------
BIN = "binned_outputs/square_002um"
BIN_SF = f"{BIN}/spatial/scalefactors_json.json"
BIN_POS = f"{BIN}/spatial/tissue_positions.parquet"
SLICE = "HD_test_feature_slice.h5"


def _hd_edit(edit: Callable[[Path], None], **kwargs) -> Callable[[dict, Path], Any]:
    def call(bases: dict, tmp_path: Path) -> Any:
        path = _copy(bases, "hd", tmp_path)
        edit(path)
        return sc_crd.io.visium_hd(path, **kwargs)

    return call


def _hd_bin_size(value: Any) -> Callable[[dict, Path], Any]:
    return lambda bases, tmp_path: sc_crd.io.visium_hd(bases["hd"], bin_size_um=value)


def _parquet_edit(file: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    fn(pd.read_parquet(file)).to_parquet(file, index=False)


def _one_bin(path: Path) -> None:
    """Keep one in-tissue bin in the count matrix."""
    import scanpy as sc

    a = sc.read_10x_h5(path / BIN / H5)
    fx.write_10x_h5(
        path / BIN / H5,
        a.X[:1].astype(np.int32),
        a.obs_names[:1].to_numpy(),
        pd.DataFrame({"id": a.var["gene_ids"], "name": a.var_names, "feature_type": a.var["feature_types"]}),
    )


def _slice_without_metadata(path: Path) -> None:
    (path / SLICE).unlink()
    with h5py.File(path / SLICE, "w") as f:
        f.attrs["other"] = 1


HD: list = [
    *[(f"bin_size_um={v!r}", _hd_bin_size(v), ValueError, f"bin_size_um {POS}") for v in (NAN, INF, 0, -55)],
    *[(f"bin_size_um={v!r}", _hd_bin_size(v), TypeError, "bin_size_um must be a") for v in ("55", None, True)],
    ("bin_size_um below the source bins", _hd_bin_size(1.0), ValueError, "smaller than the source bins"),
    ("source bins absent", _hd_edit(lambda p: None, bin_size=8), FileNotFoundError, "square_008um"),
    (
        "path is a file",
        lambda b, t: sc_crd.io.visium_hd(b["hd"] / SLICE),
        FileNotFoundError,
        "it is a file, not a folder",
    ),
    (
        "feature slice is text",
        _hd_edit(lambda p: _text(p / SLICE, "x")),
        ValueError,
        r"feature slice .*feature_slice\.h5' is not an HDF5 file",
    ),
    (
        "feature slice without metadata",
        _hd_edit(_slice_without_metadata),
        ValueError,
        "lacks a readable 'metadata_json'",
    ),
    (
        "bin matrix is text",
        _hd_edit(lambda p: _text(p / BIN / H5, "x")),
        ValueError,
        r"square_002um/filtered_feature_bc_matrix\.h5' is not an HDF5 file",
    ),
    ("bin matrix missing", _hd_edit(lambda p: (p / BIN / H5).unlink()), FileNotFoundError, "Count matrix not found"),
    (
        "bin scale factors broken JSON",
        _hd_edit(lambda p: _text(p / BIN_SF, "{")),
        ValueError,
        r"square_002um/spatial/scalefactors_json\.json' is not valid JSON",
    ),
    (
        "section scale factors broken JSON",
        _hd_edit(lambda p: _text(p / SF, "{")),
        ValueError,
        r"hd/spatial/scalefactors_json\.json' is not valid JSON",
    ),
    *[
        (
            f"bin {k}={v!r}",
            _hd_edit(lambda p, k=k, v=v: _edit_json(p / BIN_SF, **{k: v})),
            ValueError,
            rf"{k} in .*square_002um/spatial/scalefactors_json\.json' must be a positive",
        )
        for k, v in [
            ("spot_diameter_fullres", NAN),
            ("spot_diameter_fullres", 0),
            ("microns_per_pixel", NAN),
            ("microns_per_pixel", 0),
            ("tissue_hires_scalef", -1),
        ]
    ],
    (
        "bin_size_um of the scale factors disagrees",
        _hd_edit(lambda p: _edit_json(p / BIN_SF, bin_size_um=8.0)),
        ValueError,
        "gives bin_size_um=8 for the 2 µm bin folder",
    ),
    (
        "microns_per_pixel disagrees",
        _hd_edit(lambda p: _edit_json(p / BIN_SF, microns_per_pixel=0.5)),
        ValueError,
        "is inconsistent: bin_size_um / spot_diameter_fullres",
    ),
    (
        "positions not Parquet",
        _hd_edit(lambda p: _text(p / BIN_POS, "x")),
        ValueError,
        r"tissue_positions\.parquet' is not a readable Parquet file",
    ),
    (
        "positions lack a column",
        _hd_edit(lambda p: _parquet_edit(p / BIN_POS, lambda d: d.drop(columns="pxl_col_in_fullres"))),
        ValueError,
        r"lacks the columns \['pxl_col_in_fullres'\]",
    ),
    (
        "positions NaN pixel centres",
        _hd_edit(lambda p: _parquet_edit(p / BIN_POS, lambda d: d.assign(pxl_col_in_fullres=np.nan))),
        ValueError,
        r"bin pixel centres in .*tissue_positions\.parquet' are NaN or infinite",
    ),
    ("a single bin", _hd_edit(_one_bin), ValueError, "three bins not on one line are needed"),
    (
        "lowres image is text",
        _hd_edit(lambda p: _text(p / "spatial/tissue_lowres_image.png", "x")),
        ValueError,
        r"tissue_lowres_image\.png' is not a readable image",
    ),
    (
        "microscope image is text",
        _hd_edit(lambda p: (p / "microscope_image").mkdir() or _text(p / "microscope_image/tissue.tif", "x")),
        ValueError,
        r"microscope_image/tissue\.tif' is not a readable TIFF",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in HD])
def test_visium_hd(call, error, match, bases, tmp_path, caplog) -> None:
    _expect(lambda: call(bases, tmp_path), error, match, caplog)


# --------------------------------------------------------------------------------------------------------
# xenium
# --------------------------------------------------------------------------------------------------------
def _xe_edit(edit: Callable[[Path], None], **kwargs) -> Callable[[dict, Path], Any]:
    def call(bases: dict, tmp_path: Path) -> Any:
        path = _copy(bases, "xenium", tmp_path)
        edit(path)
        return sc_crd.io.xenium(path, **kwargs)

    return call


def _xe(**kwargs) -> Callable[[dict, Path], Any]:
    return lambda bases, tmp_path: sc_crd.io.xenium(bases["xenium"], **kwargs)


def _noop(path: Path) -> None:
    return None


XENIUM: list = [
    *[(f"bin_size_um={v!r}", _xe(bin_size_um=v), ValueError, f"bin_size_um {POS}") for v in (np.nan, np.inf, 0)],
    ("bin_size_um=str", _xe(bin_size_um="55"), TypeError, "bin_size_um must be a"),
    ("min_qv=nan", _xe(source="transcripts", min_qv=NAN), ValueError, "min_qv must be a finite number"),
    ("unknown source", _xe(source="genes"), ValueError, "source must be 'cells' or 'transcripts'"),
    ("folder missing", lambda b, t: sc_crd.io.xenium(t / "nope"), FileNotFoundError, "Xenium folder not found"),
    (
        "path is a file",
        lambda b, t: sc_crd.io.xenium(b["xenium"] / "cells.parquet"),
        FileNotFoundError,
        "it is a file, not a folder",
    ),
    *[
        (
            f"pixel_size={v!r}",
            _xe_edit(lambda p, v=v: _edit_json(p / "experiment.xenium", pixel_size=v)),
            ValueError,
            r"pixel_size in .*experiment\.xenium' must be a positive",
        )
        for v in (NAN, INF, 0, -1, "abc", None)
    ],
    (
        "pixel_size absent",
        _xe_edit(lambda p: _edit_json(p / "experiment.xenium", pixel_size=_DROP)),
        ValueError,
        "has no 'pixel_size'",
    ),
    (
        "experiment.xenium broken JSON",
        _xe_edit(lambda p: _text(p / "experiment.xenium", "{")),
        ValueError,
        r"experiment\.xenium' is not valid JSON",
    ),
    (
        "cell matrix is text",
        _xe_edit(lambda p: _text(p / "cell_feature_matrix.h5", "x")),
        ValueError,
        r"cell_feature_matrix\.h5' is not an HDF5 file",
    ),
    (
        "cell matrix missing",
        _xe_edit(lambda p: (p / "cell_feature_matrix.h5").unlink()),
        FileNotFoundError,
        "Cell count matrix not found",
    ),
    (
        "cells.parquet not Parquet",
        _xe_edit(lambda p: _text(p / "cells.parquet", "x")),
        ValueError,
        r"cells\.parquet' is not a readable Parquet file",
    ),
    (
        "cells.parquet lacks centroids",
        _xe_edit(lambda p: _parquet_edit(p / "cells.parquet", lambda d: d.drop(columns="y_centroid"))),
        ValueError,
        r"lacks the columns \['y_centroid'\]",
    ),
    (
        "cells.zarr.zip not a zip",
        _xe_edit(lambda p: _text(p / "cells.zarr.zip", "x")),
        ValueError,
        r"cells\.zarr\.zip' is not a zip archive",
    ),
    (
        "NaN cell centroids",
        _xe_edit(lambda p: _parquet_edit(p / "cells.parquet", lambda d: d.assign(x_centroid=np.nan))),
        ValueError,
        r"150 of 150 cell centroids in .*cells\.parquet' are NaN",
    ),
    (
        "transcripts not Parquet",
        _xe_edit(lambda p: _text(p / "transcripts.parquet", "x"), source="transcripts"),
        ValueError,
        r"transcripts\.parquet' is not a readable Parquet file",
    ),
    (
        "NaN transcript positions",
        _xe_edit(
            lambda p: _parquet_edit(p / "transcripts.parquet", lambda d: d.assign(y_location=np.inf)),
            source="transcripts",
        ),
        ValueError,
        r"transcript positions in .*transcripts\.parquet' are NaN or infinite",
    ),
    (
        "alignment with NaN",
        _xe(he_image=np.zeros((50, 50, 3), np.uint8), he_alignment=np.diag([np.nan, 1.0, 1.0])),
        ValueError,
        "alignment holds NaN or infinite values",
    ),
    (
        "alignment 2 x 2",
        _xe(he_image=np.zeros((50, 50, 3), np.uint8), he_alignment=np.eye(2)),
        ValueError,
        "3 x 3 affine",
    ),
    ("alignment without H&E", _xe(he_alignment=np.eye(3)), ValueError, "without `he_image`"),
    (
        "H&E is text (.png)",
        lambda b, t: sc_crd.io.xenium(b["xenium"], he_image=_file(t, "he.png", "x"), he_alignment=np.eye(3)),
        ValueError,
        r"he\.png' is not a readable image",
    ),
    (
        "H&E is text (.ome.tif)",
        lambda b, t: sc_crd.io.xenium(b["xenium"], he_image=_file(t, "he.ome.tif", "x"), he_alignment=np.eye(3)),
        ValueError,
        r"he\.ome\.tif' is not a readable TIFF",
    ),
    (
        "H&E missing",
        _xe(he_image="/nonexistent/he.ome.tif", he_alignment=np.eye(3)),
        FileNotFoundError,
        "H&E image not found",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in XENIUM])
def test_xenium(call, error, match, bases, tmp_path, caplog) -> None:
    _expect(lambda: call(bases, tmp_path), error, match, caplog)


# --------------------------------------------------------------------------------------------------------
# annotations (GeoJSON)
# --------------------------------------------------------------------------------------------------------
def poly(*ring: tuple[float, float], holes: list | None = None) -> dict:
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring], *(holes or [])]}


def feat(geometry: Any, cls: str | None = "Tumor", **props: Any) -> dict:
    p = {"objectType": "annotation", **props}
    if cls is not None:
        p["classification"] = {"name": cls}
    return {"type": "Feature", "geometry": geometry, "properties": p}


SQUARE = poly((0, 0), (10, 0), (10, 10), (0, 10), (0, 0))
BOWTIE = poly((0, 0), (10, 10), (10, 0), (0, 10), (0, 0))


def fc(*features: Any) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def _ann(source: Any, **kwargs) -> Callable[[Path], Any]:
    """Read ``source``: a dict / list passes as is; wrapped in ``("file", doc_or_text)`` it is written first."""

    def call(tmp_path: Path) -> Any:
        src = source
        if isinstance(source, tuple) and source[0] == "file":
            content = source[1]
            src = _file(tmp_path, "a.geojson", content if isinstance(content, str | bytes) else json.dumps(content))
        elif callable(source):
            src = source(tmp_path)
        return sc_crd.io.annotations(src, **kwargs)

    return call


ANNOTATIONS: list = [
    # invalid polygons: repaired with a warning naming the feature, or refused
    (
        "bow-tie repaired",
        _ann(fc(feat(SQUARE, "Stroma"), feat(BOWTIE, "Tumor", name="t1"))),
        WARNS,
        r"feature 1 \(class 'Tumor', name 't1'\) is invalid \(Self-intersection.*repaired with shapely\.make_valid",
    ),
    (
        "bow-tie in a MultiPolygon repaired",
        _ann([feat({"type": "MultiPolygon", "coordinates": [BOWTIE["coordinates"]]})]),
        WARNS,
        r"feature 0 \(class 'Tumor'\) is invalid",
    ),
    (
        "self-touching ring repaired",
        _ann([feat(poly((0, 0), (10, 0), (10, 10), (5, 0), (0, 10), (0, 0)))]),
        WARNS,
        "feature 0 .* is invalid",
    ),
    (
        "collinear ring (zero area)",
        _ann([feat(poly((0, 0), (5, 5), (10, 10), (0, 0)), "Stroma")]),
        ValueError,
        r"feature 0 \(class 'Stroma'\) is invalid .* has no area",
    ),
    (
        "NaN coordinate",
        _ann(fc(feat(SQUARE), feat(poly((0, 0), (NAN, 10), (10, 0), (0, 0)), "Stroma"))),
        ValueError,
        r"feature 1 \(class 'Stroma'\) has NaN or infinite coordinates",
    ),
    (
        "infinite coordinate",
        _ann([feat(poly((0, 0), (INF, 10), (10, 0), (0, 0)))]),
        ValueError,
        "feature 0 .* has NaN or infinite coordinates",
    ),
    (
        "NaN coordinate in a file (JSON NaN literal)",
        _ann(
            (
                "file",
                '[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                '[[[0, 0], [NaN, 1], [1, 0], [0, 0]]]}, "properties": {"name": "x"}}]',
            )
        ),
        ValueError,
        r"feature 0 \(class 'x'\) has NaN",
    ),
    (
        "two distinct points",
        _ann([feat(poly((0, 0), (10, 10), (0, 0), (0, 0)))]),
        ValueError,
        r"feature 0 .* degenerate ring \(2 distinct points",
    ),
    (
        "degenerate hole",
        _ann([feat(poly((0, 0), (10, 0), (10, 10), (0, 10), (0, 0), holes=[[[2, 2], [3, 3], [2, 2], [2, 2]]]))]),
        ValueError,
        "degenerate ring",
    ),
    ("no coordinates", _ann([feat({"type": "Polygon", "coordinates": []})]), ValueError, "has no coordinates"),
    (
        "malformed coordinates",
        _ann([feat({"type": "Polygon", "coordinates": [[[0, 0], ["a", "b"], [1, 1]]]})]),
        ValueError,
        "feature 0 .* has malformed coordinates",
    ),
    (
        "unknown geometry type",
        _ann([feat({"type": "Blob", "coordinates": []})]),
        ValueError,
        "feature 0 .* unknown geometry type 'Blob'",
    ),
    ("geometry not an object", _ann([feat("POLYGON")]), ValueError, "unknown geometry type None"),
    ("feature not an object", _ann(fc("not a feature")), ValueError, "feature 0 is not a GeoJSON Feature"),
    (
        "features not a list",
        _ann({"type": "FeatureCollection", "features": {"a": 1}}),
        ValueError,
        "'features' must be a list",
    ),
    # nothing to label with
    ("empty FeatureCollection", _ann(fc()), ValueError, "No polygon features"),
    ("empty list", _ann([]), ValueError, "No polygon features"),
    (
        "only Points",
        _ann([feat({"type": "Point", "coordinates": [1, 2]})]),
        ValueError,
        "No polygon features",
    ),
    (
        "Points among polygons skipped",
        _ann(
            [
                feat(SQUARE),
                feat({"type": "Point", "coordinates": [1, 2]}),
                feat({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
            ]
        ),
        WARNS,
        r"Skipping 2 features that are not areas \(Point: 1, LineString: 1\)",
    ),
    ("feature without geometry skipped", _ann([feat(SQUARE), feat(None)]), WARNS, r"\(no geometry: 1\)"),
    ("unclassified polygon dropped", _ann([feat(SQUARE), feat(SQUARE, None)]), WARNS, "Dropping 1 polygons without"),
    ("no feature of the objectType", _ann([feat(SQUARE)], object_type="detection"), ValueError, "objectType"),
    # not GeoJSON
    ("JSON number", _ann(("file", "3")), ValueError, "Expected a GeoJSON FeatureCollection.*got int"),
    ("TopoJSON", _ann({"type": "Topology", "objects": {}}), ValueError, "got type 'Topology'"),
    ("empty file", _ann(("file", "")), ValueError, "is not valid JSON"),
    ("binary file", _ann(("file", b"\x89PNG\r\n\x1a\n")), ValueError, "is not valid JSON"),
    # paths and argument types
    ("missing file", _ann(lambda t: t / "missing.geojson"), FileNotFoundError, "missing.geojson' does not exist"),
    ("folder", _ann(lambda t: t), FileNotFoundError, "is a folder, not a file"),
    ("path is an int", _ann(3), TypeError, "must be a GeoJSON file path"),
    ("scale=nan", _ann([feat(SQUARE)], scale=NAN), ValueError, f"scale {POS}"),
    ("scale=inf", _ann([feat(SQUARE)], scale=INF), ValueError, f"scale {POS}"),
    ("scale=0", _ann([feat(SQUARE)], scale=0), ValueError, f"scale {POS}"),
    ("scale=str", _ann([feat(SQUARE)], scale="0.5"), TypeError, "scale must be a"),
    ("class_key not a str", _ann([feat(SQUARE)], class_key=3), TypeError, "class_key must be a str"),
    ("class_key unknown", _ann([feat(SQUARE)], class_key="tissue"), KeyError, "class_key 'tissue'"),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in ANNOTATIONS])
def test_annotations(call, error, match, tmp_path, caplog) -> None:
    out = _expect(lambda: call(tmp_path), error, match, caplog)
    if error == WARNS:  # what is returned is valid, with area
        assert out.geometry.is_valid.all() and (out.geometry.area > 0).all()


def test_bowtie_repair_keeps_both_lobes() -> None:
    """make_valid splits a bow-tie into its two triangles: the whole drawn area is kept (10 x 10 / 2)."""
    gdf = sc_crd.io.annotations([feat(BOWTIE)])
    assert gdf.geometry.iloc[0].geom_type == "MultiPolygon"
    assert gdf.geometry.area.iloc[0] == pytest.approx(50.0)
    assert gdf["class"].tolist() == ["Tumor"]


def test_table_size() -> None:
    """The io bad-input table (counted in the issue's closing note)."""
    n = len(LEGACY) + len(VISIUM) + len(HD) + len(XENIUM) + len(ANNOTATIONS)
    assert n >= 150, n
