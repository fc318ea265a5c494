"""Small helpers shared by the public modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._constants import SPATIAL_KEY, TABLE_KEY
from ._logging import logger

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _get_table(data: AnnData | SpatialData, table_key: str = TABLE_KEY) -> AnnData:
    """Return the :class:`~anndata.AnnData` behind ``data``.

    ``data`` is either an AnnData (returned as it is) or a SpatialData whose ``tables[table_key]`` is returned.
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data
    tables = getattr(data, "tables", None)
    if tables is None:
        raise TypeError(f"Expected an AnnData or a SpatialData, got {type(data).__name__}.")
    if table_key not in tables:
        have = list(tables.keys())
        raise KeyError(
            f"The SpatialData has no table {table_key!r} (tables: {have or 'none'}). "
            "Pass `table_key=` naming the table that holds the spots."
        )
    return tables[table_key]


def _library_id(adata: AnnData, library_id: str | None = None) -> str:
    """The key of ``adata.uns['spatial']`` to use: ``library_id`` or the only one present."""
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or len(spatial) == 0:
        raise KeyError(
            "adata.uns['spatial'] is missing: the section carries no spot geometry. "
            "Read it with a `spacrd_sc.io` reader or `scanpy.read_visium`."
        )
    if library_id is None:
        if len(spatial) > 1:
            raise ValueError(f"adata.uns['spatial'] has several libraries {list(spatial)}; pass `library_id=`.")
        return next(iter(spatial))
    if library_id not in spatial:
        raise KeyError(f"library_id {library_id!r} not in adata.uns['spatial'] ({list(spatial)}).")
    return library_id


def _spot_diameter_px(adata: AnnData, library_id: str | None = None) -> float:
    """Spot diameter in full-resolution image pixels (``uns['spatial'][lib]['scalefactors']``)."""
    lib = _library_id(adata, library_id)
    sf = adata.uns[SPATIAL_KEY][lib].get("scalefactors", {})
    if "spot_diameter_fullres" not in sf:
        raise KeyError(f"adata.uns['spatial'][{lib!r}]['scalefactors'] has no 'spot_diameter_fullres'.")
    return float(sf["spot_diameter_fullres"])


def _set_scanpy_spatial(
    adata: AnnData,
    library_id: str,
    *,
    spot_diameter_fullres: float,
    hires_image: np.ndarray | None = None,
    hires_scalef: float = 1.0,
    lowres_image: np.ndarray | None = None,
    lowres_scalef: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write the scanpy/squidpy ``uns['spatial'][library_id]`` entry.

    ``obsm['spatial']`` must be in full-resolution pixels; ``*_scalef`` map them to the stored images,
    exactly as in :func:`scanpy.read_visium` output.
    """
    entry: dict[str, Any] = {
        "scalefactors": {"spot_diameter_fullres": float(spot_diameter_fullres)},
        "metadata": dict(metadata or {}),
    }
    images: dict[str, np.ndarray] = {}
    if hires_image is not None:
        images["hires"] = np.ascontiguousarray(hires_image)
        entry["scalefactors"]["tissue_hires_scalef"] = float(hires_scalef)
    if lowres_image is not None:
        images["lowres"] = np.ascontiguousarray(lowres_image)
        entry["scalefactors"]["tissue_lowres_scalef"] = float(lowres_scalef if lowres_scalef is not None else 1.0)
    if images:
        entry["images"] = images
    adata.uns.setdefault(SPATIAL_KEY, {})
    adata.uns[SPATIAL_KEY][library_id] = entry


def _resolve_device(device: str | None = "auto") -> str:
    """``'auto'`` → ``'cuda'`` when a GPU is available, else ``'cpu'``; other values are checked and returned."""
    import torch

    from ._settings import settings

    if device is None or device == "auto":
        device = settings.device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = str(device)
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={dev!r} was requested but CUDA is not available here; use device='cpu'.")
    if not (dev == "cpu" or dev.startswith("cuda") or dev == "mps"):
        raise ValueError(f"Unknown device {dev!r}; use 'auto', 'cpu' or 'cuda[:N]'.")
    return dev


def _warn_overwrite(adata: AnnData, where: str, key: str) -> None:
    """Log a warning when ``adata.<where>[key]`` exists and is about to be replaced (nothing is replaced silently)."""
    if key in getattr(adata, where):
        logger.warning("Overwriting adata.%s[%r].", where, key)
