"""Tumour / boundary / non-tumour regions from cancer calls, and the signed distance to the tumour edge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _validate
from .._constants import SPATIAL_KEY, TABLE_KEY, Key
from .._docs import inject_docs
from .._logging import logger
from .._spatial import _spot_diameter_px, _spot_diameter_um
from .._utils import _get_table
from ..model import ModelConfig
from ._evaluate import _calls

if TYPE_CHECKING:
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData

#: Region categories, in this order.
REGION_CATEGORIES = ("tumour", "boundary", "non-tumour")
#: Their colours (warm tumour, amber boundary, cool non-tumour), written to ``uns[f"{key_added}_colors"]``.
REGION_COLORS = ("#d62728", "#ffb000", "#1f77b4")


def _um_per_px(adata: AnnData, library_id: str | None, spot_diameter_um: float | None) -> float:
    """µm per pixel of ``obsm['spatial']``: spot diameter in µm / ``spot_diameter_fullres`` (pixels).

    The µm diameter is ``spot_diameter_um``, else ``metadata['spot_diameter_um']`` (or ``'bin_size_um'``), else
    the platform's (legacy ST 100 µm, Visium 55 µm).
    """
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or not spatial:
        raise KeyError(
            "adata.uns['spatial'] is missing, so the pixel size is unknown: pass `um_per_px=` "
            "(µm per unit of obsm['spatial'])."
        )
    if library_id is None or library_id not in spatial:
        if len(spatial) != 1:
            raise KeyError(f"No library {library_id!r} in adata.uns['spatial'] ({list(spatial)}); pass `um_per_px=`.")
        library_id = next(iter(spatial))
    try:
        diameter_px = _spot_diameter_px(adata, library_id)
    except KeyError as err:
        raise KeyError(f"{err.args[0]} Pass `um_per_px=`.") from err
    meta = spatial[library_id].get(Key.uns.metadata, {})
    if spot_diameter_um is None:
        spot_diameter_um = _spot_diameter_um(adata, library_id)
    if spot_diameter_um is None:
        raise ValueError(
            f"Unknown spot diameter in µm for library {library_id!r} (platform {meta.get('platform')!r}); "
            "pass `spot_diameter_um=` or `um_per_px=`."
        )
    return float(spot_diameter_um) / float(diameter_px)


def _adjacency(adata: AnnData, neighbors_key: str) -> sparse.csr_matrix:
    """Symmetric 0/1 spot graph without self-loops, from ``obsp[f"{neighbors_key}_connectivities"]``."""
    from scipy import sparse

    key = Key.obsp.connectivities(neighbors_key)
    if key not in adata.obsp:
        raise KeyError(
            f"adata.obsp[{key!r}] is missing; build the spot graph first, e.g. "
            f"`squidpy.gr.spatial_neighbors_knn(adata, n_neighs={ModelConfig.n_neighbors})`."
        )
    a = sparse.csr_matrix(adata.obsp[key], dtype=np.float64)
    a = ((a + a.T) > 0).astype(np.int64).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    return a


def _drop_small(adj: sparse.csr_matrix, called: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove connected groups of called spots smaller than ``min_size``; region id per spot (-1 outside)."""
    from scipy.sparse.csgraph import connected_components

    idx = np.flatnonzero(called)
    region = np.full(called.size, -1, dtype=np.int64)
    if idx.size == 0:
        return called, region, 0
    _, lab = connected_components(adj[idx][:, idx], directed=False)
    sizes = np.bincount(lab)
    keep = sizes[lab] >= min_size
    out = called.copy()
    out[idx[~keep]] = False
    # renumber the kept regions 0..k-1, largest first
    kept = np.flatnonzero(sizes >= min_size)
    order = kept[np.argsort(-sizes[kept], kind="stable")]
    new_id = np.full(sizes.size, -1, dtype=np.int64)
    new_id[order] = np.arange(order.size)
    region[idx] = new_id[lab]
    return out, region, int((~keep).sum())


def _signed_distance(xy_um: np.ndarray, called: np.ndarray) -> tuple[np.ndarray, float]:
    """Signed distance (µm) to the tumour edge, and the spot spacing it used.

    The edge lies half a spot spacing beyond the outermost tumour spot centres: a spot outside gets
    ``d - spacing/2`` with ``d`` the distance to the nearest tumour spot centre, a spot inside ``-(d - spacing/2)``
    with ``d`` the distance to the nearest non-tumour spot centre. ``spacing`` is the median nearest-neighbour
    distance between spot centres. NaN when the section has no tumour or no non-tumour spot.
    """
    from scipy.spatial import cKDTree

    out = np.full(called.size, np.nan)
    if called.size < 2:
        return out, float("nan")
    spacing = float(np.median(cKDTree(xy_um).query(xy_um, k=2)[0][:, 1]))
    if called.all() or not called.any():
        return out, spacing
    d_out = cKDTree(xy_um[called]).query(xy_um[~called])[0]
    d_in = cKDTree(xy_um[~called]).query(xy_um[called])[0]
    out[~called] = d_out - spacing / 2
    out[called] = -(d_in - spacing / 2)
    return out, spacing


@inject_docs
def tumour_regions(
    data: AnnData | SpatialData,
    *,
    score_key: str = Key.score(),
    call_key: str | None = None,
    threshold: float | None = None,
    min_region_size: int = 3,
    boundary_width: int = 1,
    um_per_px: float | None = None,
    spot_diameter_um: float | None = None,
    library_key: str | None = None,
    neighbors_key: str = SPATIAL_KEY,
    key_added: str = "spacrd_region",
    table_key: str = TABLE_KEY,
    copy: bool = False,
    overwrite: bool = False,
) -> AnnData | None:
    """Tumour, boundary and non-tumour regions, and each spot's signed distance to the tumour edge.

    Tumour spots are the cancer calls (``obs[call_key]``) that form a connected group of at least
    ``min_region_size`` spots in the spot graph; smaller groups (isolated calls) become non-tumour. The
    **boundary** is the interface in the spot graph: tumour spots with a non-tumour neighbour and
    non-tumour spots with a tumour neighbour (``boundary_width`` > 1 widens it by that many graph steps on both
    sides). This graph definition needs no second threshold, is symmetric about the edge, and on legacy ST
    (200 µm grid) gives a two-spot-wide band that holds the mixed tissue a 100 µm spot straddles; a band of
    intermediate scores would instead depend on how well calibrated the scores of each section are.

    Parameters
    ----------
    {data}
    score_key
        ``obs`` column with the cancer likelihood (written by :func:`spacrd_sc.tl.cancer_score`); names the
        call column and is used with ``threshold``.
    call_key
        ``obs`` bool column of cancer calls. Default: the call column beside ``score_key``
        (``"spacrd_cancer"`` for ``"spacrd_score"``).
    threshold
        Call ``score >= threshold`` instead of reading ``call_key``.
    min_region_size
        Connected groups of fewer called spots are not tumour (1 keeps every call).
    boundary_width
        Graph steps on each side of the edge that count as boundary (≥ 1).
    um_per_px
        µm per unit of ``obsm['spatial']``. Default: spot diameter in µm / ``uns['spatial'][lib]
        ['scalefactors']['spot_diameter_fullres']`` (pixels), per library.
    spot_diameter_um
        Spot diameter in µm for that derivation. Default: ``uns['spatial'][lib]['metadata']
        ['spot_diameter_um']``, else by ``metadata['platform']``: legacy ST 100 µm, Visium 55 µm.
    {library_key}
    neighbors_key
        Prefix of the squidpy spot graph ``obsp[neighbors_key + "_connectivities"]``.
    key_added
        Name of the region column and of the ``uns`` entry.
    {table_key}
    {copy}
    overwrite
        Replace existing keys of these names that spacrd_sc did not write (e.g. ``key_added="pathology"``);
        refused otherwise, naming them. Keys it wrote are replaced with a warning.

    Returns
    -------
    ``None`` (or the table with ``copy=True``); writes

    - ``obs[key_added]``: categorical ``tumour``, ``boundary``, ``non-tumour``;
    - ``obs[f"{key_added}_distance_um"]``: float, signed distance to the tumour edge in µm (negative inside; the
      edge lies half a spot spacing beyond the outermost tumour centres; NaN in a section without tumour or
      without non-tumour spots);
    - ``obs[f"{key_added}_id"]``: int, tumour region (connected group, 0 = largest, per section) or -1;
    - ``uns[f"{key_added}_colors"]``: colours of the three categories (for ``sq.pl.spatial_scatter``);
    - ``uns[key_added]``: ``params`` (every argument), ``um_per_px`` and ``spot_spacing_um`` per section,
      ``n_removed`` (calls dropped as too small) and ``n_regions`` (tumour regions kept).

    Raises
    ------
    KeyError
        Missing score/call column, spot graph, ``library_key`` or pixel size.
    ValueError
        A call column of text or categories (not boolean); ``min_region_size`` < 1 or ``boundary_width`` < 1;
        NaN scores or threshold; a spot graph without edges or with edges between sections; NaN coordinates;
        ``key_added`` naming a key spacrd_sc did not write (without ``overwrite=True``).
    """
    if int(min_region_size) < 1 or int(boundary_width) < 1:
        raise ValueError(
            f"min_region_size and boundary_width must be >= 1, got {min_region_size!r}, {boundary_width!r}."
        )
    if um_per_px is not None and not um_per_px > 0:
        raise ValueError(f"um_per_px must be positive, got {um_per_px!r}.")
    adata = _validate.table(_get_table(data, table_key), min_spots=2, what="tumour_regions")
    written = {
        "obs": [key_added, f"{key_added}_distance_um", f"{key_added}_id"],
        "uns": [key_added, f"{key_added}_colors"],
    }
    _validate.writable_keys(adata, written, overwrite=overwrite, record=key_added)
    calls = _calls(adata, score_key, call_key, threshold)
    _validate.graph(adata, neighbors_key, library_key=library_key)
    adj = _adjacency(adata, neighbors_key)
    xy = _validate.coordinates(adata)
    sections = _validate.sections(adata, library_key)
    sections = np.full(adata.n_obs, "all", dtype=object) if sections is None else sections
    if copy:
        adata = adata.copy()

    called, region = calls.copy(), np.full(adata.n_obs, -1, dtype=np.int64)
    distance = np.full(adata.n_obs, np.nan)
    scale: dict[str, float] = {}
    spacing: dict[str, float] = {}
    n_removed = n_regions = 0
    for sec in pd.unique(sections):
        m = np.flatnonzero(sections == sec)
        sub_called, sub_region, removed = _drop_small(adj[m][:, m], calls[m], int(min_region_size))
        called[m], region[m] = sub_called, sub_region
        n_removed += removed
        n_regions += int(sub_region.max() + 1)
        lib = None if library_key is None else sec
        scale[sec] = float(um_per_px) if um_per_px is not None else _um_per_px(adata, lib, spot_diameter_um)
        distance[m], spacing[sec] = _signed_distance(xy[m] * scale[sec], sub_called)
        if np.isnan(distance[m]).all():
            logger.warning("Section %r has no tumour/non-tumour interface; its distances are NaN.", sec)
    if n_removed:
        logger.info("Dropped %d called spots in groups smaller than %d spots.", n_removed, min_region_size)

    # boundary: spots whose neighbours include the other class, widened by graph steps
    n_called_nb = adj @ called.astype(np.int64)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    boundary = np.where(called, n_called_nb < degree, n_called_nb > 0)
    for _ in range(int(boundary_width) - 1):
        boundary |= (adj @ boundary.astype(np.int64)) > 0

    labels = np.where(boundary, "boundary", np.where(called, "tumour", "non-tumour"))
    adata.obs[key_added] = pd.Categorical(labels, categories=list(REGION_CATEGORIES))
    adata.obs[f"{key_added}_distance_um"] = distance
    adata.obs[f"{key_added}_id"] = region
    adata.uns[f"{key_added}_colors"] = list(REGION_COLORS)
    params: dict[str, Any] = {
        "score_key": score_key,
        "call_key": call_key,
        "threshold": threshold,
        "min_region_size": int(min_region_size),
        "boundary_width": int(boundary_width),
        "um_per_px": um_per_px,
        "spot_diameter_um": spot_diameter_um,
        "library_key": library_key,
        "neighbors_key": neighbors_key,
    }
    adata.uns[key_added] = {
        "params": {k: v for k, v in params.items() if v is not None},
        "um_per_px": scale,
        "spot_spacing_um": spacing,
        "n_removed": int(n_removed),
        "n_regions": int(n_regions),
    }
    _validate.record_written(adata, written)
    return adata if copy else None
