"""Tumour regions and their boundary bands as polygons (a ``shapes`` element), from :func:`tumour_regions`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _validate
from .._constants import TABLE_KEY
from .._docs import inject_docs
from .._logging import logger
from .._utils import _get_table
from ._regions import REGION_CATEGORIES, REGION_COLORS

if TYPE_CHECKING:
    from anndata import AnnData
    from geopandas import GeoDataFrame
    from spatialdata import SpatialData

#: Classes drawn as polygons (non-tumour is the rest of the tissue).
SHAPE_CLASSES = ("tumour", "boundary")
#: Coordinate system of ``obsm['spatial']`` for the :mod:`spacrd_sc.io` readers (the H&E's pixels).
GLOBAL_CS = "global"


def _footprints(xy: np.ndarray, spacing: float, which: np.ndarray) -> np.ndarray:
    """Footprints of the spots ``which`` (bool mask): Voronoi cells of all centres, clipped to a disc of radius
    ``spacing / √2``.

    Vertices snapped to a grid of ``spacing * 1e-6`` so neighbouring cells share exact edges and unite without
    slivers.
    """
    import shapely

    pts = shapely.points(xy)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=shapely.box(*_box(xy))))
    # voronoi_polygons does not keep the input order: match each cell to the spot inside it
    tree = shapely.STRtree(cells)
    spot_idx, cell_idx = tree.query(pts, predicate="within")
    order = np.full(len(xy), -1)
    order[spot_idx] = cell_idx
    if (order < 0).any():  # a centre on a cell edge (duplicate spots): take the nearest cell
        miss = np.flatnonzero(order < 0)
        order[miss] = tree.nearest(pts[miss])
    discs = shapely.buffer(pts[which], spacing / np.sqrt(2) * 1.001, quad_segs=16)
    out = np.full(len(xy), None, dtype=object)
    out[which] = shapely.set_precision(shapely.intersection(cells[order[which]], discs), grid_size=spacing * 1e-6)
    return out


def _box(xy: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = float(np.max(hi - lo)) + 1.0
    return float(lo[0] - pad), float(lo[1] - pad), float(hi[0] + pad), float(hi[1] + pad)


def _band_owner(xy: np.ndarray, labels: np.ndarray, region_id: np.ndarray) -> np.ndarray:
    """Region id per spot; boundary spots outside the calls (id -1) take the id of the nearest tumour spot."""
    from scipy.spatial import cKDTree

    owner = region_id.copy()
    inside = region_id >= 0
    need = (labels == "boundary") & ~inside
    if need.any() and inside.any():
        _, j = cKDTree(xy[inside]).query(xy[need])
        owner[need] = region_id[inside][j]
    return owner


def _section_geoms(
    xy: np.ndarray, labels: np.ndarray, owner: np.ndarray, score: np.ndarray, spacing_px: float
) -> list[dict]:
    import shapely

    rows: list[dict] = []
    drawn = np.isin(labels, SHAPE_CLASSES) & (owner >= 0)
    if not drawn.any():
        return rows
    cells = _footprints(xy, spacing_px, drawn)
    for rid in np.unique(owner[drawn]):
        for cls in SHAPE_CLASSES:
            m = drawn & (owner == rid) & (labels == cls)
            if not m.any():
                continue
            geom = shapely.make_valid(shapely.union_all(cells[m]))
            polys = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon" and g.area > 0]
            geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
            rows.append(
                {
                    "region": int(rid),
                    "class": cls,
                    "n_spots": int(m.sum()),
                    "mean_score": float(np.nanmean(score[m])) if np.isfinite(score[m]).any() else np.nan,
                    "geometry": geom,
                }
            )
    return rows


@inject_docs
def region_shapes(
    data: AnnData | SpatialData,
    *,
    region_key: str = "spacrd_region",
    key_added: str = "spacrd_regions",
    table_key: str = TABLE_KEY,
    overwrite: bool = False,
) -> GeoDataFrame | None:
    """Polygons of each tumour region and of its boundary band, from :func:`spacrd_sc.tl.tumour_regions`.

    **Footprints.** A polygon is the union of the footprints of its spots, each spot's footprint being its
    share of the tissue: the Voronoi cell of its centre, clipped to a disc of radius spacing / √2 (spacing =
    the centre-to-centre distance ``tumour_regions`` measured) so spots on the tissue edge do not reach into
    empty glass. On a square grid (legacy ST, the square bins of Visium HD and Xenium) these are squares of
    side = spacing, i.e. the bins themselves; on Visium's hexagonal grid, hexagons. Circles of the spot
    diameter were not used: legacy ST spots (100 µm) lie 200 µm apart and Visium's (55 µm) 100 µm apart, so
    discs do not touch and one region would become hundreds of separate dots; a contour of the score field
    would depend on an interpolation and a second threshold, while unions of footprints keep exactly the
    spots ``tumour_regions`` labelled (a spot centre lies inside the polygon of its own class), with holes
    where non-tumour spots lie inside a region.

    One row per tumour region (``obs[f"{{region_key}}_id"]``) and class: ``"tumour"`` (the region's core spots)
    and ``"boundary"`` (its band: the region's edge spots and the non-tumour spots next to it, each of those
    given to the nearest region). Small regions were already dropped by ``tumour_regions``
    (``min_region_size``), so every region here has at least that many called spots.

    Parameters
    ----------
    {data}
    region_key
        ``key_added`` of :func:`spacrd_sc.tl.tumour_regions`: reads ``obs[region_key]``,
        ``obs[f"{{region_key}}_id"]``, ``uns[region_key]`` (µm per pixel, spot spacing, score key) and
        ``uns[f"{{region_key}}_colors"]``.
    key_added
        Name of the shapes element written into a SpatialData.
    {table_key}
    overwrite
        Replace an existing shapes element ``key_added`` (refused otherwise).

    Returns
    -------
    A :class:`~geopandas.GeoDataFrame` (parsed by :class:`spatialdata.models.ShapesModel`) with columns
    ``region`` (int), ``class`` (``tumour`` / ``boundary``), ``section``, ``n_spots``, ``area_um2``,
    ``mean_score`` (mean of the score column ``tumour_regions`` used; NaN without it), ``color`` (hex, the
    class's colour from ``uns``) and ``geometry`` (Polygon, or MultiPolygon where a region's class has several
    parts; holes kept), in the frame of ``obsm['spatial']`` (the H&E's full-resolution pixels, coordinate
    system ``"global"``, for the :mod:`spacrd_sc.io` readers). For an AnnData it is returned; for a
    SpatialData it is written as ``sdata.shapes[key_added]`` (identity transformation to ``"global"``) and
    ``None`` is returned. Where no spot is in a tumour region the frame is empty and, for a SpatialData, no
    element is written (spatialdata holds no empty shapes element); a warning says so.

    Notes
    -----
    To look at them: ``sdata.pl.render_images("he").pl.render_shapes("spacrd_regions", color="class").pl.show()``
    with spatialdata-plot; in napari, ``napari_spatialdata.Interactive(sdata)`` lists the element under the
    ``"global"`` coordinate system beside the H&E (the ``class`` column colours it). ``sdata.write(path)`` or,
    for a SpatialData already on disk, ``sdata.write_element(key_added)`` saves it in the zarr store; QuPath
    reads it through :func:`spacrd_sc.io.write_qupath`.

    Raises
    ------
    KeyError
        No ``obs[region_key]`` / ``obs[f"{{region_key}}_id"]`` / ``uns[region_key]`` (run ``tumour_regions``).
    ValueError
        ``obs[region_key]`` with classes other than tumour / boundary / non-tumour; NaN coordinates; an existing
        shapes element ``key_added`` without ``overwrite=True``.
    """
    import geopandas as gpd
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    adata = _validate.table(_get_table(data, table_key), what="region_shapes")
    hint = "run `sc_crd.tl.tumour_regions` first"
    labels = _validate.obs_column(adata, region_key, param="region_key", hint=hint).astype(str).to_numpy()
    bad = sorted(set(labels) - set(REGION_CATEGORIES))
    if bad:
        raise ValueError(f"obs[{region_key!r}] holds {bad}; expected {list(REGION_CATEGORIES)} ({hint}).")
    ids = _validate.obs_column(adata, f"{region_key}_id", param="region_key", hint=hint).to_numpy(dtype=np.int64)
    info = adata.uns.get(region_key)
    if not isinstance(info, Mapping) or "um_per_px" not in info or "spot_spacing_um" not in info:
        raise KeyError(f"adata.uns[{region_key!r}] with 'um_per_px' and 'spot_spacing_um' is missing; {hint}.")
    if isinstance(data, SpatialData) and key_added in data.shapes and not overwrite:
        raise ValueError(f"sdata.shapes[{key_added!r}] exists; pass `overwrite=True` to replace it.")
    xy = _validate.coordinates(adata)
    params = dict(info.get("params", {}))
    score_key = params.get("score_key", "spacrd_score")
    if score_key in adata.obs:
        score = pd.to_numeric(adata.obs[score_key], errors="coerce").to_numpy(dtype=np.float64)
    else:
        score = np.full(adata.n_obs, np.nan)
    library_key = params.get("library_key")
    sections = (
        np.full(adata.n_obs, "all", dtype=object)
        if library_key is None
        else adata.obs[library_key].astype(str).to_numpy()
    )
    colours = dict(zip(REGION_CATEGORIES, adata.uns.get(f"{region_key}_colors", REGION_COLORS), strict=False))

    rows: list[dict] = []
    for sec in pd.unique(sections):
        m = np.flatnonzero(sections == sec)
        um_per_px = float(info["um_per_px"][sec])
        spacing_px = float(info["spot_spacing_um"][sec]) / um_per_px
        if not np.isfinite(spacing_px):
            logger.warning("Section %r has fewer than two spots; no polygons.", sec)
            continue
        owner = _band_owner(xy[m], labels[m], ids[m])
        for row in _section_geoms(xy[m], labels[m], owner, score[m], spacing_px):
            row["section"] = sec
            row["area_um2"] = float(row["geometry"].area) * um_per_px**2
            row["color"] = colours[row["class"]]
            rows.append(row)
    columns = ["region", "class", "section", "n_spots", "area_um2", "mean_score", "color", "geometry"]
    gdf = gpd.GeoDataFrame(pd.DataFrame(rows, columns=columns), geometry="geometry")
    gdf["region"] = gdf["region"].astype(np.int64)
    gdf["n_spots"] = gdf["n_spots"].astype(np.int64)
    if gdf.empty:  # a valid answer (nothing called), but spatialdata holds no empty shapes element
        logger.warning(
            "No tumour region in obs[%r]: no polygons%s.",
            region_key,
            f"; sdata.shapes[{key_added!r}] is not written" if isinstance(data, SpatialData) else "",
        )
        return None if isinstance(data, SpatialData) else gdf
    gdf = ShapesModel.parse(gdf, transformations={GLOBAL_CS: Identity()})
    logger.info("%d region polygons (%s).", len(gdf), dict(gdf["class"].value_counts()))
    if isinstance(data, SpatialData):
        data.shapes[key_added] = gdf
        return None
    return gdf
