"""Helpers shared by the 10x readers (Visium, Visium HD, Xenium): names, spot-sized binning, tables.

Every 10x reader returns a :class:`~spatialdata.SpatialData` that follows the conventions of
:mod:`spacrd_sc.io`: a table (key ``"table"``) annotating a circles shapes element, ``obsm['spatial']``
holding the spot / bin centres ``(x, y)`` in the ``"global"`` coordinate system (the full-resolution pixel
frame of the H&E used for patches), raw counts in a float32 CSR ``X`` and scanpy's
``uns['spatial'][library_id]``. spatialdata-io's element names are kept; which elements are used is recorded
in ``uns['spatial'][library_id]['metadata']`` (``image_key``, ``spots_key``), where
:func:`spacrd_sc._spatial._spot_geometry` finds them.
"""

from __future__ import annotations

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

from .._constants import INSTANCE_KEY, REGION_KEY, SPATIAL_KEY, SPOT_DIAMETER_UM
from .._images import GLOBAL_CS, TIFF_SUFFIXES, _image_hw, _image_levels, _image_model, _read_he_lazy
from .._logging import logger
from .._spatial import _add_scanpy_spatial
from ._checks import _check_finite_xy, _number

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


#: Default side of the square bins that Visium HD and Xenium are aggregated to (a Visium spot is 55 µm wide).
DEFAULT_BIN_UM = SPOT_DIAMETER_UM["visium"]
_VISIUM_COUNTS = "filtered_feature_bc_matrix.h5"
_SCALEFACTORS = "scalefactors_json.json"


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
        # Visium HD without hires / lowres PNGs: the reader logs that the section is image-less
        warnings.filterwarnings("ignore", message="No image path found containing the", category=UserWarning)
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


def _lazy_fullres(sdata: SpatialData, key: str | None, file: str | os.PathLike[str] | None) -> None:
    """Replace spatialdata-io's full-resolution TIFF element ``key`` by a window-readable one.

    spatialdata-io decodes the whole TIFF in one dask task that every chunk depends on, so each patch
    window would decode the whole slide; :func:`~spacrd_sc._images._read_he_lazy` reads tiles / strips
    (or memory-maps an uncompressed file), and a stored pyramid (OME-TIFF, SVS, tiled TIFF) becomes the
    element's levels. Same pixels, same transformations.
    """
    if key is None or file is None or key not in sdata.images:
        return
    file = Path(file)
    if not file.name.lower().endswith(TIFF_SUFFIXES):
        return
    from spatialdata.transformations import get_transformation

    old = sdata.images[key]
    arr = _read_he_lazy(file)
    if tuple(arr[0].shape[:2]) != _image_hw(_image_levels(old)[0]):
        logger.debug("Full-resolution image %s does not match element %r; kept as read.", file, key)
        return
    transformations = get_transformation(old, get_all=True)
    del sdata.images[key]
    sdata.images[key] = _image_model(arr, transformations=transformations)


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
    # the readers check their files first; this is the backstop for what reaches the table
    _check_finite_xy(adata.obsm[SPATIAL_KEY], f"{platform} spot centres", list(adata.obs_names))
    spot_diameter_px = _number(spot_diameter_px, f"{platform} spot diameter (px)")
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
    inverse, rows, cols = _grid_cells(row, col)
    n = len(inverse)
    G = sparse.csr_matrix((np.ones(n, dtype=np.float32), (inverse, np.arange(n))), shape=(len(rows), n))
    summed = _counts_csr32(G @ _counts_csr32(X))
    return summed, rows, cols, G


def _grid_cells(row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupied integer grid cells ``(row, col)`` in row-major order: each observation's cell, cell rows, cols."""
    row = np.asarray(row, dtype=np.int64)
    col = np.asarray(col, dtype=np.int64)
    r0, c0 = int(row.min()), int(col.min())
    width = int(col.max()) - c0 + 1
    key = (row - r0) * width + (col - c0)
    uniq, inverse = np.unique(key, return_inverse=True)
    return inverse.ravel(), uniq // width + r0, uniq % width + c0


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
