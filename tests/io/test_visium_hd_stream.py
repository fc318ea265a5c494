"""The streaming Visium HD reader (:func:`spacrd_sc.io.visium_hd`): chunked HDF5 read equals the in-memory sum,
choice of the coarsest Space Ranger output, counts conserved, named errors before work."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from spacrd_sc.io import _visium_hd, visium_hd
from spacrd_sc.io._tenx import _sum_by_grid

from .._helpers import tenx as fx

BIN = "binned_outputs/square_002um"


@pytest.fixture(scope="module")
def hd(tmp_path_factory: pytest.TempPathFactory) -> fx.VisiumHDFixture:
    return fx.write_visium_hd(tmp_path_factory.mktemp("hd_stream"), n_rows=70, n_cols=64, n_genes=24, seed=3)


@pytest.fixture(scope="module")
def hd_coarse(tmp_path_factory: pytest.TempPathFactory) -> tuple[fx.VisiumHDFixture, dict[int, sparse.csr_matrix]]:
    f = fx.write_visium_hd(tmp_path_factory.mktemp("hd_coarse"), n_rows=96, n_cols=80, n_genes=16, seed=5)
    return f, {um: fx.write_coarse_bins(f, um) for um in (8, 16)}


def _table(sdata):
    t = sdata.tables["table"]
    return t, next(iter(t.uns["spatial"].values()))["metadata"]


def _expected(hd: fx.VisiumHDFixture, k: int) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """The in-memory sum of the matrix's bins (matrix order) into k x k squares."""
    pos = hd.positions.loc[hd.barcodes]
    X, rows, cols, G = _sum_by_grid(hd.counts, pos["array_row"].to_numpy() // k, pos["array_col"].to_numpy() // k)
    return X, rows, cols, np.asarray(G.sum(1)).ravel().astype(int)


@pytest.mark.parametrize("chunk", [None, 97])
def test_stream_equals_in_memory(hd: fx.VisiumHDFixture, chunk: int | None, monkeypatch) -> None:
    if chunk is not None:
        assert chunk < len(hd.barcodes)  # several chunks, the last one partial
        monkeypatch.setattr(_visium_hd, "_CHUNK_BINS", chunk)
    streamed = visium_hd(hd.path, bin_size_um=16, progress_bar=False)
    in_memory = visium_hd(hd.path, bin_size_um=16, keep_source=True)
    a, meta = _table(streamed)
    b, meta_b = _table(in_memory)
    assert meta["reader"] == "stream" and meta_b["reader"] == "spatialdata-io"
    assert "square_002um" not in streamed.tables and "square_002um" in in_memory.tables

    X, rows, cols, n = _expected(hd, 8)
    assert sparse.isspmatrix_csr(a.X) and a.X.dtype == np.float32
    assert (a.X != X.astype(np.float32)).nnz == 0 and (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obs["array_row"], rows)
    np.testing.assert_array_equal(a.obs["array_col"], cols)
    np.testing.assert_array_equal(a.obs["n_bins"], n)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])  # same sums, same fit: bit-identical
    assert {k: v for k, v in meta.items() if k != "reader"} == {k: v for k, v in meta_b.items() if k != "reader"}
    assert a.uns["spatial"][hd.dataset_id]["scalefactors"] == b.uns["spatial"][hd.dataset_id]["scalefactors"]
    np.testing.assert_array_equal(
        a.uns["spatial"][hd.dataset_id]["images"]["hires"], b.uns["spatial"][hd.dataset_id]["images"]["hires"]
    )

    # images: the same elements, pixels and transformations as spatialdata-io's
    from spatialdata.transformations import get_transformation

    assert set(streamed.images) == set(in_memory.images) == {f"{hd.dataset_id}_{n}_image" for n in ("hires", "lowres")}
    for key in streamed.images:
        np.testing.assert_array_equal(streamed.images[key].values, in_memory.images[key].values)
        ta = get_transformation(streamed.images[key], get_all=True)
        tb = get_transformation(in_memory.images[key], get_all=True)
        assert set(ta) == set(tb)
        for cs in ta:
            np.testing.assert_allclose(
                ta[cs].to_affine_matrix(("x", "y"), ("x", "y")), tb[cs].to_affine_matrix(("x", "y"), ("x", "y"))
            )
    assert set(streamed.shapes) == set(in_memory.shapes) - {f"{hd.dataset_id}_square_002um"}


def test_stream_fullres_image_as_spatialdata_io(tmp_path: Path) -> None:
    f = fx.write_visium_hd(tmp_path / "outs", n_rows=40, n_cols=36, n_genes=8, fullres=True)
    a = visium_hd(f.path, progress_bar=False)
    b = visium_hd(f.path, keep_source=True)
    key = f"{f.dataset_id}_full_image"
    assert _table(a)[1]["image_key"] == key
    np.testing.assert_array_equal(np.asarray(a.images[key]), np.asarray(b.images[key]))
    np.testing.assert_array_equal(a.tables["table"].obsm["spatial"], b.tables["table"].obsm["spatial"])


@pytest.mark.parametrize(
    ("bin_size_um", "source", "k", "side"),
    [(48, 16, 3, 48.0), (56, 8, 7, 56.0), (55, 8, 7, 56.0), (50, 2, 25, 50.0), (16, 16, 1, 16.0)],
)
def test_coarsest_output_that_tiles(hd_coarse, bin_size_um: float, source: int, k: int, side: float) -> None:
    f, coarse = hd_coarse
    sdata = visium_hd(f.path, bin_size_um=bin_size_um, progress_bar=False)
    t, meta = _table(sdata)
    assert meta["source_bin_um"] == source and meta["bins_per_side"] == k and meta["bin_size_um"] == side
    assert meta["source_bins_available"] == [2, 8, 16]
    assert ("coarsest output" if source > 2 else "finest bins") in meta["source_choice"]
    assert list(sdata.shapes) == [f"{f.dataset_id}_square_{int(side):03d}um"]
    # the squares and counts do not depend on the output read (10x's coarse bins are exact sums)
    X2, rows, cols, n2 = _expected(f, int(side // 2))
    np.testing.assert_array_equal(t.obs["array_row"], rows)
    np.testing.assert_array_equal(t.obs["array_col"], cols)
    assert (t.X != X2.astype(np.float32)).nnz == 0
    assert meta["n_bins_read"] == (len(f.barcodes) if source == 2 else coarse[source].shape[0])
    if source > 2:  # centres agree with those from the 2 µm bins (both on the same array -> pixel affine)
        fine = visium_hd(f.path, bin_size_um=bin_size_um, bin_size=2, progress_bar=False)
        ft, fmeta = _table(fine)
        assert fmeta["source_bin_um"] == 2 and fmeta["source_choice"] == "bin_size=2 given"
        np.testing.assert_allclose(t.obsm["spatial"], ft.obsm["spatial"], atol=1e-6)
        assert (t.X != ft.X).nnz == 0


def test_counts_conserved_and_out_of_tissue_dropped(hd: fx.VisiumHDFixture, tmp_path: Path) -> None:
    path = tmp_path / "outs"
    shutil.copytree(hd.path, path)
    f = fx.VisiumHDFixture(**{**hd.__dict__, "path": path})
    out = fx.write_raw_matrix(f)
    assert out.sum() > 0
    for keep_source in (False, True):
        sdata = visium_hd(path, bin_size_um=16, filtered_counts_file=False, keep_source=keep_source, progress_bar=False)
        t, meta = _table(sdata)
        assert t.X.sum(dtype=np.float64) == hd.counts.sum() == meta["counts_assigned"]
        assert meta["counts_out_of_tissue"] == out.sum()
        assert meta["n_bins_read"] == len(hd.barcodes) + out.shape[0]
        assert meta["n_bins_assigned"] == len(hd.barcodes) == t.obs["n_bins"].sum()
        assert meta["n_bins_out_of_tissue"] == out.shape[0]
        assert (t.X != _expected(hd, 8)[0].astype(np.float32)).nnz == 0
        # partial squares (cut by the tissue disc) are kept and counted
        assert meta["n_squares_partial"] == int((t.obs["n_bins"] < 64).sum()) > 0


def test_logs_sizes(hd: fx.VisiumHDFixture, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        visium_hd(hd.path, progress_bar=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"reading {len(hd.barcodes)} bins of 2 µm ({hd.counts.nnz} non-zeros" in text
    assert "GiB" in text and f"{len(hd.barcodes)} in tissue summed into" in text


def test_needed_matrix_missing(hd_coarse, tmp_path: Path) -> None:
    f, _ = hd_coarse
    path = tmp_path / "outs"
    shutil.copytree(f.path, path)
    (path / BIN / "filtered_feature_bc_matrix.h5").unlink()
    # 56 µm squares are read from the 8 µm output: the 2 µm matrix is not needed
    assert _table(visium_hd(path, bin_size_um=56, progress_bar=False))[1]["source_bin_um"] == 8
    # 50 µm squares need the 2 µm bins
    with pytest.raises(FileNotFoundError, match=r"Count matrix not found: .*square_002um.*filtered_feature_bc"):
        visium_hd(path, bin_size_um=50)
    # an incomplete coarse output (no matrix) is not chosen
    (path / "binned_outputs/square_008um/filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"Count matrix not found: .*square_002um"):
        visium_hd(path, bin_size_um=56)


def test_matrix_barcodes_not_in_positions(hd: fx.VisiumHDFixture, tmp_path: Path) -> None:
    path = tmp_path / "outs"
    shutil.copytree(hd.path, path)
    with h5py.File(path / BIN / "filtered_feature_bc_matrix.h5", "r+") as h:
        bc = h["matrix/barcodes"][()]
        bc[3] = b"s_002um_99999_99999-1"
        h["matrix/barcodes"][...] = bc
    with pytest.raises(ValueError, match=r"1 of \d+ barcodes of .* are not in .*tissue_positions\.parquet.*99999"):
        visium_hd(path)


def test_short_barcodes_match(tmp_path: Path) -> None:
    """Barcodes of unequal length (NUL-padded in HDF5) are matched exactly."""
    f = fx.write_visium_hd(tmp_path / "outs", n_rows=30, n_cols=30, n_genes=6)
    pos = pd.read_parquet(f.path / BIN / "spatial/tissue_positions.parquet")
    short = {b: b.replace("s_002um_000", "s_") for b in pos["barcode"][::2]}
    pos["barcode"] = pos["barcode"].map(lambda b: short.get(b, b))
    pos.to_parquet(f.path / BIN / "spatial/tissue_positions.parquet", index=False)
    fx.write_10x_h5(
        f.path / BIN / "filtered_feature_bc_matrix.h5",
        f.counts,
        np.array([short.get(b, b) for b in f.barcodes]),
        f.features,
    )
    t, meta = _table(visium_hd(f.path, bin_size_um=8, progress_bar=False))
    assert meta["n_bins_read"] == len(f.barcodes)
    assert (t.X != _expected(f, 4)[0].astype(np.float32)).nnz == 0


def test_gex_only_and_duplicate_symbols(tmp_path: Path) -> None:
    """``gex_only`` drops other feature types from the streamed columns; symbols made unique as spatialdata-io."""
    f = fx.write_visium_hd(tmp_path / "outs", n_rows=30, n_cols=28, n_genes=6)
    features = fx.gene_table(6, n_controls=2)
    counts = sparse.hstack([f.counts, sparse.csr_matrix(np.ones((f.counts.shape[0], 2), np.int32))]).tocsr()
    fx.write_10x_h5(f.path / BIN / "filtered_feature_bc_matrix.h5", counts, f.barcodes, features)
    for gex_only in (False, True):
        a = _table(visium_hd(f.path, bin_size_um=8, gex_only=gex_only, progress_bar=False))[0]
        b = _table(visium_hd(f.path, bin_size_um=8, gex_only=gex_only, keep_source=True))[0]
        assert a.n_vars == (6 if gex_only else 8) and a.var_names.is_unique
        pd.testing.assert_frame_equal(a.var, b.var)
        assert (a.X != b.X).nnz == 0
