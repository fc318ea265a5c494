"""The field a spot patch covers: the spot itself, or a physical side in µm (a backbone's training field).

``pp.spot_patches`` and ``tl.extract_uni`` resolve ``patch_field`` here, before any image is read or model
built, into a crop side in spot diameters that the patch reader takes as its ``context``; after reading,
:meth:`PatchField.record` gives what was actually used (µm per pixel of the image read, the field in µm and in
level-0 pixels) for ``uns[key]['params']``.

The scale comes from the section: ``microns_per_pixel=`` (µm per unit of ``obsm['spatial']``, i.e. per
full-resolution pixel), else :func:`spacrd_sc._spatial._microns_per_unit` (Space Ranger's
``microns_per_pixel``, or the spot diameter in µm over ``spot_diameter_fullres``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._logging import logger
from ._spatial import _microns_per_unit, _spot_diameter_px

if TYPE_CHECKING:
    from anndata import AnnData

#: Named values of ``patch_field`` (a number is a side in µm).
PATCH_FIELDS = ("backbone", "spot")


def _positive_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class PatchField:
    """A resolved ``patch_field``.

    Attributes
    ----------
    mode
        ``"spot"`` (side = the spot diameter), ``"backbone"`` (the backbone's field) or ``"um"`` (a side in µm
        given by the user).
    field_um
        Physical side in µm (``mode == "um"``), else ``None``.
    spot_context
        Side in spot diameters: the reader's ``context`` (before the user's own ``context`` factor).
    microns_per_unit
        µm per unit of ``obsm['spatial']`` (``None``: unknown, allowed only with ``mode == "spot"``).
    source
        Where ``microns_per_unit`` came from.
    spot_diameter_units
        ``scalefactors['spot_diameter_fullres']`` (spot diameter in units of ``obsm['spatial']``), if recorded.
    """

    mode: str
    field_um: float | None
    spot_context: float
    microns_per_unit: float | None
    source: str
    spot_diameter_units: float | None

    def record(self, reader: Any) -> dict[str, Any]:
        """``patch_field``, ``microns_per_pixel`` (µm per level-0 pixel of the image read, NaN when unknown),
        ``microns_per_pixel_source``, ``field_um`` and ``field_px`` (crop side in those pixels) of ``reader``."""
        field_px = float(reader.side_px)
        mpp = float("nan")
        if self.microns_per_unit is not None and self.spot_diameter_units is not None:
            # the reader's spot diameter is spot_diameter_fullres expressed in the pixels of the image it reads
            mpp = self.microns_per_unit * self.spot_diameter_units / float(reader.diameter_px)
        return {
            "patch_field": self.mode if self.mode != "um" else float(self.field_um),  # type: ignore[arg-type]
            "microns_per_pixel": mpp,
            "microns_per_pixel_source": self.source,
            "field_um": field_px * mpp,
            "field_px": field_px,
        }


def resolve_patch_field(
    adata: AnnData,
    patch_field: str | float,
    *,
    microns_per_pixel: float | None = None,
    backbone_field_um: float | None = None,
    backbone: str | None = None,
) -> PatchField:
    """Check ``patch_field`` and ``microns_per_pixel`` and turn them into the reader's crop side.

    ``"backbone"`` is ``backbone_field_um`` µm (the backbone's µm/px × input size); a backbone without a
    recorded scale falls back to ``"spot"`` with an info message. A number is a side in µm.

    Raises
    ------
    ValueError
        Unknown ``patch_field``; a non-positive size; a physical field on a section whose µm per pixel is
        unknown (the message says to pass ``microns_per_pixel=`` or ``patch_field="spot"``).
    KeyError
        A physical field without ``scalefactors['spot_diameter_fullres']``.
    """
    if microns_per_pixel is not None:
        microns_per_pixel = _positive_number(microns_per_pixel, "microns_per_pixel")
    if isinstance(patch_field, str):
        if patch_field not in PATCH_FIELDS:
            raise ValueError(
                f"Unknown patch_field {patch_field!r}; pass one of {PATCH_FIELDS} or a side in µm (a number)."
            )
        if patch_field == "backbone" and backbone_field_um is None:
            logger.info(
                "Backbone %r records no µm per pixel: patches cover the spot diameter (patch_field='spot').",
                backbone,
            )
            patch_field = "spot"
        field_um = None if patch_field == "spot" else float(backbone_field_um)  # type: ignore[arg-type]
    else:
        field_um = _positive_number(patch_field, "patch_field")

    mode = "um" if not isinstance(patch_field, str) else patch_field
    if microns_per_pixel is not None:
        scale: tuple[float, str] | None = (microns_per_pixel, "microns_per_pixel argument")
    else:
        scale = _microns_per_unit(adata)
    try:
        spot_units: float | None = _spot_diameter_px(adata)
    except KeyError:
        spot_units = None
    if field_um is None:
        mpu, source = scale if scale is not None else (None, "unknown")
        return PatchField("spot", None, 1.0, mpu, source, spot_units)
    if scale is None:
        what = f"the {field_um:g} µm field of backbone {backbone!r}" if mode == "backbone" else f"{field_um:g} µm"
        raise ValueError(
            f"The image's µm per pixel is unknown, so the patch side ({what}) cannot be converted to pixels: "
            "uns['spatial'][library_id] records neither scalefactors/metadata['microns_per_pixel'] nor a spot "
            "diameter in µm (metadata['spot_diameter_um'] or a known metadata['platform']). Pass "
            "`microns_per_pixel=` (µm per unit of obsm['spatial'], i.e. per full-resolution pixel), or "
            "`patch_field='spot'` to crop the spot diameter instead."
        )
    if spot_units is None:
        spot_units = _spot_diameter_px(adata)  # raises the KeyError naming the missing scale factor
    return PatchField(mode, field_um, field_um / (scale[0] * spot_units), scale[0], scale[1], spot_units)
