"""Readers for 10x Genomics Visium, Visium HD and Xenium outputs: thin wrappers over :mod:`spatialdata_io`.

Every reader returns a :class:`~spatialdata.SpatialData` that follows the conventions of :mod:`spacrd_sc.io`:
a table (key ``"table"``) annotating a circles shapes element, ``obsm['spatial']`` holding the spot / bin
centres ``(x, y)`` in the ``"global"`` coordinate system (the full-resolution pixel frame of the H&E used for
patches), raw counts in a float32 CSR ``X`` and scanpy's ``uns['spatial'][library_id]``.

spatialdata-io's element names are kept (e.g. ``"<id>_hires_image"``, ``<id>`` being the 10x file-name prefix,
else the ``library_id``); which elements are used is
recorded in ``uns['spatial'][library_id]['metadata']`` (``image_key``, ``spots_key``).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import INSTANCE_KEY, REGION_KEY, SPATIAL_KEY, TABLE_KEY
from .._logging import logger
from ._common import (
    GLOBAL_CS,
    _add_scanpy_spatial,
    _affine_scale,
    _apply_affine,
    _check_file,
    _image_hw,
    _image_levels,
    _image_model,
    _read_image_file,
    _spots_outside,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


#: Default side of the square bins that Visium HD and Xenium are aggregated to (a Visium spot is 55 µm wide).
DEFAULT_BIN_UM = 55.0
#: Name spatialdata-io gives to a post-Xenium H&E image element; reused for ours.
XENIUM_HE_KEY = "he_image"
#: Table key under which the cell-level Xenium table is kept with ``keep_source=True``.
XENIUM_CELL_TABLE_KEY = "cell_table"

_VISIUM_COUNTS = "filtered_feature_bc_matrix.h5"
_VISIUM_POSITIONS = ("tissue_positions_list.csv", "tissue_positions.csv")
_SCALEFACTORS = "scalefactors_json.json"


# --------------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------------
def _check_dir(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {str(p)!r}")
    return p


def _require(path: Path, what: str, hint: str = "") -> Path:
    """:class:`FileNotFoundError` naming the missing file (and what it is), before spatialdata-io runs."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}.{(' ' + hint) if hint else ''}")
    return path


def _valid_name(name: str) -> str:
    """A spatialdata element name from ``name`` (alphanumerics, ``_``, ``-``, ``.``; no leading ``__``)."""
    out = re.sub(r"[^0-9A-Za-z_.-]", "_", str(name)).lstrip("_") or "section"
    return "s" + out if out in {".", ".."} else out


def _default_library_id(path: Path) -> str:
    """Folder name, or its parent's when the folder is a pipeline's generic ``outs``."""
    name = path.resolve().name
    if name.lower() == "outs" and path.resolve().parent.name:
        name = path.resolve().parent.name
    return _valid_name(name)


def _bin_label(bin_um: float) -> str:
    """``55.0`` → ``"055"``, ``27.5`` → ``"27.5"`` (the 10x ``square_XXXum`` style)."""
    return f"{int(bin_um):03d}" if float(bin_um).is_integer() else f"{bin_um:g}"


@contextmanager
def _quiet_reader() -> Iterator[None]:
    """Silence spatialdata-io/anndata warnings that these wrappers resolve themselves."""
    with warnings.catch_warnings():
        # duplicated gene symbols: made unique by spatialdata-io right after the read
        warnings.filterwarnings("ignore", message="Variable names are not unique", category=UserWarning)
        warnings.filterwarnings("ignore", message="Converting `region_key", category=UserWarning)
        # Visium HD outs never hold the microscope image; the hires image is used instead
        warnings.filterwarnings("ignore", message="No full resolution image found", category=UserWarning)
        # Xenium: the cell table is replaced by the binned table below
        warnings.filterwarnings("ignore", message="The table is annotating", category=UserWarning)
        yield


def _counts_csr32(X: Any) -> sparse.csr_matrix:
    """Raw counts as a float32 CSR matrix."""
    X = sparse.csr_matrix(X)
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    X.sort_indices()
    return X


def _drop_table(sdata: SpatialData, key: str) -> None:
    if key in sdata.tables:
        del sdata.tables[key]


def _drop_element(sdata: SpatialData, key: str) -> None:
    if key in sdata:
        del sdata[key]


def _first_image(sdata: SpatialData, candidates: list[str]) -> str | None:
    return next((k for k in candidates if k in sdata.images), None)


def _finish(
    sdata: SpatialData,
    *,
    table_key: str,
    library_id: str,
    spot_diameter_px: float,
    image_key: str | None,
    platform: str,
    metadata: dict[str, Any],
) -> SpatialData:
    """Normalise the table (float32 CSR counts, float obsm['spatial']); write uns['spatial'][library_id]."""
    adata = sdata.tables[table_key]
    adata.X = _counts_csr32(adata.X)
    adata.obsm[SPATIAL_KEY] = np.ascontiguousarray(np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64))
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    adata.uns[SPATIAL_KEY] = {}
    _add_scanpy_spatial(
        sdata,
        table_key=table_key,
        library_id=library_id,
        spot_diameter_px=float(spot_diameter_px),
        image_key=image_key,
        platform=platform,
        metadata={"library_id": library_id, **metadata},
    )
    return sdata


def _sum_by_grid(
    X: Any, row: np.ndarray, col: np.ndarray
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray, sparse.csr_matrix]:
    """Sum the rows of ``X`` that share an integer grid cell ``(row, col)``.

    Returns the summed float32 CSR counts (one row per occupied cell, row-major order), the cell rows and
    columns, and the (cells x observations) 0/1 membership matrix.

    Why not :func:`spatialdata.aggregate`: it assigns values to shapes by a geometric join, which for millions
    of 2 µm bins (or cells) against square polygons is slow and ambiguous on shared borders; here every bin /
    cell already has an exact integer grid index, so one sparse product ``G @ X`` is exact and O(nnz).
    :func:`spatialdata.rasterize_bins` rasterises bins into an image and does not coarsen them.
    """
    row = np.asarray(row, dtype=np.int64)
    col = np.asarray(col, dtype=np.int64)
    r0, c0 = int(row.min()), int(col.min())
    width = int(col.max()) - c0 + 1
    key = (row - r0) * width + (col - c0)
    uniq, inverse = np.unique(key, return_inverse=True)
    n = len(key)
    G = sparse.csr_matrix((np.ones(n, dtype=np.float32), (inverse.ravel(), np.arange(n))), shape=(len(uniq), n))
    summed = _counts_csr32(G @ _counts_csr32(X))
    return summed, uniq // width + r0, uniq % width + c0, G


def _binned_table(
    X: sparse.csr_matrix,
    var: pd.DataFrame,
    rows: np.ndarray,
    cols: np.ndarray,
    n_members: np.ndarray,
    centres: np.ndarray,
    *,
    shapes_key: str,
    barcode_prefix: str,
    member_name: str,
) -> AnnData:
    from anndata import AnnData

    obs = pd.DataFrame(
        {
            "array_row": rows.astype(np.int64),
            "array_col": cols.astype(np.int64),
            member_name: n_members.astype(np.int64),
            INSTANCE_KEY: np.arange(len(rows), dtype=np.int64),
            REGION_KEY: pd.Categorical([shapes_key] * len(rows)),
        },
        index=pd.Index([f"{barcode_prefix}_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]),
    )
    adata = AnnData(X=X, obs=obs, var=var.copy())
    adata.obsm[SPATIAL_KEY] = np.asarray(centres, dtype=np.float64)
    return adata


def _add_circles_and_table(
    sdata: SpatialData,
    adata: AnnData,
    *,
    shapes_key: str,
    radius: float,
    table_key: str,
) -> None:
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    circles = ShapesModel.parse(
        adata.obsm[SPATIAL_KEY],
        geometry=0,
        radius=np.full(adata.n_obs, float(radius)),
        index=pd.Index(adata.obs[INSTANCE_KEY].to_numpy()),
        transformations={GLOBAL_CS: Identity()},
    )
    sdata.shapes[shapes_key] = circles
    sdata.tables[table_key] = TableModel.parse(
        adata, region=shapes_key, region_key=REGION_KEY, instance_key=INSTANCE_KEY
    )


# --------------------------------------------------------------------------------------------------------
# Visium
# --------------------------------------------------------------------------------------------------------
def _visium_counts_file(path: Path, counts_file: str, library_id: str | None) -> str:
    names = sorted(f for f in os.listdir(path) if f.endswith(counts_file) and (path / f).is_file())
    if not names:
        raise FileNotFoundError(
            f"Count matrix not found: no '{counts_file}' or '<library_id>_{counts_file}' in {str(path)!r}. "
            "Point `path` at Space Ranger's `outs` folder (or pass `counts_file=`)."
        )
    if library_id is not None and f"{library_id}_{counts_file}" in names:
        return f"{library_id}_{counts_file}"
    return names[0]


def _h5_library_id(file: Path) -> str | None:
    import h5py

    try:
        with h5py.File(file, "r") as f:
            ids = f.attrs.get("library_ids")
    except OSError:
        return None
    if ids is None or len(np.atleast_1d(ids)) == 0:
        return None
    lid = np.atleast_1d(ids)[0]
    return lid.decode("utf-8") if isinstance(lid, bytes) else str(lid)


def visium(
    path: str | os.PathLike[str],
    *,
    library_id: str | None = None,
    fullres_image_file: str | os.PathLike[str] | None = None,
    table_key: str = TABLE_KEY,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Visium (Space Ranger ``outs``) folder.

    A thin wrapper over :func:`spatialdata_io.visium` that checks the files first, puts the spots in the
    ``"global"`` coordinate system (Space Ranger's full-resolution pixels, as scanpy and spatialdata-io do)
    and adds what :mod:`spacrd_sc` and squidpy need.

    Parameters
    ----------
    path
        The ``outs`` folder: ``[<library_id>_]filtered_feature_bc_matrix.h5`` and ``spatial/`` with
        ``tissue_positions_list.csv`` (Space Ranger 1) or ``tissue_positions.csv`` (≥ 2),
        ``scalefactors_json.json``, ``tissue_hires_image.png`` and ``tissue_lowres_image.png``.
    library_id
        Section name (``uns['spatial']`` key). Default: the counts-file prefix, else the ``library_ids``
        attribute of the matrix, else the folder name. Elements are named by spatialdata-io's ``dataset_id``,
        written ``<id>`` below: the counts-file prefix when there is one, else ``library_id``.
    fullres_image_file
        The full-resolution H&E given to Space Ranger (path, absolute or relative to ``path``). When given it
        is the patch image; otherwise the hires image is (at ``tissue_hires_scalef`` of full resolution).
    table_key
        Key of the table in the returned object.
    **kwargs
        Passed to :func:`spatialdata_io.visium` (e.g. ``counts_file``, ``tissue_positions_file``,
        ``scalefactors_file``, ``imread_kwargs``, ``image_models_kwargs``).

    Returns
    -------
    :class:`~spatialdata.SpatialData` with spatialdata-io's elements:

    - images ``"<id>_hires_image"``, ``"<id>_lowres_image"`` (where present) and ``"<id>_full_image"``
      (with ``fullres_image_file``), scaled into ``"global"``;
    - shapes ``"<id>"``: one circle per spot, radius ``spot_diameter_fullres / 2`` (global px);
    - table ``table_key`` annotating it (``obs['region']``, ``obs['spot_id']``), with

      - ``X``: raw UMI counts, float32 CSR; ``var_names`` gene symbols made unique, ``var['gene_ids']``,
        ``var['feature_types']``, ``var['genome']``;
      - ``obs['in_tissue']``, ``obs['array_row']``, ``obs['array_col']``;
      - ``obsm['spatial']``: spot centres ``(x, y)`` in full-resolution pixels (float64);
      - ``uns['spatial'][library_id]``: ``images['hires']`` (a ≤ 2000 px copy of the patch image),
        ``scalefactors['tissue_hires_scalef']``, ``scalefactors['spot_diameter_fullres']`` and
        ``metadata`` (``platform='visium'``, ``image_key``, ``spots_key``, ``library_id``, Space Ranger's
        ``software_version`` / ``chemistry_description`` where present).

    Raises
    ------
    FileNotFoundError
        The folder, the count matrix, the positions file, the scale factors or ``fullres_image_file`` is
        missing (the message names it).
    """
    import spatialdata_io

    if "dataset_id" in kwargs:
        raise TypeError("Pass the section name as `library_id=`, not `dataset_id=`.")
    path = _check_dir(path, "Visium")
    counts_file = str(kwargs.get("counts_file", _VISIUM_COUNTS))
    counts_name = _visium_counts_file(path, counts_file, library_id)

    tp = kwargs.get("tissue_positions_file")
    if tp is not None:
        _require(path / tp, "Spot positions file")
    elif not any((path / "spatial" / n).is_file() for n in _VISIUM_POSITIONS):
        raise FileNotFoundError(
            f"Spot positions file not found: neither 'spatial/{_VISIUM_POSITIONS[0]}' nor "
            f"'spatial/{_VISIUM_POSITIONS[1]}' in {str(path)!r}."
        )
    sf_file = _require(path / kwargs.get("scalefactors_file", Path("spatial") / _SCALEFACTORS), "Scale factors file")
    scalefactors = json.loads(sf_file.read_text())
    missing = [
        k for k in ("spot_diameter_fullres", "tissue_hires_scalef", "tissue_lowres_scalef") if k not in scalefactors
    ]
    if missing:
        raise ValueError(f"{str(sf_file)!r} lacks the keys {missing}.")
    if fullres_image_file is not None:
        _check_file(path / Path(fullres_image_file), "Full-resolution image")

    file_prefix = counts_name[: -len(counts_file) - 1] if counts_name != counts_file else None
    if library_id is None:
        library_id = file_prefix or _h5_library_id(path / counts_name) or _default_library_id(path)
    library_id = _valid_name(library_id)
    # spatialdata-io's dataset_id names the elements: keep its natural choice (the file prefix) if any
    dataset_id = file_prefix or library_id

    logger.info("Reading Visium section %r from %s.", library_id, path)
    with _quiet_reader():
        sdata = spatialdata_io.visium(path, dataset_id=dataset_id, fullres_image_file=fullres_image_file, **kwargs)
    sdata.rename_coordinate_systems({dataset_id: GLOBAL_CS})

    table = sdata.tables[TABLE_KEY]
    if table_key != TABLE_KEY:
        _drop_table(sdata, TABLE_KEY)
        sdata.tables[table_key] = table
    xy = np.asarray(table.obsm[SPATIAL_KEY], dtype=float)
    if not np.isfinite(xy).all():
        bad = table.obs_names[~np.isfinite(xy).all(1)]
        raise ValueError(
            f"{len(bad)} barcodes of the count matrix have no row in the positions file (e.g. {list(bad[:3])})."
        )
    reader_meta = dict(table.uns.get(SPATIAL_KEY, {}).get(dataset_id, {}).get("metadata", {}))

    image_key = _first_image(
        sdata, [f"{dataset_id}_full_image", f"{dataset_id}_hires_image", f"{dataset_id}_lowres_image"]
    )
    if image_key is None:
        logger.warning("The Visium folder %s holds no image: the section is image-less.", path)
    elif image_key.endswith("_lowres_image"):
        logger.warning(
            "Only the lowres image is present: spot patches will be ~%.0f px wide.",
            scalefactors["spot_diameter_fullres"] * scalefactors["tissue_lowres_scalef"],
        )
    return _finish(
        sdata,
        table_key=table_key,
        library_id=library_id,
        spot_diameter_px=float(scalefactors["spot_diameter_fullres"]),
        image_key=image_key,
        platform="visium",
        metadata={**{k: str(v) for k, v in reader_meta.items()}, "counts_file": counts_name},
    )


# --------------------------------------------------------------------------------------------------------
# Visium HD
# --------------------------------------------------------------------------------------------------------
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


def visium_hd(
    path: str | os.PathLike[str],
    *,
    bin_size_um: float = DEFAULT_BIN_UM,
    library_id: str | None = None,
    keep_source: bool = False,
    table_key: str = TABLE_KEY,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Visium HD (Space Ranger ≥ 3 ``outs``) folder and sum its bins into spot-sized squares.

    :func:`spatialdata_io.visium_hd` reads the finest bins (2 µm unless ``bin_size=`` is passed); their counts
    are summed into squares of ``k x k`` bins on the capture-array grid, ``k = round(bin_size_um / source)``,
    so every aggregate covers the same area (55 µm from 2 µm bins gives 28 x 28 bins = 56 µm; the size
    actually used is ``metadata['bin_size_um']``). Squares are aligned to array index 0, as 10x's own 8 and
    16 µm bins are.

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
        source bins (dropped by default: 2 µm tables are large).
    table_key
        Key of the aggregated table.
    **kwargs
        Passed to :func:`spatialdata_io.visium_hd` (e.g. ``bin_size`` (source bins, µm),
        ``fullres_image_file``, ``filtered_counts_file``). Defaults set here:
        ``load_segmentations_only=False``, ``bins_as_squares=False``.

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
        ``spot_diameter_fullres`` = square side in px) and ``metadata`` (``platform='visium_hd'``,
        ``image_key``, ``spots_key``, ``library_id``, ``bin_size_um`` (used), ``bin_size_um_requested``,
        ``source_bin_um``, ``bins_per_side``, ``microns_per_pixel``).

    Raises
    ------
    FileNotFoundError
        The folder, ``feature_slice.h5``, the ``square_XXXum`` bins or their matrix / positions / scale
        factors are missing (the message names the file).
    ValueError
        ``bin_size_um`` is smaller than the source bins.
    """
    import spatialdata_io

    if "dataset_id" in kwargs:
        raise TypeError("Pass the section name as `library_id=`, not `dataset_id=`.")
    path = _check_dir(path, "Visium HD")
    slices = sorted(f.name for f in path.iterdir() if f.is_file() and f.name.endswith("feature_slice.h5"))
    if not slices:
        raise FileNotFoundError(
            f"'feature_slice.h5' (or '<library_id>_feature_slice.h5') not found in {str(path)!r}; "
            "point `path` at the Visium HD `outs` folder."
        )
    bins = _hd_available_bins(_hd_bins_folder(path))
    if not bins:
        raise FileNotFoundError(f"No binned outputs ('binned_outputs/square_XXXum') in {str(path)!r}.")
    if kwargs.get("fullres_image_file") is not None:
        _check_file(kwargs["fullres_image_file"], "Full-resolution image")
    requested_src = kwargs.pop("bin_size", None)
    if isinstance(requested_src, list | tuple):
        requested_src = min(requested_src) if requested_src else None
    if requested_src is None:
        src_um = min(bins)
    else:
        src_um = int(requested_src)
        if src_um not in bins:
            raise FileNotFoundError(
                f"Bin folder 'square_{src_um:03d}um' not found (available: {sorted(bins)} µm) in {str(path)!r}."
            )
    bin_dir = bins[src_um]
    counts_name = _VISIUM_COUNTS if kwargs.get("filtered_counts_file", True) else "raw_feature_bc_matrix.h5"
    _require(bin_dir / counts_name, "Count matrix")
    _require(bin_dir / "spatial" / "tissue_positions.parquet", "Bin positions file")
    sf_file = _require(bin_dir / "spatial" / _SCALEFACTORS, "Scale factors file")
    sf = json.loads(sf_file.read_text())
    if "spot_diameter_fullres" not in sf:
        raise ValueError(f"{str(sf_file)!r} lacks 'spot_diameter_fullres'.")
    src_side_px = float(sf["spot_diameter_fullres"])
    if bin_size_um < src_um:
        raise ValueError(f"bin_size_um={bin_size_um} is smaller than the source bins ({src_um} µm).")
    k = max(1, int(round(bin_size_um / src_um)))
    eff_um = float(k * src_um)
    if not np.isclose(eff_um, bin_size_um):
        logger.info(
            "Visium HD: %g µm squares are made of %d x %d bins of %d µm, i.e. %g µm.",
            bin_size_um,
            k,
            k,
            src_um,
            eff_um,
        )

    file_prefix = slices[0][: -len("feature_slice.h5")].rstrip("_")
    library_id = _valid_name(library_id or file_prefix or _default_library_id(path))
    # spatialdata-io finds '<dataset_id>_feature_slice.h5' by its dataset_id, which also names the elements
    dataset_id = file_prefix or library_id
    kwargs.setdefault("load_segmentations_only", False)
    kwargs.setdefault("bins_as_squares", False)

    logger.info("Reading Visium HD section %r (%d µm bins) from %s.", library_id, src_um, path)
    with _quiet_reader():
        sdata = spatialdata_io.visium_hd(path, dataset_id=dataset_id, bin_size=src_um, **kwargs)
    sdata.rename_coordinate_systems({dataset_id: GLOBAL_CS})

    src_table_key = f"square_{src_um:03d}um"
    src_shapes_key = f"{dataset_id}_square_{src_um:03d}um"
    src = sdata.tables[src_table_key]
    if src.n_obs == 0:
        raise ValueError(f"The {src_um} µm count matrix of {str(path)!r} has no bins.")
    xy = np.asarray(src.obsm[SPATIAL_KEY], dtype=float)
    arr = np.column_stack([src.obs["array_col"].to_numpy(float), src.obs["array_row"].to_numpy(float)])
    X, rows, cols, G = _sum_by_grid(src.X, src.obs["array_row"].to_numpy() // k, src.obs["array_col"].to_numpy() // k)
    n = np.asarray(G.sum(1)).ravel()

    # Square centres: the mean of the member bins' pixel centres is exact for full squares; for squares cut by
    # the tissue edge it is shifted, so it is moved by the affine array→pixel map (least squares on all bins)
    # from the members' mean array index to the square's centre index. Local, so robust to a slightly
    # projective array→pixel relation over the whole slide.
    design = np.column_stack([arr, np.ones(len(arr))])
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    lin = coef[:2].T  # pixel = lin @ (col, row) + t
    mean_xy = (G @ xy) / n[:, None]
    mean_arr = (G @ arr) / n[:, None]
    centre_arr = np.column_stack([cols * k + (k - 1) / 2.0, rows * k + (k - 1) / 2.0])
    centres = mean_xy + (centre_arr - mean_arr) @ lin.T
    side_px = k * src_side_px

    label = _bin_label(eff_um)
    shapes_key = f"{dataset_id}_square_{label}um"
    agg = _binned_table(
        X,
        src.var,
        rows,
        cols,
        n,
        centres,
        shapes_key=shapes_key,
        barcode_prefix=f"s_{label}um",
        member_name="n_bins",
    )
    if not keep_source:
        _drop_table(sdata, src_table_key)
        _drop_element(sdata, src_shapes_key)
    _drop_table(sdata, table_key)
    _add_circles_and_table(sdata, agg, shapes_key=shapes_key, radius=side_px / 2.0, table_key=table_key)

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
            "bins_per_side": k,
            "microns_per_pixel": float(mpp),
        },
    )


# --------------------------------------------------------------------------------------------------------
# Xenium
# --------------------------------------------------------------------------------------------------------
def _read_alignment(he_alignment: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
    """The 3x3 H&E px → morphology px affine from 10x's ``*_imagealignment.csv`` (or an array)."""
    if isinstance(he_alignment, str | os.PathLike):
        file = _check_file(he_alignment, "H&E alignment file")
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
    if not np.allclose(M[2], [0.0, 0.0, 1.0], atol=1e-6):
        raise ValueError(f"The H&E alignment is not affine (last row {M[2].tolist()}, expected [0, 0, 1]).")
    if abs(np.linalg.det(M[:2, :2])) < 1e-12:
        raise ValueError("The H&E alignment matrix is singular.")
    return M


def _read_he_lazy(he_image: str | os.PathLike[str]) -> Any:
    """``(y, x, c)`` array of an H&E file; TIFF / OME-TIFF level 0 is read lazily (dask), others in memory."""
    file = _check_file(he_image, "H&E image")
    if not file.name.lower().endswith((".tif", ".tiff", ".btf")):
        return _read_image_file(file)
    import dask.array as da
    import tifffile
    import zarr

    with tifffile.TiffFile(file) as tf:
        axes = tf.series[0].axes
    z = zarr.open(tifffile.imread(file, aszarr=True, series=0, level=0), mode="r")
    arr = da.from_zarr(z)
    if len(axes) != arr.ndim:  # unexpected layout: fall back to an eager read
        return _read_image_file(file)
    channel = next((a for a in ("S", "C") if a in axes and arr.shape[axes.index(a)] > 1), None)
    index: list[Any] = []
    keep: list[str] = []
    for ax, size in zip(axes, arr.shape, strict=True):
        if ax in ("Y", "X") or ax == channel:
            index.append(slice(None))
            keep.append(ax)
        elif size == 1:
            index.append(0)
        else:
            raise ValueError(
                f"H&E image {str(file)!r} has a non-singleton {ax!r} axis (axes {axes}, shape {arr.shape})."
            )
    arr = arr[tuple(index)]
    order = [keep.index("Y"), keep.index("X")] + ([keep.index(channel)] if channel else [])
    return arr.transpose(order)


def xenium(
    path: str | os.PathLike[str],
    *,
    bin_size_um: float = DEFAULT_BIN_UM,
    he_image: str | os.PathLike[str] | np.ndarray | None = None,
    he_alignment: str | os.PathLike[str] | np.ndarray | None = None,
    library_id: str | None = None,
    keep_source: bool = False,
    table_key: str = TABLE_KEY,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Xenium output folder and sum its cells into spot-sized square bins.

    :func:`spatialdata_io.xenium` reads the cell table; cell counts are summed into ``bin_size_um`` squares
    of a grid anchored at the Xenium frame origin (cell centroids, µm). Without an H&E the section is
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
        ``pixel_size`` for µm). ``None`` with ``he_image`` means the H&E is already in morphology pixels.
    library_id
        Section name (``uns['spatial']`` key). Default: the folder name.
    keep_source
        Keep the cell-level table as ``"cell_table"`` annotating spatialdata-io's ``"cell_circles"`` (its
        ``obsm['spatial']`` stays in µm, as spatialdata-io writes it).
    table_key
        Key of the binned table.
    **kwargs
        Passed to :func:`spatialdata_io.xenium`. Defaults set here (only the cell table is needed):
        ``cells_boundaries``, ``nucleus_boundaries``, ``cells_labels``, ``nucleus_labels``, ``transcripts``,
        ``morphology_mip``, ``morphology_focus``, ``aligned_images`` all ``False``;
        ``cells_as_circles=keep_source``.

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
        ``obs['n_cells']``: cells summed;
      - ``obsm['spatial']``: bin centres ``(x, y)`` in H&E px (with an H&E) or morphology px (without);
      - ``uns['spatial'][library_id]``: ``images['hires']`` and ``scalefactors['tissue_hires_scalef']``
        (with an H&E), ``scalefactors['spot_diameter_fullres']`` (bin side in global px) and ``metadata``
        (``platform='xenium'``, ``image_key`` (with an H&E), ``spots_key``, ``library_id``, ``bin_size_um``,
        ``pixel_size_um``, ``n_cells``, ``global_frame`` (``'he_pixels'`` or ``'morphology_pixels'``),
        ``he_to_morphology`` (3x3, with an H&E), ``analysis_sw_version``).

    Raises
    ------
    FileNotFoundError
        The folder, ``experiment.xenium``, ``cell_feature_matrix.h5``, ``cells.parquet``, ``cells.zarr.zip``,
        ``he_image`` or ``he_alignment`` is missing (the message names it).
    ValueError
        A malformed alignment matrix, a missing ``pixel_size``, or a non-positive ``bin_size_um``.
    """
    import spatialdata_io
    from spatialdata.transformations import Affine, Identity, Sequence, get_transformation, set_transformation

    path = _check_dir(path, "Xenium")
    specs_file = _require(path / "experiment.xenium", "Xenium specification file")
    _require(
        path / "cell_feature_matrix.h5",
        "Cell count matrix",
        "spatialdata-io reads the HDF5 matrix (the 'cell_feature_matrix/' MEX folder alone is not enough).",
    )
    _require(path / "cells.parquet", "Cell table")
    _require(path / "cells.zarr.zip", "Cell zarr archive", "spatialdata-io 0.7.1 opens it even for the table only.")
    if bin_size_um <= 0:
        raise ValueError(f"bin_size_um must be positive; got {bin_size_um}.")
    specs = json.loads(specs_file.read_text())
    if "pixel_size" not in specs:
        raise ValueError(f"{str(specs_file)!r} has no 'pixel_size' (µm per morphology pixel).")
    pixel_size = float(specs["pixel_size"])
    he_arr = None
    if he_image is not None:
        he_arr = he_image if isinstance(he_image, np.ndarray) else _read_he_lazy(he_image)
    M = _read_alignment(he_alignment) if he_alignment is not None else None
    if he_alignment is not None and he_image is None and not kwargs.get("aligned_images", False):
        raise ValueError("`he_alignment` was given without `he_image`.")

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

    logger.info("Reading Xenium section %r from %s.", library_id, path)
    with _quiet_reader():
        sdata = spatialdata_io.xenium(path, **kwargs)
    cells = sdata.tables[TABLE_KEY]
    if not cells.var_names.is_unique:  # spatialdata-io 0.7.1 does not make Xenium gene names unique
        cells.var_names_make_unique()
    if cells.n_obs == 0:
        raise ValueError(f"The Xenium cell matrix of {str(path)!r} has no cells.")
    xy_um = np.asarray(cells.obsm[SPATIAL_KEY], dtype=float)

    # the "global" frame: H&E pixels when an H&E is given / was loaded, else morphology pixels
    if he_arr is None and XENIUM_HE_KEY in sdata.images and he_image is None:
        loaded = get_transformation(sdata.images[XENIUM_HE_KEY], GLOBAL_CS)
        M = np.asarray(loaded.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
        he_present = True
    else:
        he_present = he_arr is not None
        if he_present and M is None:
            logger.warning("No `he_alignment` given: the H&E is taken to be in Xenium morphology pixels already.")
            M = np.eye(3)
    morph_to_global = np.linalg.inv(M) if he_present else np.eye(3)

    X, rows, cols, G = _sum_by_grid(cells.X, np.floor(xy_um[:, 1] / bin_size_um), np.floor(xy_um[:, 0] / bin_size_um))
    n_cells = np.asarray(G.sum(1)).ravel()
    centres_um = np.column_stack([(cols + 0.5) * bin_size_um, (rows + 0.5) * bin_size_um])
    centres = _apply_affine(morph_to_global, centres_um / pixel_size)
    side_px = bin_size_um / pixel_size * _affine_scale(morph_to_global)

    shapes_key = f"square_{_bin_label(bin_size_um)}um"
    agg = _binned_table(
        X,
        cells.var,
        rows,
        cols,
        n_cells,
        centres,
        shapes_key=shapes_key,
        barcode_prefix=f"x_{_bin_label(bin_size_um)}um",
        member_name="n_cells",
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
        "global_frame": "he_pixels" if he_present else "morphology_pixels",
        "analysis_sw_version": str(specs.get("analysis_sw_version", "")),
    }
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
