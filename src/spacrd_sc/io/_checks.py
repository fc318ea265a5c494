"""Input checks shared by the readers: sizes, JSON / HDF5 / Parquet / zip files and coordinates.

Every check raises a named error (:class:`TypeError`, :class:`ValueError`, :class:`KeyError`) that names the
argument or the file, *before* spatialdata-io, h5py, pandas or scipy are handed the input, so a user never
reads a traceback from deep inside them (``AssertionError`` without a message, ``OSError: file signature not
found``, ``OverflowError`` from a NaN bin index).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._geometry import _check_finite_xy  # noqa: F401  (re-exported: the readers' coordinate check)
from .._images import TIFF_SUFFIXES, _tiff_levels

#: Datasets of a 10x feature-barcode matrix group (``matrix`` in Cell Ranger >= 3, the genome name before).
_H5_MATRIX_DATASETS = ("barcodes", "data", "indices", "indptr", "shape")


def _number(value: Any, name: str, *, where: str | None = None, positive: bool = True) -> float:
    """``value`` as a finite float (``> 0`` unless ``positive=False``), else an error naming it.

    ``name`` is the argument or the key; ``where`` the file it was read from (then a bad value is a
    :class:`ValueError` about the file, an argument of the wrong type a :class:`TypeError`).
    """
    src = f" in {where!r}" if where is not None else ""
    is_number = isinstance(value, numbers.Real | np.floating | np.integer) and not isinstance(value, bool | np.bool_)
    if not is_number:
        msg = f"{name}{src} must be a {'positive ' if positive else ''}number; got {value!r} ({type(value).__name__})."
        raise (ValueError if where is not None else TypeError)(msg)
    out = float(value)
    if not math.isfinite(out) or (positive and out <= 0):
        what = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{name}{src} must be {what}; got {value!r}.")
    return out


def _read_json(file: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``file``; :class:`ValueError` naming the file when it is not valid JSON or no object."""
    try:
        doc = json.loads(Path(file).read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(file)!r} is not valid JSON ({err}).") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"{what} {str(file)!r} must hold a JSON object; got a {type(doc).__name__}.")
    return dict(doc)


def _sizes(
    doc: Mapping[str, Any], keys: Iterable[str], file: Path, *, optional: Iterable[str] = ()
) -> dict[str, float]:
    """The positive finite numbers ``doc[k]`` (``keys`` required, ``optional`` where present)."""
    keys = list(keys)
    missing = [k for k in keys if k not in doc]
    if missing:
        raise ValueError(f"{str(file)!r} lacks the keys {missing}.")
    out = {k: _number(doc[k], k, where=str(file)) for k in keys}
    out.update({k: _number(doc[k], k, where=str(file)) for k in optional if k in doc})
    return out


def _check_hdf5(file: Path, what: str, *, matrix: bool = True) -> None:
    """:class:`ValueError` naming ``file`` when it is not HDF5 (or, with ``matrix``, no 10x count matrix)."""
    import h5py

    if not h5py.is_hdf5(file):
        raise ValueError(
            f"{what} {str(file)!r} is not an HDF5 file (damaged, truncated or another format renamed '.h5')."
        )
    if not matrix:
        return
    try:
        with h5py.File(file, "r") as f:
            groups = [f["matrix"]] if "matrix" in f else [g for g in f.values() if isinstance(g, h5py.Group)]
            ok = any(all(d in g for d in _H5_MATRIX_DATASETS) for g in groups)
    except OSError as err:
        raise ValueError(f"{what} {str(file)!r} cannot be read as HDF5 ({err}).") from None
    if not ok:
        raise ValueError(
            f"{what} {str(file)!r} is HDF5 but holds no 10x feature-barcode matrix (a 'matrix' group with "
            f"{list(_H5_MATRIX_DATASETS)})."
        )


def _check_parquet(file: Path, what: str, columns: Sequence[str]) -> None:
    """:class:`ValueError` naming ``file`` when it is no Parquet file or lacks ``columns``."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(file).names
    except Exception as err:  # noqa: BLE001  pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
        raise ValueError(f"{what} {str(file)!r} is not a readable Parquet file ({err}).") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{what} {str(file)!r} lacks the columns {missing} (has {names}).")


def _check_zip(file: Path, what: str) -> None:
    import zipfile

    if not zipfile.is_zipfile(file):
        raise ValueError(f"{what} {str(file)!r} is not a zip archive (damaged or truncated).")


def _check_image(file: Path, what: str) -> None:
    """:class:`ValueError` naming ``file`` when its header is not a readable TIFF / PNG / JPEG (no pixels read).

    A TIFF's pyramid is checked too (levels that are downsampled copies of level 0, a codec installed for
    its tiles): see :func:`spacrd_sc._images._tiff_levels`.
    """
    file = Path(file)
    if file.name.lower().endswith(TIFF_SUFFIXES):
        _tiff_levels(file, what)
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file):
            return
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{what} {str(file)!r} is not a readable image ({err}).") from None
