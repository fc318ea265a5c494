"""Xenium transcripts streamed in Arrow batches: the same pseudo-spots as the whole table, filters reported."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _helpers import tenx
from scipy import sparse

from spacrd_sc.io import _xenium, xenium
from spacrd_sc.io._tenx import _sum_by_grid

BIN_UM = 40.0
CONTROLS = ["NegControlProbe_00001", "NegControlCodeword_0500", "UnassignedCodeword_0007", "BLANK_0003"]


def _write_transcripts(file: Path, genes: list[str], n: int = 3000, *, binary: bool = False, seed: int = 0) -> None:
    """A ``transcripts.parquet`` in Xenium's layout: genes, control probes / codewords, a feature outside the
    panel and a few missing names; realistic qv (many at 40, some below 20, a few missing); positions spread
    over a section that crosses the origin (negative µm too); several row groups, dictionary-encoded names."""
    rng = np.random.default_rng(seed)
    names = np.array([*genes, *CONTROLS, "PROTEIN_X"], dtype=object)
    p = np.r_[np.full(len(genes), 0.9 / len(genes)), np.full(len(CONTROLS), 0.08 / len(CONTROLS)), 0.02]
    feature = names[rng.choice(len(names), n, p=p)]
    feature[rng.choice(n, 5, replace=False)] = None
    qv = np.where(rng.random(n) < 0.5, 40.0, rng.uniform(0, 40, n)).astype(np.float32)
    qv_mask = np.zeros(n, bool)
    qv_mask[rng.choice(n, 4, replace=False)] = True
    x = rng.uniform(-90, 310, n).astype(np.float32)
    y = rng.uniform(-30, 250, n).astype(np.float32)
    x[:20] = 80.0  # on a square border: floor(80 / 40) = 2, not 1
    name_values = [None if v is None else (v.encode() if binary else v) for v in feature]
    table = pa.table(
        {
            "transcript_id": pa.array(np.arange(n, dtype=np.uint64)),
            "cell_id": pa.array([f"cell{i % 50}" for i in range(n)]),
            "overlaps_nucleus": pa.array(rng.integers(0, 2, n).astype(np.uint8)),
            "feature_name": pa.array(name_values, type=pa.binary() if binary else pa.string()),
            "x_location": pa.array(x),
            "y_location": pa.array(y),
            "z_location": pa.array(np.full(n, 12.0, np.float32)),
            "qv": pa.array(qv, mask=qv_mask),
        }
    )
    pq.write_table(table, file, row_group_size=700, use_dictionary=["feature_name"])


def _whole_table(file: Path, var_names: pd.Index, min_qv: float = 20.0):
    """The reference: the whole table in pandas, one sparse product (the reader's former path)."""
    df = pd.read_parquet(file, columns=["feature_name", "x_location", "y_location", "qv"])
    names = df["feature_name"].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    gene = var_names.get_indexer(names)
    keep = (gene >= 0) & (df["qv"].to_numpy(float) >= min_qv)
    X = sparse.csr_matrix(
        (np.ones(keep.sum()), (np.arange(keep.sum()), gene[keep])), shape=(keep.sum(), len(var_names))
    )
    xy = df.loc[keep, ["x_location", "y_location"]].to_numpy(float)
    summed, rows, cols, G = _sum_by_grid(X, np.floor(xy[:, 1] / BIN_UM), np.floor(xy[:, 0] / BIN_UM))
    is_control = names.fillna("").str.startswith(tuple(_xenium._CONTROL_PREFIXES)).to_numpy()
    dropped = {
        "low_qv": int(((gene >= 0) & ~keep).sum()),
        "control": int(((gene < 0) & is_control).sum()),
        "other": int(((gene < 0) & ~is_control).sum()),
    }
    return summed, rows, cols, np.asarray(G.sum(1)).ravel(), dropped


@pytest.fixture(scope="module")
def xe(tmp_path_factory) -> tenx.XeniumFixture:
    fx = tenx.write_xenium(tmp_path_factory.mktemp("xe_stream"), with_he=False)
    genes = [g for g in fx.features.loc[fx.features["feature_type"] == "Gene Expression", "name"]]
    _write_transcripts(fx.path / "transcripts.parquet", genes)
    return fx


@pytest.fixture(scope="module")
def var_names(xe) -> pd.Index:
    return xenium(xe.path, bin_size_um=BIN_UM).tables["table"].var_names


@pytest.mark.parametrize("batch_rows", [97, 700, 10**9])
def test_streamed_batches_equal_the_whole_table(xe, var_names, batch_rows, monkeypatch) -> None:
    file = xe.path / "transcripts.parquet"
    assert pq.ParquetFile(file).metadata.num_row_groups == 5  # batches cross row-group borders
    monkeypatch.setattr(_xenium, "_MERGE_MIN_KEYS", 64)  # merge reduced batches many times
    grid = _xenium._transcript_grid(file, var_names, min_qv=20.0, bin_size_um=BIN_UM, batch_rows=batch_rows)
    summed, rows, cols, n_members, dropped = _whole_table(file, var_names)
    assert grid.X.dtype == np.float32 and grid.X.has_sorted_indices
    np.testing.assert_array_equal(grid.rows, rows)
    np.testing.assert_array_equal(grid.cols, cols)
    assert (grid.X != summed).nnz == 0
    np.testing.assert_array_equal(grid.n_transcripts, n_members)
    assert rows.min() < 0 and cols.min() < 0  # squares left of / above the origin
    # every transcript is kept once or dropped for one reason
    assert (grid.n_low_qv, grid.n_control, grid.n_other) == (dropped["low_qv"], dropped["control"], dropped["other"])
    assert min(dropped.values()) > 0
    assert grid.n_kept == int(summed.sum()) == grid.n_read - sum(dropped.values())
    assert grid.n_read == 3000


def test_reader_reports_what_it_dropped(xe, monkeypatch, caplog) -> None:
    whole = xenium(xe.path, bin_size_um=BIN_UM, source="transcripts").tables["table"]
    monkeypatch.setattr(_xenium, "_TX_BATCH_ROWS", 113)
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        streamed = xenium(xe.path, bin_size_um=BIN_UM, source="transcripts", progress_bar=False).tables["table"]
    assert "Streaming 3,000 transcripts" in caplog.text and "in batches of 113 rows" in caplog.text
    assert list(streamed.obs_names) == list(whole.obs_names)
    assert (streamed.X != whole.X).nnz == 0
    np.testing.assert_array_equal(streamed.obs["n_transcripts"], np.asarray(streamed.X.sum(1)).ravel())
    meta = streamed.uns["spatial"][next(iter(streamed.uns["spatial"]))]["metadata"]
    _, _, _, _, dropped = _whole_table(xe.path / "transcripts.parquet", streamed.var_names)
    assert meta["n_transcripts_low_qv"] == dropped["low_qv"]
    assert meta["n_transcripts_control"] == dropped["control"]
    assert meta["n_transcripts_other_feature"] == dropped["other"]
    assert meta["n_transcripts_dropped"] == sum(dropped.values())
    # counts are conserved: kept + dropped = every row of the file
    assert meta["n_transcripts"] == int(streamed.X.sum()) == 3000 - meta["n_transcripts_dropped"]
    # no control probe or codeword reaches the table
    assert not any(v.startswith(_xenium._CONTROL_PREFIXES) for v in streamed.var_names)


def test_quality_filter_moves_counts_between_kept_and_dropped(xe) -> None:
    loose = xenium(xe.path, bin_size_um=BIN_UM, source="transcripts", min_qv=0.0).tables["table"]
    strict = xenium(xe.path, bin_size_um=BIN_UM, source="transcripts", min_qv=30.0).tables["table"]
    m_loose, m_strict = (t.uns["spatial"][next(iter(t.uns["spatial"]))]["metadata"] for t in (loose, strict))
    assert m_loose["n_transcripts_low_qv"] == 4  # only the missing qv values
    assert m_strict["n_transcripts_low_qv"] > m_loose["n_transcripts_low_qv"]
    assert m_loose["n_transcripts"] - m_strict["n_transcripts"] == (
        m_strict["n_transcripts_low_qv"] - m_loose["n_transcripts_low_qv"]
    )
    assert m_loose["n_transcripts_control"] == m_strict["n_transcripts_control"] > 0


def test_binary_plain_feature_names_read_the_same(tmp_path: Path, xe, var_names) -> None:
    """Early Xenium files store ``feature_name`` as bytes; a file may also not dictionary-encode it."""
    genes = list(var_names)
    ref = tmp_path / "ref.parquet"
    _write_transcripts(ref, genes, n=800, seed=3)
    binary = tmp_path / "binary.parquet"
    _write_transcripts(binary, genes, n=800, binary=True, seed=3)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pq.read_table(ref), plain, use_dictionary=False)
    out = [
        _xenium._transcript_grid(f, var_names, min_qv=20.0, bin_size_um=BIN_UM, batch_rows=128)
        for f in (ref, binary, plain)
    ]
    for g in out[1:]:
        assert (g.X != out[0].X).nnz == 0
        np.testing.assert_array_equal(g.rows, out[0].rows)
        assert (g.n_low_qv, g.n_control, g.n_other) == (out[0].n_low_qv, out[0].n_control, out[0].n_other)


def test_bad_positions_are_named(tmp_path: Path, xe, var_names) -> None:
    file = tmp_path / "t.parquet"
    table = pq.read_table(xe.path / "transcripts.parquet")
    x = table.column("x_location").to_numpy().copy()
    x[2500] = np.nan
    pq.write_table(table.set_column(table.schema.get_field_index("x_location"), "x_location", pa.array(x)), file)
    with pytest.raises(
        ValueError, match=r"positions in .*t\.parquet' are NaN or infinite: 1 of rows 2,000-2,999 \(e\.g\. rows 2,500\)"
    ):
        _xenium._transcript_grid(file, var_names, min_qv=20.0, bin_size_um=BIN_UM, batch_rows=1000)
    with pytest.raises(ValueError, match=r"bin_size_um=0.0001 is too small"):
        _xenium._transcript_grid(xe.path / "transcripts.parquet", var_names, min_qv=20.0, bin_size_um=1e-4)
    empty = tmp_path / "e.parquet"
    pq.write_table(table.filter(pa.array(np.zeros(table.num_rows, bool))), empty)
    with pytest.raises(ValueError, match=r"No transcript of .*e\.parquet.* has qv >= 20"):
        _xenium._transcript_grid(empty, var_names, min_qv=20.0, bin_size_um=BIN_UM)


def test_progress_bar_over_the_transcripts(xe, capsys) -> None:
    xenium(xe.path, bin_size_um=BIN_UM, source="transcripts", progress_bar=True)
    err = capsys.readouterr().err
    assert "Xenium transcripts" in err and "3.00k/3.00k" in err
    xenium(xe.path, bin_size_um=BIN_UM, source="transcripts", progress_bar=False)
    assert "Xenium transcripts" not in capsys.readouterr().err
