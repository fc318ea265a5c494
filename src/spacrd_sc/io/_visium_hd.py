"""Reader for 10x Visium HD (Space Ranger ≥ 3 ``outs``): bins summed into spot-sized squares.

The default path streams: bin positions are read from ``tissue_positions.parquet`` with pyarrow (only the
needed columns, barcodes matched in Arrow without Python strings) and the count matrix from the 10x HDF5 in
chunks of barcodes (its CSC ``features x barcodes`` layout makes a barcode chunk one contiguous slice of
``indices`` / ``data``); each chunk's counts are added to their squares sparsely. Neither per-bin shapes nor
a per-bin table is ever built, so memory follows the chunk and the aggregated table, not the bins.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._images import GLOBAL_CS, TIFF_SUFFIXES, _check_path, _image_model, _read_he_lazy, _read_image_file
from .._logging import logger
from .._utils import _progress
from ._checks import _check_finite_xy, _check_hdf5, _check_image, _check_parquet, _number, _read_json, _sizes
from ._tenx import (
    _SCALEFACTORS,
    _VISIUM_COUNTS,
    DEFAULT_BIN_UM,
    _add_circles_and_table,
    _bin_label,
    _binned_table,
    _counts_csr32,
    _default_library_id,
    _drop_element,
    _drop_table,
    _finish,
    _first_image,
    _grid_cells,
    _lazy_fullres,
    _quiet_reader,
    _sum_by_grid,
    _valid_name,
)

if TYPE_CHECKING:
    import pandas as pd
    from spatialdata import SpatialData


#: Columns of a bin ``tissue_positions.parquet``, in the order spatialdata-io 0.7.1 requires.
_HD_POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)
#: Keyword arguments the streaming reader understands; any other one is spatialdata-io's (in-memory path).
_STREAM_KWARGS = frozenset({"bin_size", "filtered_counts_file", "fullres_image_file", "gex_only"})
#: Barcodes (bins) per chunk of the streamed count matrix (~5 M non-zeros at 5 UMIs per bin: ~60 MiB read).
_CHUNK_BINS = 1 << 20
#: Above this many source bins the in-memory (spatialdata-io) path warns: it builds a table and shapes per bin.
_IN_MEMORY_WARN_BINS = 2_000_000
_IMAGE_SUFFIXES = {*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg"}


def _check_feature_slice(file: Path) -> None:
    """``feature_slice.h5`` is HDF5 with the run metadata spatialdata-io parses (``metadata_json``)."""
    import h5py

    _check_hdf5(file, "Visium HD feature slice", matrix=False)
    with h5py.File(file, "r") as f:
        meta = f.attrs.get("metadata_json")
    try:
        doc = json.loads(meta) if meta is not None else None
        layout = json.loads(doc["hd_layout_json"]) if isinstance(doc, dict) and "hd_layout_json" in doc else None
    except (ValueError, TypeError):
        layout = None
    if not isinstance(layout, dict):
        raise ValueError(
            f"Visium HD feature slice {str(file)!r} lacks a readable 'metadata_json' attribute with 'hd_layout_json'."
        )


def _check_scalefactors(path: Path, bin_file: Path, src_um: int) -> dict[str, float]:
    """Positive finite sizes in the section's and the bins' ``scalefactors_json.json``; the bins' sizes agree."""
    top = path / "spatial" / _SCALEFACTORS
    if top.is_file():
        _sizes(_read_json(top, "Scale factors file"), ("tissue_hires_scalef", "tissue_lowres_scalef"), top)
    sf = _read_json(bin_file, "Scale factors file")
    sizes = _sizes(
        sf,
        ("spot_diameter_fullres", "tissue_hires_scalef", "tissue_lowres_scalef"),
        bin_file,
        optional=("bin_size_um", "microns_per_pixel"),
    )
    if "bin_size_um" in sizes and not np.isclose(sizes["bin_size_um"], src_um):
        raise ValueError(
            f"{str(bin_file)!r} gives bin_size_um={sizes['bin_size_um']:g} for the {src_um} µm bin folder."
        )
    if {"bin_size_um", "microns_per_pixel"} <= sizes.keys() and not np.isclose(
        sizes["bin_size_um"] / sizes["spot_diameter_fullres"], sizes["microns_per_pixel"]
    ):
        raise ValueError(
            f"{str(bin_file)!r} is inconsistent: bin_size_um / spot_diameter_fullres = "
            f"{sizes['bin_size_um'] / sizes['spot_diameter_fullres']:g} µm/px but microns_per_pixel = "
            f"{sizes['microns_per_pixel']:g}."
        )
    return sizes


def _hd_bins_folder(path: Path) -> Path:
    if (path / "binned_outputs").is_dir():
        return path / "binned_outputs"
    return path


def _hd_available_bins(bins_dir: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for d in bins_dir.iterdir() if bins_dir.is_dir() else []:
        m = re.fullmatch(r"square_(\d{3})um", d.name)
        if d.is_dir() and m:
            out[int(m.group(1))] = d
    return out


def _hd_complete_bins(bins: dict[int, Path], counts_name: str) -> list[int]:
    """Bin sizes whose folder holds the count matrix, the positions and the scale factors."""
    need = (counts_name, "spatial/tissue_positions.parquet", f"spatial/{_SCALEFACTORS}")
    return sorted(um for um, d in bins.items() if all((d / n).is_file() for n in need))


def _choose_source(bins: dict[int, Path], counts_name: str, bin_size_um: float, requested: Any) -> tuple[int, int, str]:
    """``(source bin size, bins per side k, why)``: the coarsest complete output that tiles the squares.

    The square side is fixed by the finest bins (``k0 = round(bin_size_um / finest)``, side ``k0 * finest``),
    so the squares do not depend on which outputs are present; a coarser output is used when its bins tile
    that side exactly (10x bins are aligned to array index 0, as the squares are).
    """
    if isinstance(requested, list | tuple):
        requested = min(requested) if requested else None
    if requested is not None:
        src = int(requested)
        if src not in bins:
            raise FileNotFoundError(f"Bin folder 'square_{src:03d}um' not found (available: {sorted(bins)} µm).")
        if bin_size_um < src:
            raise ValueError(f"bin_size_um={bin_size_um} is smaller than the source bins ({src} µm).")
        return src, max(1, int(round(bin_size_um / src))), f"bin_size={src} given"
    finest = min(bins)
    if bin_size_um < finest:
        raise ValueError(f"bin_size_um={bin_size_um} is smaller than the source bins ({finest} µm).")
    side = max(1, int(round(bin_size_um / finest))) * finest
    tiling = [um for um in _hd_complete_bins(bins, counts_name) if side % um == 0]
    if not tiling or max(tiling) == finest:
        return finest, side // finest, f"finest bins ({finest} µm): no coarser output tiles {side} µm squares"
    src = max(tiling)
    return src, side // src, f"coarsest output that tiles {side} µm squares (available: {sorted(bins)} µm)"


def _arrow_bytes(arr: np.ndarray) -> Any:
    """Fixed-width bytes (h5py ``S``) as an Arrow ``binary`` array, without Python string objects."""
    import pyarrow as pa

    arr = np.ascontiguousarray(arr)
    n, width = len(arr), max(arr.dtype.itemsize, 1)
    raw = arr.view(np.uint8).reshape(n, width) if arr.dtype.itemsize else np.zeros((n, 1), np.uint8)
    if n and raw[:, -1].all():  # every barcode fills the width (Space Ranger's): the buffer is the array
        lengths = np.full(n, width, dtype=np.int64)
        data = raw.ravel()
    else:  # h5py pads shorter strings with NULs
        nonzero = raw != 0
        lengths = np.where(nonzero.any(axis=1), width - np.argmax(nonzero[:, ::-1], axis=1), 0)
        data = raw[np.arange(width) < lengths[:, None]]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


class _DecodedNames(Sequence):
    """h5py barcodes (bytes) decoded on access: error messages name a few of millions of bins."""

    def __init__(self, barcodes: np.ndarray) -> None:
        self.barcodes = barcodes

    def __len__(self) -> int:
        return len(self.barcodes)

    def __getitem__(self, i: Any) -> Any:
        return self.barcodes[i].decode(errors="replace")


@dataclass
class _Bins:
    """The source bins of the count matrix, in matrix order: position, tissue flag, names (lazy)."""

    row: np.ndarray
    col: np.ndarray
    xy: np.ndarray  # (x, y) full-resolution px
    in_tissue: np.ndarray  # bool
    names: Sequence[Any]


def _read_bin_positions(file: Path, barcodes: np.ndarray, matrix_file: Path) -> _Bins:
    """Positions of the matrix's ``barcodes`` (h5py bytes) from ``tissue_positions.parquet``.

    Only the six columns are read; barcodes are matched by one Arrow hash lookup (no Python strings).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(file, columns=list(_HD_POSITION_COLUMNS))
    found = pc.index_in(_arrow_bytes(barcodes), value_set=table.column("barcode").cast(pa.binary()))
    if found.null_count:
        missing = np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))
        shown = ", ".join(barcodes[i].decode(errors="replace") for i in missing[:5])
        raise ValueError(
            f"{found.null_count} of {len(barcodes)} barcodes of {str(matrix_file)!r} are not in {str(file)!r} "
            f"(e.g. {shown})."
        )
    index = found.to_numpy().astype(np.int64)
    del found

    out: dict[str, np.ndarray] = {}
    for name in _HD_POSITION_COLUMNS[1:]:
        col = table.column(name)
        if name.startswith("pxl"):  # missing pixel centres: NaN, refused with the non-finite ones
            out[name] = col.to_numpy().astype(np.float64, copy=False)[index]
            continue
        if col.null_count:
            raise ValueError(f"Bin positions file {str(file)!r} has {col.null_count} missing values in {name!r}.")
        out[name] = col.to_numpy()[index]
    del table
    pa.default_memory_pool().release_unused()  # the table and the hash table: give the pages back
    return _Bins(
        row=out["array_row"].astype(np.int64, copy=False),
        col=out["array_col"].astype(np.int64, copy=False),
        xy=np.column_stack([out["pxl_col_in_fullres"], out["pxl_row_in_fullres"]]),
        in_tissue=out["in_tissue"] == 1,
        names=_DecodedNames(barcodes),
    )


def _read_features(f: Any, gex_only: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """``var`` as :func:`scanpy.read_10x_h5` builds it (v3 matrix) and the kept feature indices."""
    import h5py
    import pandas as pd

    feats = f["matrix"]["features"]
    data = {k: v[()] for k, v in feats.items() if isinstance(v, h5py.Dataset)}
    var: dict[str, Any] = {}
    if "gene_id" not in data:
        var["gene_ids"] = data["id"].astype(str)
    else:
        var.update(gene_ids=data["gene_id"].astype(str), probe_ids=data["id"].astype(str))
    var["feature_types"] = data["feature_type"].astype(str)
    var.update(
        (k, v.astype(bool if v.dtype.kind == "b" else str))
        for k, v in data.items()
        if k not in ("name", "feature_type", "id", "gene_id", "_all_tag_keys")
    )
    out = pd.DataFrame(var, index=pd.Index(data["name"].astype(str)))
    keep = np.arange(len(out))
    if gex_only:
        keep = np.flatnonzero(out["feature_types"].to_numpy() == "Gene Expression")
        out = out.iloc[keep]
    if not out.index.is_unique:
        from anndata.utils import make_index_unique

        out.index = make_index_unique(out.index)  # as spatialdata-io's var_names_make_unique
    return out, keep


def _check_v3_matrix(file: Path) -> tuple[int, int]:
    """``(features, barcodes)`` of a 10x v3 matrix (``matrix/features`` present), else a :class:`ValueError`."""
    import h5py

    with h5py.File(file, "r") as f:
        ok = (
            "matrix" in f
            and "features" in f["matrix"]
            and all(k in f["matrix"]["features"] for k in ("id", "name", "feature_type"))
        )
        if not ok:
            raise ValueError(
                f"Count matrix {str(file)!r} is not a Space Ranger >= 3 matrix (no 'matrix/features' group with "
                "'id', 'name', 'feature_type')."
            )
        n_features, n_barcodes = (int(v) for v in f["matrix"]["shape"][()])
        if len(f["matrix"]["indptr"]) != n_barcodes + 1 or len(f["matrix"]["barcodes"]) != n_barcodes:
            raise ValueError(
                f"Count matrix {str(file)!r} is inconsistent: shape {n_features} x {n_barcodes} but "
                f"{len(f['matrix']['barcodes'])} barcodes and {len(f['matrix']['indptr'])} indptr entries."
            )
    return n_features, n_barcodes


def _stream_counts(
    file: Path,
    square: np.ndarray,
    n_squares: int,
    features: np.ndarray,
    n_features: int,
    *,
    chunk: int,
    progress_bar: bool,
) -> tuple[sparse.csr_matrix, float, float]:
    """Sum the matrix's barcodes into squares, ``chunk`` barcodes at a time.

    ``square[j]``: the square of barcode ``j`` (``-1``: dropped); ``features``: the kept feature indices.
    Returns the float32 CSR ``squares x kept features``, the counts summed and the counts dropped.
    """
    import h5py

    fmap = np.full(n_features, -1, dtype=np.int64)
    fmap[features] = np.arange(len(features))
    all_features = len(features) == n_features
    acc = sparse.csr_matrix((n_squares, len(features)), dtype=np.int64)
    kept = dropped = 0
    with h5py.File(file, "r") as f:
        m = f["matrix"]
        indptr = m["indptr"][()].astype(np.int64)
        n = len(indptr) - 1
        bar = _progress(total=n, desc="Visium HD bins", unit="bin", unit_scale=True, disable=not progress_bar)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            lo, hi = int(indptr[a]), int(indptr[b])
            genes = m["indices"][lo:hi].astype(np.int64, copy=False)
            values = m["data"][lo:hi].astype(np.int64, copy=False)
            sq = np.repeat(square[a:b], np.diff(indptr[a : b + 1]))
            if not all_features:
                genes = fmap[genes]
            ok = (sq >= 0) & (genes >= 0)
            dropped += int(values[(sq < 0) & (genes >= 0)].sum())  # out-of-tissue counts of the kept features
            if not ok.all():
                sq, genes, values = sq[ok], genes[ok], values[ok]
            kept += int(values.sum())
            part = sparse.csr_matrix((values, (sq, genes)), shape=acc.shape)
            acc = acc + part  # both canonical: a linear merge
            bar.update(b - a)
        bar.close()
    return _counts_csr32(acc), float(kept), float(dropped)


def _square_centres(
    bins: _Bins, keep: np.ndarray, inverse: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_bins, centres)`` of the squares of the kept bins.

    The mean of the member bins' pixel centres is exact for full squares; for squares cut by the tissue edge
    it is shifted, so it is moved by the affine array→pixel map (least squares on all kept bins) from the
    members' mean array index to the square's centre index. Local, so robust to a slightly projective
    array→pixel relation over the whole slide.
    """
    n = np.bincount(inverse, minlength=len(rows))
    xy = bins.xy[keep]
    arr = np.column_stack([bins.col[keep], bins.row[keep]]).astype(np.float64)
    design = np.column_stack([arr, np.ones(len(arr))])
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    lin = coef[:2].T  # pixel = lin @ (col, row) + t
    del design

    def mean(values: np.ndarray) -> np.ndarray:
        return np.column_stack([np.bincount(inverse, weights=v, minlength=len(rows)) for v in values.T]) / n[:, None]

    centre_arr = np.column_stack([cols * k + (k - 1) / 2.0, rows * k + (k - 1) / 2.0])
    return n, mean(xy) + (centre_arr - mean(arr)) @ lin.T


def _check_bins(bins: _Bins, keep: np.ndarray, positions_file: Path, matrix_file: Path, src_um: int) -> None:
    """Finite centres and array indices; at least three in-tissue bins off one line (for the affine fit)."""
    names = bins.names
    _check_finite_xy(bins.xy, f"bin pixel centres in {str(positions_file)!r}", names)
    n = int(keep.sum())
    if n == 0:
        raise ValueError(f"The {src_um} µm count matrix {str(matrix_file)!r} has no in-tissue bins.")
    arr = np.column_stack([bins.col[keep], bins.row[keep]]).astype(np.float64)
    if n < 3 or np.linalg.matrix_rank(np.cov(arr.T)) < 2:
        # the array -> pixel affine needs three bins not on one line; fewer would place squares anywhere
        raise ValueError(
            f"The {src_um} µm count matrix {str(matrix_file)!r} has {n} in-tissue bin(s) on a single line of the "
            "array: three bins not on one line are needed to place the aggregated squares."
        )


def _hd_images(path: Path, dataset_id: str, fullres: Path | None, sf_file: Path) -> dict[str, Any]:
    """The images spatialdata-io's ``visium_hd`` reads, with the same names and transformations.

    ``<id>_full_image`` (the microscope image; a TIFF read window by window), ``<id>_hires_image`` and
    ``<id>_lowres_image`` (Space Ranger's PNGs, scaled to full-resolution px by ``tissue_*_scalef``).
    """
    from spatialdata.transformations import Identity, Scale

    images: dict[str, Any] = {}
    if fullres is not None:
        tiff = fullres.name.lower().endswith(TIFF_SUFFIXES)
        images[f"{dataset_id}_full_image"] = _image_model(
            _read_he_lazy(fullres), scale_factors="auto" if tiff else [2, 2, 2, 2]
        )
    top = path / "spatial" / _SCALEFACTORS
    sf = _read_json(top if top.is_file() else sf_file, "Scale factors file")
    for name in ("hires", "lowres"):
        file = path / "spatial" / f"tissue_{name}_image.png"
        if not file.is_file():
            continue
        s = 1.0 / float(sf[f"tissue_{name}_scalef"])
        images[f"{dataset_id}_{name}_image"] = _image_model(
            _read_image_file(file),
            scale_factors=None,
            transformations={
                f"{dataset_id}_downscaled_{name}": Identity(),
                GLOBAL_CS: Scale(np.array([s, s]), axes=("x", "y")),
            },
        )
    return images


_Aggregate = tuple[sparse.csr_matrix, "pd.DataFrame", np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


def _squares_of(
    bins: _Bins, k: int, positions_file: Path, matrix_file: Path, src_um: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(keep, square of each bin (-1: dropped), rows, cols, n_bins, centres)`` of the in-tissue bins."""
    keep = bins.in_tissue
    _check_bins(bins, keep, positions_file, matrix_file, src_um)
    inverse, rows, cols = _grid_cells(bins.row[keep] // k, bins.col[keep] // k)
    square = np.full(len(keep), -1, dtype=np.int64)
    square[keep] = inverse
    n, centres = _square_centres(bins, keep, inverse, rows, cols, k)
    return keep, square, rows, cols, n, centres


def _read_stream(
    matrix_file: Path, positions_file: Path, k: int, src_um: int, *, gex_only: bool, progress_bar: bool
) -> _Aggregate:
    """Squares from the count matrix streamed in chunks of :data:`_CHUNK_BINS` barcodes."""
    import h5py

    n_features, n_barcodes = _check_v3_matrix(matrix_file)
    if n_barcodes == 0:
        raise ValueError(f"The {src_um} µm count matrix {str(matrix_file)!r} has no bins.")
    with h5py.File(matrix_file, "r") as f:
        barcodes = f["matrix"]["barcodes"][()]
        var, features = _read_features(f, gex_only)
        nnz = int(f["matrix"]["indptr"][-1])
        gib = nnz * (f["matrix"]["data"].dtype.itemsize + f["matrix"]["indices"].dtype.itemsize) / 2**30
    logger.info(
        "Visium HD: reading %d bins of %d µm (%d non-zeros, %.2f GiB uncompressed) from %s.",
        n_barcodes,
        src_um,
        nnz,
        gib,
        matrix_file,
    )
    bins = _read_bin_positions(positions_file, barcodes, matrix_file)
    keep, square, rows, cols, n, centres = _squares_of(bins, k, positions_file, matrix_file, src_um)
    n_assigned = int(keep.sum())
    del bins, keep, barcodes  # per-bin positions and names: only the square of each bin is needed below
    X, kept, dropped = _stream_counts(
        matrix_file,
        square,
        len(rows),
        features,
        n_features,
        chunk=_CHUNK_BINS,
        progress_bar=progress_bar,
    )
    stats = _stats(n_barcodes, n_assigned, kept, dropped)
    return X, var, rows, cols, n, centres, stats


def _stats(n_read: int, n_assigned: int, kept: float, dropped: float) -> dict[str, Any]:
    return {
        "n_bins_read": int(n_read),
        "n_bins_assigned": int(n_assigned),
        "n_bins_out_of_tissue": int(n_read - n_assigned),
        "counts_assigned": float(kept),
        "counts_out_of_tissue": float(dropped),
    }


def _read_in_memory(
    path: Path,
    matrix_file: Path,
    positions_file: Path,
    k: int,
    src_um: int,
    dataset_id: str,
    *,
    keep_source: bool,
    **kwargs: Any,
) -> tuple[SpatialData, _Aggregate]:
    """spatialdata-io reads the source bins (a table and circles per bin); the same squares are summed."""
    import spatialdata_io

    kwargs.setdefault("load_segmentations_only", False)
    kwargs.setdefault("bins_as_squares", False)
    _, n_barcodes = _check_v3_matrix(matrix_file)
    if n_barcodes > _IN_MEMORY_WARN_BINS:
        logger.warning(
            "Visium HD: spatialdata-io builds a table and a shape for each of the %d bins of %s (several GiB); "
            "without keep_source=True and spatialdata-io options the matrix is streamed instead.",
            n_barcodes,
            matrix_file,
        )
    logger.info("Reading Visium HD %d µm bins with spatialdata-io from %s.", src_um, path)
    with _quiet_reader():
        sdata = spatialdata_io.visium_hd(path, dataset_id=dataset_id, bin_size=src_um, **kwargs)
    sdata.rename_coordinate_systems({dataset_id: GLOBAL_CS})
    src_table_key = f"square_{src_um:03d}um"
    src = sdata.tables[src_table_key]
    if src.n_obs == 0:
        raise ValueError(f"The {src_um} µm count matrix {str(matrix_file)!r} has no bins.")
    bins = _Bins(
        row=src.obs["array_row"].to_numpy(np.int64),
        col=src.obs["array_col"].to_numpy(np.int64),
        xy=np.asarray(src.obsm[SPATIAL_KEY], dtype=np.float64),
        in_tissue=src.obs["in_tissue"].to_numpy() == 1,
        names=src.obs_names,
    )
    keep, _, rows, cols, n, centres = _squares_of(bins, k, positions_file, matrix_file, src_um)
    # the same squares in the same order: _sum_by_grid and _squares_of index the grid with _grid_cells
    X = _sum_by_grid(src.X[keep], bins.row[keep] // k, bins.col[keep] // k)[0]
    stats = _stats(src.n_obs, int(keep.sum()), float(X.sum(dtype=np.float64)), float(src.X[~keep].sum()))
    var = src.var
    if not keep_source:
        _drop_table(sdata, src_table_key)
        _drop_element(sdata, f"{dataset_id}_square_{src_um:03d}um")
    return sdata, (X, var, rows, cols, n, centres, stats)


def visium_hd(
    path: str | os.PathLike[str],
    *,
    bin_size_um: float = DEFAULT_BIN_UM,
    library_id: str | None = None,
    keep_source: bool = False,
    table_key: str = TABLE_KEY,
    progress_bar: bool = True,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Visium HD (Space Ranger ≥ 3 ``outs``) folder and sum its bins into spot-sized squares.

    The bins' counts are summed into squares of ``k x k`` bins on the capture-array grid, aligned to array
    index 0 as 10x's own 8 and 16 µm bins are. The square side is set by the finest bins present (2 µm):
    ``k0 = round(bin_size_um / 2)``, so 55 µm gives 28 x 28 bins = 56 µm (the size actually used is
    ``metadata['bin_size_um']``). The counts are read from the coarsest Space Ranger output that tiles that
    side exactly (e.g. ``square_008um`` for 56 µm, ``square_016um`` for 48 µm; else ``square_002um``); the
    choice and its reason are recorded in ``metadata``.

    By default the count matrix is streamed from the 10x HDF5 in chunks of bins and the bin positions are
    read with pyarrow: no per-bin table or shapes are built, so a full 6.5 mm capture area (≈ 10 M 2 µm
    bins) fits in a few GiB. With ``keep_source=True``, or any spatialdata-io option other than
    ``bin_size``, ``filtered_counts_file``, ``fullres_image_file`` and ``gex_only``,
    :func:`spatialdata_io.visium_hd` reads the source bins into memory instead (a table and a shape per bin:
    meant for small sections; a warning is logged above 2 M bins). Both paths give the same squares, counts
    and centres.

    What is summed and what is dropped: every in-tissue bin of the count matrix is assigned to exactly one
    square, so the counts of the table equal those of the in-tissue bins read. Bins with ``in_tissue == 0``
    (present in the raw matrix only, ``filtered_counts_file=False``) are dropped and reported
    (``n_bins_out_of_tissue``, ``counts_out_of_tissue``). Squares cut by the tissue or capture-area edge are
    kept with the bins they hold (``obs['n_bins'] < k²``; counted in ``n_squares_partial``). Squares made from
    a coarser output hold 10x's in-tissue coarse bins, whose tissue edge may differ by one coarse bin from
    the 2 µm one.

    Parameters
    ----------
    path
        The ``outs`` folder: ``[<id>_]feature_slice.h5``, ``spatial/`` (scale factors, hires / lowres
        images) and
        ``binned_outputs/square_XXXum/{filtered_feature_bc_matrix.h5, spatial/tissue_positions.parquet,
        spatial/scalefactors_json.json}``.
    bin_size_um
        Side of the aggregated square bins in µm (default 55, a Visium spot).
    library_id
        Section name (``uns['spatial']`` key). Default: the ``feature_slice.h5`` prefix, else the folder name.
        Elements are named by spatialdata-io's ``dataset_id``, written ``<id>`` below: the
        ``<id>_feature_slice.h5`` prefix when there is one, else ``library_id``.
    keep_source
        Keep spatialdata-io's table ``"square_XXXum"`` and shapes ``"<id>_square_XXXum"`` of the
        source bins (read in memory; dropped by default: 2 µm tables are large).
    table_key
        Key of the aggregated table.
    progress_bar
        Show a progress bar while the count matrix is read.
    **kwargs
        ``bin_size`` (source bins, µm: overrides the choice above), ``filtered_counts_file`` (default
        ``True``; ``False`` reads ``raw_feature_bc_matrix.h5``), ``fullres_image_file`` (microscope image;
        default: the file in ``microscope_image/``), ``gex_only`` (keep only ``Gene Expression`` features;
        default ``False``). Any other option is passed to :func:`spatialdata_io.visium_hd` (in-memory path;
        defaults set here: ``load_segmentations_only=False``, ``bins_as_squares=False``).

    Returns
    -------
    :class:`~spatialdata.SpatialData` with spatialdata-io's images (``"<id>_hires_image"``,
    ``"<id>_lowres_image"``, ``"<id>_full_image"`` when a microscope image was found or given), and

    - shapes ``"<id>_square_XXXum"`` (``XXX`` = aggregated size): one circle per non-empty square,
      radius half the square side in global (full-resolution) px;
    - table ``table_key`` annotating them (``obs['region']``, ``obs['spot_id']``), with

      - ``X``: summed raw counts, float32 CSR; ``var`` as the source bins' (unique gene symbols,
        ``gene_ids``, ``feature_types``, ``genome``);
      - ``obs['array_row']``, ``obs['array_col']``: square indices on the array grid; ``obs['n_bins']``:
        number of source bins summed;
      - ``obsm['spatial']``: square centres ``(x, y)`` in full-resolution px (the mean of its bins' centres,
        moved to the geometric centre of the full square with the array→pixel affine fitted on all bins);
      - ``uns['spatial'][library_id]``: ``images['hires']``, ``scalefactors`` (``tissue_hires_scalef``,
        ``spot_diameter_fullres`` = square side in px) and ``metadata``: ``platform='visium_hd'``,
        ``image_key``, ``spots_key``, ``library_id``, ``bin_size_um`` (used), ``bin_size_um_requested``,
        ``source_bin_um`` (bins read), ``source_choice`` (why), ``source_bins_available`` (µm),
        ``bins_per_side``, ``microns_per_pixel``, ``reader`` (``"stream"`` or ``"spatialdata-io"``),
        ``n_bins_read`` (barcodes of the matrix), ``n_bins_assigned`` (in-tissue bins summed),
        ``n_bins_out_of_tissue``, ``counts_assigned``, ``counts_out_of_tissue``, ``n_squares_partial``.

    Raises
    ------
    FileNotFoundError
        The folder, ``feature_slice.h5``, the ``square_XXXum`` bins or their matrix / positions / scale
        factors are missing (the message names the file; when no coarser output tiles the squares, the 2 µm
        matrix is the one needed).
    TypeError
        ``path`` is not a str / os.PathLike; ``bin_size_um`` is not a number.
    ValueError
        ``bin_size_um`` is NaN, infinite, not positive or smaller than the source bins. Checked before the
        read, naming the file: ``feature_slice.h5`` or a count matrix that is not HDF5 (or lacks its metadata /
        matrix); scale factors that are not JSON or whose sizes are not positive finite numbers or disagree
        (``bin_size_um`` vs the folder, ``bin_size_um / spot_diameter_fullres`` vs ``microns_per_pixel``); a
        positions file that is not Parquet or lacks columns; an image that is not readable. Before the counts
        are read: matrix barcodes absent from the positions; NaN / infinite bin centres; fewer than three
        in-tissue bins off one line of the array.
    """
    if "dataset_id" in kwargs:
        raise TypeError("Pass the section name as `library_id=`, not `dataset_id=`.")
    path = _check_path(path, "Visium HD", kind="dir")
    bin_size_um = _number(bin_size_um, "bin_size_um")
    slices = sorted(f.name for f in path.iterdir() if f.is_file() and f.name.endswith("feature_slice.h5"))
    if not slices:
        raise FileNotFoundError(
            f"'feature_slice.h5' (or '<library_id>_feature_slice.h5') not found in {str(path)!r}; "
            "point `path` at the Visium HD `outs` folder."
        )
    _check_feature_slice(path / slices[0])
    bins = _hd_available_bins(_hd_bins_folder(path))
    if not bins:
        raise FileNotFoundError(f"No binned outputs ('binned_outputs/square_XXXum') in {str(path)!r}.")
    fullres = kwargs.get("fullres_image_file")
    if fullres is not None:
        fullres = _check_path(fullres, "Full-resolution image")
        _check_image(fullres, "Full-resolution image")
    images = [path / "spatial" / n for n in ("tissue_hires_image.png", "tissue_lowres_image.png")]
    if fullres is None and (path / "microscope_image").is_dir():
        images += sorted((path / "microscope_image").iterdir())
    for file in images:
        if file.is_file() and file.suffix.lower() in _IMAGE_SUFFIXES:
            _check_image(file, "Image")
    counts_name = _VISIUM_COUNTS if kwargs.get("filtered_counts_file", True) else "raw_feature_bc_matrix.h5"
    try:
        src_um, k, why = _choose_source(bins, counts_name, bin_size_um, kwargs.pop("bin_size", None))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{str(err)[:-1]} in {str(path)!r}.") from None
    bin_dir = bins[src_um]
    matrix_file = _check_path(bin_dir / counts_name, "Count matrix")
    _check_hdf5(matrix_file, "Count matrix")
    positions_file = _check_path(bin_dir / "spatial" / "tissue_positions.parquet", "Bin positions file")
    _check_parquet(positions_file, "Bin positions file", _HD_POSITION_COLUMNS)
    sf_file = _check_path(bin_dir / "spatial" / _SCALEFACTORS, "Scale factors file")
    sf = _check_scalefactors(path, sf_file, src_um)
    src_side_px = sf["spot_diameter_fullres"]
    eff_um = float(k * src_um)
    if not np.isclose(eff_um, bin_size_um):
        logger.info("Visium HD: %g µm squares are %g µm (whole bins).", bin_size_um, eff_um)
    logger.info("Visium HD: %d x %d bins of %d µm per square: %s.", k, k, src_um, why)

    file_prefix = slices[0][: -len("feature_slice.h5")].rstrip("_")
    library_id = _valid_name(library_id or file_prefix or _default_library_id(path))
    # spatialdata-io finds '<dataset_id>_feature_slice.h5' by its dataset_id, which also names the elements
    dataset_id = file_prefix or library_id
    stream = not keep_source and set(kwargs) <= _STREAM_KWARGS
    if fullres is None:  # where spatialdata-io looks for the microscope image
        found = (
            sorted(f for f in (path / "microscope_image").iterdir() if f.is_file())
            if (path / "microscope_image").is_dir()
            else sorted(path.glob(f"{slices[0][: -len('feature_slice.h5')]}tissue_image.*"))
        )
        fullres = found[0] if found else None

    if stream:
        from spatialdata import SpatialData

        agg_parts = _read_stream(
            matrix_file, positions_file, k, src_um, gex_only=bool(kwargs.get("gex_only")), progress_bar=progress_bar
        )
        sdata = SpatialData(images=_hd_images(path, dataset_id, fullres, sf_file))
    else:
        sdata, agg_parts = _read_in_memory(
            path, matrix_file, positions_file, k, src_um, dataset_id, keep_source=keep_source, **kwargs
        )
        _lazy_fullres(sdata, f"{dataset_id}_full_image", fullres)
    X, var, rows, cols, n, centres, stats = agg_parts
    side_px = k * src_side_px
    label = _bin_label(eff_um)
    shapes_key = f"{dataset_id}_square_{label}um"
    agg = _binned_table(
        X, var, rows, cols, n, centres, shapes_key=shapes_key, barcode_prefix=f"s_{label}um", member_name="n_bins"
    )
    _drop_table(sdata, table_key)
    _add_circles_and_table(sdata, agg, shapes_key=shapes_key, radius=side_px / 2.0, table_key=table_key)
    stats["n_squares_partial"] = int((n < k * k).sum())
    logger.info(
        "Visium HD: %d bins read, %d in tissue summed into %d squares (%d partial); %g counts summed, %g dropped "
        "with %d out-of-tissue bins.",
        stats["n_bins_read"],
        stats["n_bins_assigned"],
        len(n),
        stats["n_squares_partial"],
        stats["counts_assigned"],
        stats["counts_out_of_tissue"],
        stats["n_bins_out_of_tissue"],
    )

    image_key = _first_image(
        sdata, [f"{dataset_id}_full_image", f"{dataset_id}_hires_image", f"{dataset_id}_lowres_image"]
    )
    if image_key is None:
        logger.warning("The Visium HD folder %s holds no image: the section is image-less.", path)
    mpp = sf.get("microns_per_pixel", src_um / src_side_px)
    return _finish(
        sdata,
        table_key=table_key,
        library_id=library_id,
        spot_diameter_px=side_px,
        image_key=image_key,
        platform="visium_hd",
        metadata={
            "bin_size_um": eff_um,
            "bin_size_um_requested": float(bin_size_um),
            "source_bin_um": float(src_um),
            "source_choice": why,
            "source_bins_available": [int(b) for b in sorted(bins)],
            "bins_per_side": k,
            "microns_per_pixel": float(mpp),
            "reader": "stream" if stream else "spatialdata-io",
            **stats,
        },
    )
