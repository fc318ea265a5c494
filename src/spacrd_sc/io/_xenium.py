"""Reader for 10x Xenium: cells summed into spot-sized squares, the post-Xenium H&E aligned."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._docs import inject_docs
from .._images import (
    GLOBAL_CS,
    _affine_scale,
    _apply_affine,
    _check_path,
    _image_hw,
    _image_levels,
    _image_model,
    _read_he_lazy,
)
from .._logging import logger
from .._settings import settings
from .._spatial import _spots_outside
from .._utils import _progress
from ._checks import _check_finite_xy, _check_hdf5, _check_parquet, _check_zip, _number, _read_json
from ._tenx import (
    DEFAULT_BIN_UM,
    _add_circles_and_table,
    _bin_label,
    _binned_table,
    _default_library_id,
    _drop_table,
    _finish,
    _quiet_reader,
    _sum_by_grid,
    _valid_name,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData


#: Name spatialdata-io gives to a post-Xenium H&E image element; reused for ours.
XENIUM_HE_KEY = "he_image"
#: Table key under which the cell-level Xenium table is kept with ``keep_source=True``.
XENIUM_CELL_TABLE_KEY = "cell_table"


#: Decoded transcripts of a Xenium run (``feature_name``, ``x_location``, ``y_location`` in µm, ``qv``).
_TRANSCRIPTS = "transcripts.parquet"
#: The columns of ``transcripts.parquet`` read to bin transcripts (the others are never decoded).
_TX_COLUMNS = ("feature_name", "x_location", "y_location", "qv")
#: Rows per Arrow record batch when streaming ``transcripts.parquet`` (≈ 100 MiB of working arrays).
_TX_BATCH_ROWS = 1 << 20
#: Reduced batches are merged into the running totals once they hold this many keys (or more than the totals).
_MERGE_MIN_KEYS = 1 << 20
#: Grid squares are keyed by ``(row + _GRID_HALF, col + _GRID_HALF)``; positions must lie within
#: ``_GRID_HALF`` squares of the origin (52 cm with 1 µm squares), and genes below ``_MAX_GENES``, so that the
#: ``(square, gene)`` key fits an int64.
_GRID_HALF = 1 << 19
_MAX_GENES = 1 << 22
#: ``feature_name`` prefixes of Xenium's control features (negative control probes and codewords, unassigned
#: codewords (``BLANK_*`` in early panels), deprecated codewords, genomic control probes): never genes of
#: the cell matrix, dropped and counted as controls.
_CONTROL_PREFIXES = (
    "NegControlProbe_",
    "NegControlCodeword_",
    "UnassignedCodeword_",
    "BLANK_",
    "DeprecatedCodeword_",
    "Intergenic_Region_",
)


def _find_alignment(path: Path) -> Path:
    """The only ``*he_imagealignment.csv`` of a Xenium folder; :class:`ValueError` when none or several."""
    found = sorted(path.glob("*he_imagealignment.csv"))
    if len(found) == 1:
        logger.info("Using the H&E alignment %s.", found[0])
        return found[0]
    what = f"several alignment files {[f.name for f in found]}" if found else "no '*_he_imagealignment.csv'"
    raise ValueError(
        f"An H&E image was given without its alignment and {str(path)!r} holds {what}. Pass `he_alignment=` "
        "(the '*_he_imagealignment.csv' exported by Xenium Explorer, or np.eye(3) when the H&E is already in "
        "Xenium morphology pixels)."
    )


class _KeyCounts:
    """Counts of int64 keys, merged batch by batch: sorted unique ``keys`` and their ``counts``.

    Each batch is reduced by :func:`numpy.unique`; reduced batches wait in a list and are merged into the
    running totals once they hold more keys than the totals (so every key is re-sorted O(log batches) times
    and memory follows the distinct keys, not the rows).
    """

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_pending = 0

    def add(self, keys: np.ndarray) -> None:
        k, c = np.unique(keys, return_counts=True)
        self._pending.append((k, c.astype(np.int64)))
        self._n_pending += len(k)
        if self._n_pending > max(len(self.keys), _MERGE_MIN_KEYS):
            self.merge()

    def merge(self) -> None:
        if not self._pending:
            return
        k = np.concatenate([self.keys, *(p[0] for p in self._pending)])
        c = np.concatenate([self.counts, *(p[1] for p in self._pending)])
        self._pending, self._n_pending = [], 0
        order = np.argsort(k, kind="stable")
        k, c = k[order], c[order]
        del order
        start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        self.keys, self.counts = k[start], np.add.reduceat(c, start)


@dataclass
class _TranscriptGrid:
    """Transcripts of ``transcripts.parquet`` summed into grid squares (see :func:`_transcript_grid`)."""

    X: sparse.csr_matrix  # squares x genes, float32 counts
    rows: np.ndarray  # floor(y / bin) of each square
    cols: np.ndarray  # floor(x / bin)
    n_transcripts: np.ndarray  # transcripts summed into each square
    n_read: int  # rows of the file
    n_low_qv: int  # gene transcripts with qv < min_qv
    n_control: int  # control probes and codewords (`_CONTROL_PREFIXES`)
    n_other: int  # other features that are no gene of the cell matrix

    @property
    def n_kept(self) -> int:
        return int(self.n_transcripts.sum())


def _is_control(name: str) -> bool:
    return name.startswith(_CONTROL_PREFIXES)


def _transcript_grid(
    file: Path,
    var_names: pd.Index,
    *,
    min_qv: float,
    bin_size_um: float,
    batch_rows: int | None = None,
    progress_bar: bool = False,
) -> _TranscriptGrid:
    """Stream ``transcripts.parquet`` in Arrow batches and sum the kept transcripts into ``bin_size_um`` squares.

    Only ``feature_name`` (read dictionary-encoded: gene names are matched once per batch dictionary, never per
    row), ``x_location``, ``y_location`` and ``qv`` are read, ``batch_rows`` rows at a time. Kept: a
    ``feature_name`` among ``var_names`` (the gene-expression features of the cell matrix) and
    ``qv >= min_qv``; a symbol listed twice in the panel (``GENE``, ``GENE-1`` after making names unique)
    counts under its first entry. Each kept transcript gets the key ``(square, gene)`` of its square
    ``(floor(y / bin), floor(x / bin))`` (µm); keys are counted per batch and merged (:class:`_KeyCounts`), so
    memory follows the batch and the number of non-zero ``(square, gene)`` pairs, not the number of
    transcripts. Squares come out in row-major order, as :func:`~._tenx._sum_by_grid` orders them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    batch_rows = int(batch_rows or _TX_BATCH_ROWS)
    genes = pd.Index(var_names)
    n_genes = len(genes)
    if n_genes >= _MAX_GENES:
        raise ValueError(f"At most {_MAX_GENES - 1} genes can be binned from transcripts; got {n_genes}.")
    # pre_buffer=False: column chunks are read as they are decoded, not a whole row group ahead (measured: a
    # third of Arrow's peak allocation, no slower)
    pf = pq.ParquetFile(file, read_dictionary=["feature_name"], pre_buffer=False, buffer_size=1 << 22)
    n_rows = pf.metadata.num_rows
    logger.info(
        "Streaming %s transcripts from %s (%d row groups, %.1f MiB) in batches of %s rows.",
        f"{n_rows:,}",
        file,
        pf.metadata.num_row_groups,
        file.stat().st_size / 2**20,
        f"{batch_rows:,}",
    )
    side = 2 * _GRID_HALF
    acc = _KeyCounts()
    n_low_qv = n_control = n_other = 0
    start = 0
    with _progress(
        total=n_rows, desc="Xenium transcripts", unit="tx", unit_scale=True, disable=not progress_bar
    ) as bar:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(_TX_COLUMNS), use_pandas_metadata=False):
            n = batch.num_rows
            feat = batch.column("feature_name")
            if not pa.types.is_dictionary(feat.type):
                feat = pc.dictionary_encode(feat)
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in feat.dictionary.to_pylist()]
            # one entry per dictionary value, and a last one (-1) for missing feature names
            lookup = np.append(genes.get_indexer(names), -1).astype(np.int64)
            idx = pc.fill_null(feat.indices, len(names)).to_numpy(zero_copy_only=False)
            gene = lookup[idx]
            is_gene = gene >= 0
            if not is_gene.all():
                per_feature = np.bincount(idx[~is_gene], minlength=len(names) + 1)
                for i in np.flatnonzero(per_feature):
                    if i < len(names) and _is_control(names[i]):
                        n_control += int(per_feature[i])
                    else:
                        n_other += int(per_feature[i])
            x = batch.column("x_location").to_numpy(zero_copy_only=False)
            y = batch.column("y_location").to_numpy(zero_copy_only=False)
            finite = np.isfinite(x) & np.isfinite(y)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                shown = ", ".join(f"{start + b:,}" for b in bad[:5])
                raise ValueError(
                    f"Some transcript positions in {str(file)!r} are NaN or infinite: {len(bad):,} of rows "
                    f"{start:,}-{start + n - 1:,} (e.g. rows {shown})."
                )
            qv = batch.column("qv").to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            keep = is_gene & (qv >= min_qv)  # NaN / missing qv fails the test
            n_low_qv += int(is_gene.sum() - keep.sum())
            row = np.floor(y[keep].astype(np.float64) / bin_size_um)
            col = np.floor(x[keep].astype(np.float64) / bin_size_um)
            if len(row) and max(np.abs(row).max(), np.abs(col).max()) >= _GRID_HALF:
                raise ValueError(
                    f"bin_size_um={bin_size_um:g} is too small for the transcript positions of {str(file)!r}: "
                    f"more than {_GRID_HALF:,} squares from the origin (a position of "
                    f"{max(np.abs(row).max(), np.abs(col).max()) * bin_size_um:.4g} µm)."
                )
            key = (row.astype(np.int64) + _GRID_HALF) * side + (col.astype(np.int64) + _GRID_HALF)
            acc.add(key * n_genes + gene[keep])
            del feat, idx, gene, is_gene, x, y, qv, keep, row, col, key
            start += n
            bar.update(n)
    acc.merge()
    if not len(acc.keys):
        raise ValueError(f"No transcript of {str(file)!r} has qv >= {min_qv:g} and a gene of the cell matrix.")
    square, gene = np.divmod(acc.keys, n_genes)
    first = np.flatnonzero(np.r_[True, square[1:] != square[:-1]])
    indptr = np.r_[first, len(square)].astype(np.int64)
    usq = square[first]
    X = sparse.csr_matrix((acc.counts.astype(np.float32), gene.astype(np.int32), indptr), shape=(len(usq), n_genes))
    grid = _TranscriptGrid(
        X=X,
        rows=usq // side - _GRID_HALF,
        cols=usq % side - _GRID_HALF,
        n_transcripts=np.add.reduceat(acc.counts, first),
        n_read=int(n_rows),
        n_low_qv=n_low_qv,
        n_control=n_control,
        n_other=n_other,
    )
    logger.info(
        "Kept %s of %s transcripts in %s squares of %g µm (dropped: %s with qv < %g, %s control probes / "
        "codewords, %s other features).",
        f"{grid.n_kept:,}",
        f"{n_rows:,}",
        f"{len(usq):,}",
        bin_size_um,
        f"{n_low_qv:,}",
        min_qv,
        f"{n_control:,}",
        f"{n_other:,}",
    )
    return grid


def _read_alignment(he_alignment: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
    """The 3x3 H&E px → morphology px affine from 10x's ``*_imagealignment.csv`` (or an array)."""
    if isinstance(he_alignment, str | os.PathLike):
        file = _check_path(he_alignment, "H&E alignment file")
        try:
            M = np.loadtxt(file, delimiter=",", dtype=float, ndmin=2)
        except ValueError as err:
            raise ValueError(
                f"{str(file)!r} is not a 3 x 3 comma-separated affine matrix (10x's '*_he_imagealignment.csv')."
            ) from err
    else:
        M = np.asarray(he_alignment, dtype=float)
    if M.shape != (3, 3):
        raise ValueError(f"The H&E alignment must be a 3 x 3 affine matrix; got shape {M.shape}.")
    if not np.isfinite(M).all():
        raise ValueError(f"The H&E alignment holds NaN or infinite values: {M.tolist()}.")
    if not np.allclose(M[2], [0.0, 0.0, 1.0], atol=1e-6):
        raise ValueError(f"The H&E alignment is not affine (last row {M[2].tolist()}, expected [0, 0, 1]).")
    if abs(np.linalg.det(M[:2, :2])) < 1e-12:
        raise ValueError("The H&E alignment matrix is singular.")
    return M


@inject_docs
def xenium(
    path: str | os.PathLike[str],
    *,
    bin_size_um: float = DEFAULT_BIN_UM,
    he_image: str | os.PathLike[str] | np.ndarray | None = None,
    he_alignment: str | os.PathLike[str] | np.ndarray | None = None,
    library_id: str | None = None,
    keep_source: bool = False,
    source: Literal["cells", "transcripts"] = "cells",
    min_qv: float = 20.0,
    progress_bar: bool | None = None,
    table_key: str = TABLE_KEY,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Xenium output folder and sum its cells (or transcripts) into spot-sized square pseudo-spots.

    :func:`spatialdata_io.xenium` reads the cell table; cell counts (``source="cells"``, by cell centroid)
    or the decoded transcripts of ``transcripts.parquet`` (``source="transcripts"``, by transcript position,
    ``qv >= min_qv``, genes of the cell matrix only: control probes and codewords are dropped) are summed into
    ``bin_size_um`` squares of a grid anchored at the Xenium frame origin (µm). Without an H&E the section is
    **image-less** and the ``"global"`` frame (and ``obsm['spatial']``) is Xenium *morphology pixels*
    (µm / ``pixel_size`` from ``experiment.xenium``); plot it with
    ``sq.pl.spatial_scatter(adata, color=..., img=False, scale_factor=1.0)``. With ``he_image`` the
    post-Xenium H&E becomes the ``"global"`` frame: bin centres are mapped into H&E pixels and every other
    element gets the inverse alignment composed into its transformation.

    Parameters
    ----------
    path
        Xenium output folder: ``experiment.xenium``, ``cell_feature_matrix.h5``, ``cells.parquet``,
        ``cells.zarr.zip``.
    bin_size_um
        Side of the square bins in µm (default 55, a Visium spot).
    he_image
        Post-Xenium H&E: an (OME-)TIFF (read lazily), a PNG/JPEG, or an ``(y, x, 3)`` uint8 array.
        When ``None`` but spatialdata-io loaded an aligned ``"he_image"`` (``aligned_images=True`` and
        10x's ``*_he_image.ome.tif`` + ``*_he_imagealignment.csv`` in ``path``), that image is used.
    he_alignment
        10x's ``*_he_imagealignment.csv`` (from Xenium Explorer) or a 3x3 array: the affine that maps H&E
        pixel ``(x, y, 1)`` to Xenium morphology pixels (10x's documented direction; multiply by
        ``pixel_size`` for µm). ``None`` with ``he_image``: the only ``*he_imagealignment.csv`` in ``path``;
        an error when there is none (pass ``np.eye(3)`` for an H&E already in morphology pixels).
    library_id
        Section name (``uns['spatial']`` key). Default: the folder name.
    keep_source
        Keep the cell-level table as ``"cell_table"`` annotating spatialdata-io's ``"cell_circles"`` (its
        ``obsm['spatial']`` stays in µm, as spatialdata-io writes it).
    source
        What is binned: ``"cells"`` (cell counts at their centroids) or ``"transcripts"`` (each decoded
        transcript at its own position; needs ``transcripts.parquet``; transcripts of cells cut by a bin
        border are split between bins, which pseudo-spots of real Visium spots also do). Transcripts are
        streamed in Arrow batches of ~1 M rows, reading only ``feature_name`` (dictionary-encoded),
        ``x_location``, ``y_location`` and ``qv``: memory follows the batch and the number of non-zero
        (square, gene) pairs, not the number of transcripts (measured: 100 M transcripts in
        ``benchmarks/results/scale_xenium.md``). The cell table is still read by spatialdata-io (for ``var``
        and ``n_cells``).
    min_qv
        Lowest transcript quality (Phred ``qv``) kept with ``source="transcripts"`` (10x's default 20).
    {progress_bar}
        (A bar over the transcripts read with ``source="transcripts"``.)
    table_key
        Key of the binned table.
    **kwargs
        Passed to :func:`spatialdata_io.xenium`. Defaults set here (only the cell table is needed):
        ``cells_boundaries``, ``nucleus_boundaries``, ``cells_labels``, ``nucleus_labels``, ``transcripts``,
        ``morphology_mip``, ``morphology_focus``, ``aligned_images`` all ``False``;
        ``cells_as_circles=keep_source``. ``transcripts=True`` adds spatialdata-io's points element: a lazy
        dask frame (spatialdata-io passes over ``feature_name`` once for its categories), never the one
        binned here, which streams the file itself.

    Returns
    -------
    :class:`~spatialdata.SpatialData` with

    - image ``"he_image"`` (with an H&E; identity to ``"global"``, multiscale when large) and whatever else
      was requested from spatialdata-io through ``kwargs``;
    - shapes ``"square_XXXum"`` (``XXX`` = ``bin_size_um``): one circle per non-empty bin, radius half the bin
      side in global px;
    - table ``table_key`` annotating them (``obs['region']``, ``obs['spot_id']``), with

      - ``X``: summed raw counts (gene-expression features unless ``gex_only=False``), float32 CSR;
        ``var`` as the cell matrix's (unique gene symbols, ``gene_ids``, ``feature_types``, ``genome``);
      - ``obs['array_row']``, ``obs['array_col']``: bin indices ``floor(y / bin)``, ``floor(x / bin)`` (µm);
        ``obs['n_cells']`` (cells summed) or ``obs['n_transcripts']`` (transcripts summed);
      - ``obsm['spatial']``: bin centres ``(x, y)`` in H&E px (with an H&E) or morphology px (without);
      - ``uns['spatial'][library_id]``: ``images['hires']`` and ``scalefactors['tissue_hires_scalef']``
        (with an H&E), ``scalefactors['spot_diameter_fullres']`` (bin side in global px) and ``metadata``
        (``platform='xenium'``, ``image_key`` (with an H&E), ``spots_key``, ``library_id``, ``bin_size_um``,
        ``pixel_size_um``, ``n_cells``, ``source`` (and, for transcripts, ``n_transcripts`` kept,
        ``n_transcripts_dropped`` in all: ``n_transcripts_low_qv`` gene transcripts with ``qv < min_qv``,
        ``n_transcripts_control`` control probes and codewords (``NegControlProbe_*``, ``NegControlCodeword_*``,
        ``UnassignedCodeword_*``, ``BLANK_*``, ``DeprecatedCodeword_*``, ``Intergenic_Region_*``),
        ``n_transcripts_other_feature`` any other feature that is no gene of the cell matrix; and ``min_qv``),
        ``global_frame`` (``'he_pixels'`` or ``'morphology_pixels'``),
        ``he_to_morphology`` (3x3, with an H&E), ``analysis_sw_version``).

    Raises
    ------
    FileNotFoundError
        The folder, ``experiment.xenium``, ``cell_feature_matrix.h5``, ``cells.parquet``, ``cells.zarr.zip``,
        ``he_image``, ``he_alignment`` or (``source="transcripts"``) ``transcripts.parquet`` is missing (the
        message names it).
    TypeError
        ``path`` is not a str / os.PathLike; ``bin_size_um`` / ``min_qv`` not a number.
    ValueError
        An H&E without an alignment (none given, none or several ``*he_imagealignment.csv`` in ``path``);
        a malformed alignment matrix (or one with NaN / infinite values); a missing ``pixel_size`` or one that
        is not a positive finite number; ``bin_size_um`` NaN, infinite or not positive; ``min_qv`` NaN; an
        unknown ``source``. Checked before the read, naming the file: ``experiment.xenium`` not JSON,
        ``cell_feature_matrix.h5`` not HDF5, ``cells.parquet`` / ``transcripts.parquet`` not Parquet or
        lacking columns, ``cells.zarr.zip`` not a zip, an H&E that is not a readable image. After the read:
        NaN / infinite cell centroids or transcript positions (naming the rows), no transcript kept, positions
        more than 524 288 squares from the origin.
    """
    import spatialdata_io
    from spatialdata.transformations import Affine, Identity, Sequence, get_transformation, set_transformation

    path = _check_path(path, "Xenium", kind="dir")
    specs_file = _check_path(path / "experiment.xenium", "Xenium specification file")
    matrix_file = _check_path(
        path / "cell_feature_matrix.h5",
        "Cell count matrix",
        hint="spatialdata-io reads the HDF5 matrix (the 'cell_feature_matrix/' MEX folder alone is not enough).",
    )
    cells_file = _check_path(path / "cells.parquet", "Cell table")
    zip_file = _check_path(
        path / "cells.zarr.zip", "Cell zarr archive", hint="spatialdata-io 0.7.1 opens it even for the table only."
    )
    bin_size_um = _number(bin_size_um, "bin_size_um")
    specs = _read_json(specs_file, "Xenium specification file")
    if "pixel_size" not in specs:
        raise ValueError(f"{str(specs_file)!r} has no 'pixel_size' (µm per morphology pixel).")
    pixel_size = _number(specs["pixel_size"], "pixel_size", where=str(specs_file))
    _check_hdf5(matrix_file, "Cell count matrix")
    _check_parquet(cells_file, "Cell table", ["cell_id", "x_centroid", "y_centroid"])
    _check_zip(zip_file, "Cell zarr archive")
    he_arr = None
    if he_image is not None:
        he_arr = he_image if isinstance(he_image, np.ndarray) else _read_he_lazy(he_image)
    if he_alignment is not None and he_image is None and not kwargs.get("aligned_images", False):
        raise ValueError("`he_alignment` was given without `he_image`.")
    if he_image is not None and he_alignment is None:
        he_alignment = _find_alignment(path)
    M = _read_alignment(he_alignment) if he_alignment is not None else None
    if source not in ("cells", "transcripts"):
        raise ValueError(f"source must be 'cells' or 'transcripts'; got {source!r}.")
    if source == "transcripts":
        tx_file = _check_path(path / _TRANSCRIPTS, "Transcripts file", hint="Needed for source='transcripts'.")
        _check_parquet(tx_file, "Transcripts file", list(_TX_COLUMNS))
        min_qv = _number(min_qv, "min_qv", positive=False)

    progress_bar = settings.progress_bar if progress_bar is None else bool(progress_bar)
    library_id = _valid_name(library_id) if library_id is not None else _default_library_id(path)
    for key in (
        "cells_boundaries",
        "nucleus_boundaries",
        "cells_labels",
        "nucleus_labels",
        "transcripts",
        "morphology_mip",
        "morphology_focus",
        "aligned_images",
    ):
        kwargs.setdefault(key, False)
    kwargs.setdefault("cells_as_circles", keep_source)

    logger.info("Reading Xenium section %r from %s (cell table through spatialdata-io).", library_id, path)
    with _quiet_reader():
        sdata = spatialdata_io.xenium(path, **kwargs)
    cells = sdata.tables[TABLE_KEY]
    logger.info("Read %s cells x %s features.", f"{cells.n_obs:,}", f"{cells.n_vars:,}")
    if not cells.var_names.is_unique:  # spatialdata-io 0.7.1 does not make Xenium gene names unique
        cells.var_names_make_unique()
    if cells.n_obs == 0:
        raise ValueError(f"The Xenium cell matrix of {str(path)!r} has no cells.")
    xy_um = np.asarray(cells.obsm[SPATIAL_KEY], dtype=float)
    if source == "cells":
        _check_finite_xy(xy_um, f"cell centroids in {str(cells_file)!r}", list(cells.obs_names))

    # the "global" frame: H&E pixels when an H&E is given / was loaded, else morphology pixels
    if he_arr is None and XENIUM_HE_KEY in sdata.images and he_image is None:
        loaded = get_transformation(sdata.images[XENIUM_HE_KEY], GLOBAL_CS)
        M = np.asarray(loaded.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
        he_present = True
    else:
        he_present = he_arr is not None
    morph_to_global = np.linalg.inv(M) if he_present else np.eye(3)

    tx = None
    if source == "transcripts":
        tx = _transcript_grid(
            tx_file, cells.var_names, min_qv=min_qv, bin_size_um=bin_size_um, progress_bar=progress_bar
        )
        X, rows, cols, n_members, member_name = tx.X, tx.rows, tx.cols, tx.n_transcripts, "n_transcripts"
    else:
        X, rows, cols, G = _sum_by_grid(
            cells.X, np.floor(xy_um[:, 1] / bin_size_um), np.floor(xy_um[:, 0] / bin_size_um)
        )
        n_members, member_name = np.asarray(G.sum(1)).ravel(), "n_cells"
        del G
        logger.info("Summed %s cells into %s squares of %g µm.", f"{cells.n_obs:,}", f"{len(rows):,}", bin_size_um)
    centres_um = np.column_stack([(cols + 0.5) * bin_size_um, (rows + 0.5) * bin_size_um])
    centres = _apply_affine(morph_to_global, centres_um / pixel_size)
    side_px = bin_size_um / pixel_size * _affine_scale(morph_to_global)

    shapes_key = f"square_{_bin_label(bin_size_um)}um"
    agg = _binned_table(
        X,
        cells.var,
        rows,
        cols,
        n_members,
        centres,
        shapes_key=shapes_key,
        barcode_prefix=f"x_{_bin_label(bin_size_um)}um",
        member_name=member_name,
    )

    if he_present:
        # every spatialdata-io element lives in morphology px ("global"); H&E px become the new "global".
        to_he = Affine(morph_to_global, input_axes=("x", "y"), output_axes=("x", "y"))
        for _, name, element in list(sdata.gen_spatial_elements()):
            if name == XENIUM_HE_KEY:
                continue
            old = get_transformation(element, get_all=True).get(GLOBAL_CS)
            if old is not None:
                set_transformation(element, Sequence([old, to_he]), GLOBAL_CS)
        if he_arr is not None:
            if XENIUM_HE_KEY in sdata.images:
                logger.warning("Replacing the aligned H&E found by spatialdata-io with `he_image`.")
                del sdata.images[XENIUM_HE_KEY]
            sdata.images[XENIUM_HE_KEY] = _image_model(he_arr)
        else:
            set_transformation(sdata.images[XENIUM_HE_KEY], Identity(), GLOBAL_CS)
        h, w = _image_hw(_image_levels(sdata.images[XENIUM_HE_KEY])[0])
        n_out = int(_spots_outside(centres, side_px / 2.0, h, w).sum())
        if n_out:
            logger.warning("%d of %d bins lie outside the %d x %d px H&E.", n_out, len(centres), w, h)

    if keep_source:
        sdata.tables[XENIUM_CELL_TABLE_KEY] = cells
    _drop_table(sdata, TABLE_KEY)
    _drop_table(sdata, table_key)
    _add_circles_and_table(sdata, agg, shapes_key=shapes_key, radius=side_px / 2.0, table_key=table_key)

    meta: dict[str, Any] = {
        "bin_size_um": float(bin_size_um),
        "pixel_size_um": pixel_size,
        "n_cells": int(cells.n_obs),
        "source": source,
        "global_frame": "he_pixels" if he_present else "morphology_pixels",
        "analysis_sw_version": str(specs.get("analysis_sw_version", "")),
    }
    if tx is not None:
        meta["n_transcripts"] = tx.n_kept
        meta["n_transcripts_dropped"] = tx.n_read - tx.n_kept
        meta["n_transcripts_low_qv"] = tx.n_low_qv
        meta["n_transcripts_control"] = tx.n_control
        meta["n_transcripts_other_feature"] = tx.n_other
        meta["min_qv"] = float(min_qv)
    if he_present:
        meta["he_to_morphology"] = np.asarray(M, dtype=float)
    return _finish(
        sdata,
        table_key=table_key,
        library_id=library_id,
        spot_diameter_px=side_px,
        image_key=XENIUM_HE_KEY if he_present else None,
        platform="xenium",
        metadata=meta,
    )
