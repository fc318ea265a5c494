"""Xenium specifics: pseudo-spots from cells or transcripts, the H&E alignment (found, applied, or missing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers import tenx
from scipy import sparse

from spacrd_sc._images import _global_to_pixel
from spacrd_sc.io import xenium

BIN_UM = 40.0


@pytest.fixture(scope="module")
def xe_tx(tmp_path_factory) -> tenx.XeniumFixture:
    return tenx.write_xenium(tmp_path_factory.mktemp("xe_tx"), with_he=False, with_transcripts=True)


def _transcripts(fx: tenx.XeniumFixture) -> pd.DataFrame:
    return pd.read_parquet(fx.path / "transcripts.parquet")


def test_transcript_pseudo_spots_equal_cell_pseudo_spots(xe_tx) -> None:
    """Every gene count sits at its cell's centroid, so both sources give the same bins and counts."""
    by_cells = xenium(xe_tx.path, bin_size_um=BIN_UM).tables["table"]
    by_tx = xenium(xe_tx.path, bin_size_um=BIN_UM, source="transcripts").tables["table"]
    assert list(by_tx.var_names) == list(by_cells.var_names)
    assert set(by_tx.obs_names) == set(by_cells.obs_names)
    by_tx = by_tx[by_cells.obs_names]
    expected = by_cells.X.toarray()
    # the fixture's panel lists one symbol twice (KRT19, made unique as KRT19-1 in the cell matrix);
    # transcripts carry only the symbol, so both count under the first entry
    first, second = by_cells.var_names.get_loc("KRT19"), by_cells.var_names.get_loc("KRT19-1")
    expected[:, first] += expected[:, second]
    expected[:, second] = 0
    np.testing.assert_array_equal(by_tx.X.toarray(), expected)
    np.testing.assert_allclose(by_tx.obsm["spatial"], by_cells.obsm["spatial"])
    assert (by_tx.obs["n_transcripts"].to_numpy() == np.asarray(by_tx.X.sum(1)).ravel()).all()
    assert "n_cells" in by_cells.obs and "n_transcripts" not in by_cells.obs
    meta = by_tx.uns["spatial"][next(iter(by_tx.uns["spatial"]))]["metadata"]
    tx = _transcripts(xe_tx)
    kept = (tx["qv"] >= 20) & tx["feature_name"].isin(by_cells.var_names)
    # dropped: low-quality transcripts, BLANK codewords and control probes
    assert meta["source"] == "transcripts" and meta["n_transcripts_dropped"] == int((~kept).sum()) > 0
    assert meta["n_transcripts"] == int(sparse.csr_matrix(by_tx.X).sum())
    assert meta["min_qv"] == 20.0


def test_transcripts_quality_filter(xe_tx) -> None:
    strict = xenium(xe_tx.path, bin_size_um=BIN_UM, source="transcripts", min_qv=0.0).tables["table"]
    default = xenium(xe_tx.path, bin_size_um=BIN_UM, source="transcripts").tables["table"]
    tx = _transcripts(xe_tx)
    low_genes = int(((tx["qv"] < 20) & tx["feature_name"].isin(default.var_names)).sum())
    assert low_genes > 0
    assert strict.X.sum() == default.X.sum() + low_genes  # the low-quality gene transcripts are kept


def test_transcripts_errors(tmp_path: Path) -> None:
    fx = tenx.write_xenium(tmp_path / "xe", with_he=False)
    with pytest.raises(FileNotFoundError, match=r"Transcripts file not found.*transcripts\.parquet"):
        xenium(fx.path, source="transcripts")
    with pytest.raises(ValueError, match="source must be 'cells' or 'transcripts'"):
        xenium(fx.path, source="nuclei")


def test_he_alignment_found_beside_the_data(tmp_path: Path) -> None:
    fx = tenx.write_xenium(tmp_path / "xe")
    explicit = xenium(fx.path, he_image=fx.he_file, he_alignment=fx.alignment_file, bin_size_um=BIN_UM)
    found = xenium(fx.path, he_image=fx.he_file, bin_size_um=BIN_UM)
    a, b = explicit.tables["table"], found.tables["table"]
    np.testing.assert_allclose(b.obsm["spatial"], a.obsm["spatial"])
    lib = next(iter(b.uns["spatial"]))
    np.testing.assert_allclose(b.uns["spatial"][lib]["metadata"]["he_to_morphology"], fx.he_to_morph)
    # the alignment is applied: bin centres (µm) land where the CSV's inverse puts them in H&E pixels
    morph = np.column_stack([a.obs["array_col"] + 0.5, a.obs["array_row"] + 0.5]) * BIN_UM / fx.pixel_size
    he = (np.linalg.inv(fx.he_to_morph) @ np.column_stack([morph, np.ones(len(morph))]).T).T[:, :2]
    np.testing.assert_allclose(a.obsm["spatial"], he, atol=1e-6)
    # spot diameter recorded in H&E pixels (bin side scaled by the alignment)
    scale = np.sqrt(abs(np.linalg.det(np.linalg.inv(fx.he_to_morph)[:2, :2])))
    assert a.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(
        BIN_UM / fx.pixel_size * scale
    )
    np.testing.assert_allclose(_global_to_pixel(found, "he_image"), np.eye(3), atol=1e-9)


def test_he_without_alignment_is_an_error(tmp_path: Path) -> None:
    fx = tenx.write_xenium(tmp_path / "xe")
    fx.alignment_file.unlink()
    with pytest.raises(ValueError, match=r"without its alignment.*no '\*_he_imagealignment\.csv'.*he_alignment="):
        xenium(fx.path, he_image=fx.he_file)
    # an H&E already in morphology pixels is said so explicitly
    sdata = xenium(fx.path, he_image=fx.he_file, he_alignment=np.eye(3), bin_size_um=BIN_UM)
    assert "he_image" in sdata.images
    (fx.path / "a_he_imagealignment.csv").write_text("1,0,0\n0,1,0\n0,0,1\n")
    (fx.path / "b_he_imagealignment.csv").write_text("1,0,0\n0,1,0\n0,0,1\n")
    with pytest.raises(ValueError, match="several alignment files"):
        xenium(fx.path, he_image=fx.he_file)
