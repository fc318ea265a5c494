"""``pp.spot_patches``: square H&E patches centred on the spots (input of the image backbones)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .. import _validate
from .._constants import SPATIAL_KEY, TABLE_KEY
from .._docs import inject_docs
from .._patch_field import resolve_patch_field
from .._patch_reader import _PatchReader
from .._utils import _get_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@inject_docs
def spot_patches(
    data: AnnData | SpatialData,
    *,
    size: int = 224,
    diameter_px: float | None = None,
    patch_field: str | float = "spot",
    microns_per_pixel: float | None = None,
    image_key: str | None = None,
    table_key: str = TABLE_KEY,
    context: float = 1.0,
    indices: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Cut one square H&E patch per spot, centred on the spot, resized to ``size`` × ``size``.

    The crop side is the spot diameter × ``context`` in image pixels, or a physical side in µm
    (``patch_field=112.0``: the field :func:`spacrd_sc.tl.extract_uni` feeds UNI), converted with the
    section's µm per pixel. The spot diameter comes from
    ``uns['spatial'][library_id]['scalefactors']['spot_diameter_fullres']``, in global units, converted to
    pixels of level 0 of the image through the image's transformation to ``"global"``). The crop is
    resized with PIL's bilinear filter, which is antialiased (area-correct) when downsampling; sub-pixel
    spot positions are honoured. Where the crop leaves the image it is padded with white (255, like the
    H&E background).

    Parameters
    ----------
    data
        A :class:`~spatialdata.SpatialData` with an RGB image element (full resolution), or an
        :class:`~anndata.AnnData` whose ``uns['spatial'][lib]['images']['hires']`` is used (a downscaled
        image, scaled by ``tissue_hires_scalef``; a warning says so).
    size
        Side of the output patches in pixels.
    diameter_px
        Spot diameter in pixels of the image that patches are cut from (level 0 of the SpatialData image,
        or the ``hires`` image of an AnnData); default: from ``uns['spatial']``. Only with ``patch_field="spot"``.
    patch_field
        ``"spot"`` (default): the crop side is the spot diameter. A number: the side in µm (e.g.
        ``get_backbone_spec("uni").field_um``, 112 µm); needs the section's µm per pixel.
    microns_per_pixel
        µm per unit of ``obsm['spatial']`` (per full-resolution pixel); default: read from
        ``uns['spatial'][library_id]`` (``microns_per_pixel``, or the spot diameter in µm over
        ``spot_diameter_fullres``).
    {image_key}
        For an AnnData, the key in ``uns['spatial'][lib]['images']`` (default ``"hires"``).
    {table_key}
    context
        Multiplies the crop side (1 = the spot's bounding square or the µm field, 2 = twice as wide).
    indices
        Row positions (or a boolean mask) of the spots to cut; default: all, in table row order.

    Returns
    -------
    ``(n, size, size, 3)`` uint8 RGB array, one patch per requested spot in table row order.
    Nothing is written to ``data``.

    Raises
    ------
    ValueError
        The section has no image (image-less section); more than
        half a spot lies outside the image for some spots (the message gives how many); ``size < 1``.
        Several images and none recorded by the reader. An unknown ``patch_field``; a side in µm on a section
        whose µm per pixel is unknown (pass ``microns_per_pixel=``); ``diameter_px`` with a side in µm.
    KeyError
        ``image_key`` / ``table_key`` not found; no ``obsm['spatial']``; no spot diameter.
    """
    table = _validate.table(_get_table(data, table_key), what="spot_patches")
    if SPATIAL_KEY in table.obsm:
        _validate.coordinates(table)
    if isinstance(patch_field, str) and patch_field == "backbone":
        raise ValueError(
            "spot_patches has no backbone: pass patch_field='spot' or a side in µm, e.g. "
            "`spacrd_sc.model.get_backbone_spec('uni').field_um`."
        )
    field = resolve_patch_field(table, patch_field, microns_per_pixel=microns_per_pixel)
    if field.mode != "spot" and diameter_px is not None:
        raise ValueError("`diameter_px` sets the spot crop; it cannot be combined with a patch_field in µm.")
    if not (np.isfinite(context) and context > 0):
        raise ValueError(f"`context` must be a positive number, got {context!r}.")
    reader = _PatchReader(
        data,
        size=size,
        diameter_px=diameter_px,
        image_key=image_key,
        table_key=table_key,
        context=field.spot_context * context,
    )
    return reader.read(indices)
