"""THE spot-geometry seam and the scanpy ``uns['spatial']`` writer/reader.

:func:`_spot_geometry` answers, for any section the readers produce (legacy ST, Visium, Visium HD, Xenium)
or an AnnData with scanpy's ``uns['spatial']``: which image to read (element and pyramid level, or the
``uns`` copy), the spot centres and the spot diameter in pixels of that image. :mod:`spacrd_sc._patch_reader`
(hence ``pp.spot_patches`` and ``tl.extract_uni``) reads geometry only from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._constants import SPATIAL_KEY, SPOT_DIAMETER_UM, TABLE_KEY, Key
from ._images import _affine_scale, _apply_affine, _as_uint8_rgb, _downscaled_rgb, _global_to_pixel, _image_levels
from ._logging import logger
from ._utils import _get_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


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


def _scalefactors(adata: AnnData, library_id: str | None = None) -> dict[str, float]:
    """``uns['spatial'][lib]['scalefactors']`` (``{}`` when absent): the one reader of the scale factors."""
    lib = _library_id(adata, library_id)
    return dict(adata.uns[Key.uns.spatial][lib].get(Key.uns.scalefactors, {}) or {})


def _spot_diameter_px(adata: AnnData, library_id: str | None = None) -> float:
    """Spot diameter in full-resolution image pixels (``uns['spatial'][lib]['scalefactors']``)."""
    lib = _library_id(adata, library_id)
    sf = _scalefactors(adata, lib)
    if Key.uns.spot_diameter not in sf:
        raise KeyError(f"adata.uns['spatial'][{lib!r}]['scalefactors'] has no {Key.uns.spot_diameter!r}.")
    return float(sf[Key.uns.spot_diameter])


def _positive(value: Any) -> float | None:
    """``value`` as a positive finite float, else ``None`` (metadata may hold strings or junk)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _spot_diameter_um(adata: AnnData, library_id: str | None = None) -> float | None:
    """Spot diameter in µm: ``metadata['spot_diameter_um']`` (or ``'bin_size_um'``), else the platform's
    (:data:`~spacrd_sc._constants.SPOT_DIAMETER_UM`), else ``None``."""
    lib = _library_id(adata, library_id)
    meta = dict(adata.uns[Key.uns.spatial][lib].get(Key.uns.metadata, {}) or {})
    for key in ("spot_diameter_um", "bin_size_um"):
        if (v := _positive(meta.get(key))) is not None:
            return v
    return SPOT_DIAMETER_UM.get(str(meta.get("platform", "")))


def _microns_per_unit(adata: AnnData, library_id: str | None = None) -> tuple[float, str] | None:
    """µm per unit of ``obsm['spatial']`` (full-resolution pixels) and where it was read, or ``None``.

    In order: ``scalefactors['microns_per_pixel']`` (Space Ranger, Visium HD), ``metadata['microns_per_pixel']``,
    else the spot diameter in µm (:func:`_spot_diameter_um`) over ``scalefactors['spot_diameter_fullres']``.
    """
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or len(spatial) == 0:
        return None
    lib = _library_id(adata, library_id)
    entry = spatial[lib] if isinstance(spatial[lib], Mapping) else {}
    where = f"uns['spatial'][{lib!r}]"
    for part in (Key.uns.scalefactors, Key.uns.metadata):
        if (v := _positive(dict(entry.get(part, {}) or {}).get("microns_per_pixel"))) is not None:
            return v, f"{where}['{part}']['microns_per_pixel']"
    um = _spot_diameter_um(adata, lib)
    px = _positive(_scalefactors(adata, lib).get(Key.uns.spot_diameter))
    if um is None or px is None:
        return None
    return um / px, f"spot diameter {um:g} µm / {where}['scalefactors']['{Key.uns.spot_diameter}'] ({px:g})"


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
    exactly as in :func:`scanpy.read_visium` output. ``scalefactors['tissue_hires_scalef']`` is always
    written (1.0 for an image-less section), so ``sq.pl.spatial_scatter(adata, img=False)`` works.
    """
    # ``tissue_hires_scalef`` is written even without an image (1.0: obsm['spatial'] is in full-resolution
    # px): squidpy's spatial_scatter looks it up for every section, image or not
    entry: dict[str, Any] = {
        "scalefactors": {
            "spot_diameter_fullres": float(spot_diameter_fullres),
            "tissue_hires_scalef": float(hires_scalef) if hires_image is not None else 1.0,
        },
        "metadata": dict(metadata or {}),
    }
    images: dict[str, np.ndarray] = {}
    if hires_image is not None:
        images["hires"] = np.ascontiguousarray(hires_image)
    if lowres_image is not None:
        images["lowres"] = np.ascontiguousarray(lowres_image)
        entry["scalefactors"]["tissue_lowres_scalef"] = float(lowres_scalef if lowres_scalef is not None else 1.0)
    if images:
        entry["images"] = images
    adata.uns.setdefault(SPATIAL_KEY, {})
    adata.uns[SPATIAL_KEY][library_id] = entry


def _spots_outside(xy: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """Boolean mask of spots whose centre lies more than ``radius`` outside ``[0, width] × [0, height]``.

    Such a spot is more than half outside the image (it does not overlap it at all).
    """
    xy = np.asarray(xy, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    return (x < -radius) | (y < -radius) | (x > width + radius) | (y > height + radius) | ~np.isfinite(x + y)


def _check_spots_inside(
    xy: np.ndarray, radius: float, height: int, width: int, *, names: Sequence[str] | None = None
) -> None:
    """:class:`ValueError` when any spot centre lies more than ``radius`` outside the image."""
    outside = _spots_outside(xy, radius, height, width)
    n_out = int(outside.sum())
    if n_out:
        which = np.flatnonzero(outside)[:5]
        shown = [str(names[i]) for i in which] if names is not None else [str(i) for i in which]
        raise ValueError(
            f"{n_out} of {len(xy)} spot centres lie outside the {width} x {height} px image by more than "
            f"half a spot (e.g. {', '.join(shown)}). Check that the coordinates and the image match "
            "(image_scale / pixel frame)."
        )


def _add_scanpy_spatial(
    sdata: SpatialData,
    *,
    table_key: str,
    library_id: str,
    spot_diameter_px: float,
    image_key: str | None,
    platform: str,
    metadata: Mapping[str, Any] | None = None,
    hires_max_px: int = 2000,
) -> None:
    """Fill ``sdata[table_key].uns['spatial'][library_id]`` the way scanpy/squidpy expect it.

    Parameters
    ----------
    sdata
        The SpatialData; its table must hold ``obsm['spatial']`` in global units.
    table_key
        Table to annotate.
    library_id
        Key under ``uns['spatial']`` (the section name).
    spot_diameter_px
        Spot diameter in units of the ``"global"`` coordinate system (full-resolution pixels).
    image_key
        Image element to copy a downscaled ``"hires"`` image from; ``None`` for an image-less section.
    platform
        Written to the metadata (e.g. ``"legacy_st"``, ``"visium"``).
    metadata
        Extra metadata entries (``None`` values are dropped: anndata cannot write them).
    hires_max_px
        Longer side of the ``"hires"`` copy.

    Notes
    -----
    Writes ``scalefactors['spot_diameter_fullres']``; ``scalefactors['tissue_hires_scalef']`` mapping global
    units to the pixels of ``images['hires']`` (uint8 RGB, when an image is given; 1.0 without one); and
    ``metadata`` with ``platform``, ``image_key``, ``spots_key`` and the extra entries.
    """
    adata = _get_table(sdata, table_key)
    if SPATIAL_KEY not in adata.obsm:
        raise KeyError(f"Table {table_key!r} has no obsm['spatial'].")
    meta: dict[str, Any] = {"platform": platform}
    if image_key is not None:
        meta["image_key"] = image_key
    region = adata.uns.get("spatialdata_attrs", {}).get("region")
    if isinstance(region, str):
        meta["spots_key"] = region
    elif isinstance(region, list | tuple | np.ndarray) and len(region) == 1:
        meta["spots_key"] = str(region[0])
    for k, v in dict(metadata or {}).items():
        if v is None:
            continue
        meta[k] = v.item() if isinstance(v, np.generic) else v

    hires, scalef = None, 1.0
    if image_key is not None:
        affine = _global_to_pixel(sdata, image_key)
        out = _downscaled_rgb(sdata.images[image_key], affine, hires_max_px)
        if out is not None:
            hires, scalef = out
    _set_scanpy_spatial(
        adata,
        library_id,
        spot_diameter_fullres=float(spot_diameter_px),
        hires_image=hires,
        hires_scalef=scalef,
        metadata=meta,
    )


# ----------------------------------------------------------------------------------------------------------
# the seam: which image, spot centres and diameter in its pixels
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpotGeometry:
    """Where the spots of a section lie in the image to read.

    Attributes
    ----------
    image_key
        Image element of the SpatialData (``source == "element"``) or key in
        ``uns['spatial'][library_id]['images']`` (``source == "uns"``).
    source
        ``"element"`` (a full-resolution image element) or ``"uns"`` (scanpy's downscaled copy).
    level
        Pyramid level read (0: full resolution).
    image
        The level as a ``(c, y, x)`` :class:`xarray.DataArray` (element) or a ``(y, x, 3)`` uint8 array (uns).
    centres_px
        ``(n_spots, 2)`` spot centres ``(x, y)`` in pixels of ``image``, table row order.
    diameter_px
        Spot diameter in pixels of ``image``.
    height, width
        Size of ``image`` in pixels.
    library_id
        Key of ``uns['spatial']`` the geometry came from (``None`` when it has none).
    """

    image_key: str
    source: str
    level: int
    image: Any
    centres_px: np.ndarray
    diameter_px: float
    height: int
    width: int
    library_id: str | None


def _uns_entry(adata: AnnData) -> tuple[str | None, Mapping[str, Any]]:
    """``(library_id, uns['spatial'][library_id])`` of a one-library section, ``(None, {})`` without one."""
    spatial = adata.uns.get(SPATIAL_KEY)
    if not isinstance(spatial, Mapping) or len(spatial) == 0:
        return None, {}
    lib = _library_id(adata)
    entry = spatial[lib]
    return lib, entry if isinstance(entry, Mapping) else {}


def _recorded_image_key(adata: AnnData) -> str | None:
    """The image element a :mod:`spacrd_sc.io` reader recorded in ``uns['spatial'][lib]['metadata']``."""
    _, entry = _uns_entry(adata)
    key = dict(entry.get("metadata", {}) or {}).get("image_key")
    return str(key) if key is not None else None


def _pick_image_key(choices: Sequence[str], image_key: str | None, recorded: str | None) -> str:
    """``image_key``; else the recorded one; else the only image; else the only full-resolution one."""
    choices = list(choices)
    if image_key is not None:
        if image_key not in choices:
            raise KeyError(f"No image {image_key!r}; the images are {choices}.")
        return image_key
    if recorded is not None:
        if recorded in choices:
            return recorded
        logger.warning("The recorded image %r is not in the SpatialData (images: %s).", recorded, choices)
    if len(choices) == 1:
        return choices[0]
    full = [k for k in choices if k.endswith("_full_image")]
    if len(full) == 1:
        return full[0]
    raise ValueError(
        f"The SpatialData has several images {choices} and none is recorded in "
        "uns['spatial'][library_id]['metadata']['image_key']; pass `image_key=`."
    )


def _diameter_global(adata: AnnData) -> float:
    try:
        return _spot_diameter_px(adata)
    except KeyError as err:
        raise KeyError(f"{err.args[0]} The spot diameter is unknown: pass `diameter_px=` (in image pixels).") from err


def _spot_geometry(
    data: AnnData | SpatialData,
    *,
    image_key: str | None = None,
    table_key: str = TABLE_KEY,
    diameter_px: float | None = None,
) -> SpotGeometry:
    """The image to read and the spots in its pixels, for any section :mod:`spacrd_sc.io` produces.

    A SpatialData with images: the element ``image_key``, else the one recorded by the reader
    (``uns['spatial'][lib]['metadata']['image_key']``, the full-resolution H&E where there is one), else the
    only image; level 0 (full resolution); centres mapped from ``"global"`` through the inverse of the
    image's transformation. An AnnData (or an image-less SpatialData whose table keeps scanpy images):
    ``uns['spatial'][lib]['images'][image_key or 'hires']`` at ``tissue_<key>_scalef`` (a warning says the
    copy is downscaled).

    Raises
    ------
    KeyError
        No ``obsm['spatial']``; ``image_key`` not found; no spot diameter (and no ``diameter_px``).
    ValueError
        Image-less section; several images and none recorded; a non-RGB uint8 image; bad ``obsm['spatial']``.
    """
    from anndata import AnnData

    adata = _get_table(data, table_key)
    if SPATIAL_KEY not in adata.obsm:
        raise KeyError(f"The table has no obsm[{SPATIAL_KEY!r}] with the spot centres.")
    xy = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise ValueError(f"obsm['spatial'] must be (n_spots, 2); got shape {xy.shape}.")
    xy = xy[:, :2]
    if diameter_px is not None and not (np.isfinite(diameter_px) and diameter_px > 0):
        raise ValueError(f"`diameter_px` must be a positive number, got {diameter_px!r}.")

    images = {} if isinstance(data, AnnData) else dict(getattr(data, "images", {}) or {})
    lib, entry = _uns_entry(adata)
    if images:
        key = _pick_image_key(list(images), image_key, _recorded_image_key(adata))
        level0 = _image_levels(images[key])[0]
        if level0.sizes.get("c", 0) not in (3, 4) or np.dtype(level0.dtype) != np.uint8:
            raise ValueError(
                f"Image {key!r} must be RGB uint8 (c=3); got c={level0.sizes.get('c')} and dtype {level0.dtype}."
            )
        affine = _global_to_pixel(data, key)  # type: ignore[arg-type]
        diameter = diameter_px if diameter_px is not None else _diameter_global(adata) * _affine_scale(affine)
        return SpotGeometry(
            image_key=key,
            source="element",
            level=0,
            image=level0.transpose("c", "y", "x"),
            centres_px=_apply_affine(affine, xy),
            diameter_px=float(diameter),
            height=int(level0.sizes["y"]),
            width=int(level0.sizes["x"]),
            library_id=lib,
        )

    imgs = dict(entry.get("images", {}) or {})
    if not imgs:
        raise ValueError(
            "The section has no H&E image (image-less section): neither an image element nor "
            f"uns['spatial'][{lib!r}]['images']. Patches need an image; use the image-less mode."
        )
    if image_key is None:
        image_key = "hires" if "hires" in imgs else ("lowres" if "lowres" in imgs else next(iter(imgs)))
    if image_key not in imgs:
        raise KeyError(f"No image {image_key!r} in uns['spatial'][{lib!r}]['images'] ({list(imgs)}).")
    scalef = float(_scalefactors(adata, lib).get(f"tissue_{image_key}_scalef", 1.0))
    logger.warning(
        "Cutting patches from the downscaled %r image of uns['spatial'][%r] (scale %.4g of full "
        "resolution); pass the SpatialData for full-resolution patches.",
        image_key,
        lib,
        scalef,
    )
    img = _as_uint8_rgb(imgs[image_key], f"uns['spatial'][{lib!r}]['images'][{image_key!r}]")
    diameter = diameter_px if diameter_px is not None else _diameter_global(adata) * scalef
    return SpotGeometry(
        image_key=image_key,
        source="uns",
        level=0,
        image=np.ascontiguousarray(img),
        centres_px=xy * scalef,
        diameter_px=float(diameter),
        height=int(img.shape[0]),
        width=int(img.shape[1]),
        library_id=lib,
    )
