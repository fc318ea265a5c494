"""Reader for legacy Spatial Transcriptomics (ST, 100 µm spots on a 200 µm grid) sections."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import IMAGE_KEY, INSTANCE_KEY, REGION_KEY, SPATIAL_KEY, SPOT_DIAMETER_UM, SPOTS_KEY, TABLE_KEY
from .._images import GLOBAL_CS, _check_path, _image_hw, _image_levels, _image_model, _read_he_lazy
from .._logging import logger
from .._spatial import _add_scanpy_spatial, _check_spots_inside
from ._checks import _check_finite_xy, _number

if TYPE_CHECKING:
    from spatialdata import SpatialData


PLATFORM = "legacy_st"
_SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")


def _make_unique(names: Sequence[str]) -> list[str]:
    """Make names unique the anndata way (``GENE``, ``GENE-1``, ...); log how many were duplicated."""
    import pandas as pd

    idx = pd.Index([str(n) for n in names])
    if idx.is_unique:
        return list(idx)
    dup = idx[idx.duplicated()].unique()
    logger.warning(
        "%d gene names are duplicated (e.g. %s); they were made unique by appending '-1', '-2', ...",
        len(dup),
        ", ".join(map(str, dup[:5])),
    )
    from anndata.utils import make_index_unique

    return list(make_index_unique(idx))


def _read_header(path: Path) -> list[str]:
    """Fields of the first line of a (gzipped) TSV, unmangled."""
    import csv
    import gzip

    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rt", newline="") as fh:  # type: ignore[operator]
        line = fh.readline().rstrip("\r\n")
    return next(csv.reader([line], delimiter="\t"))


def _read_table(path: Path, what: str, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv(path, sep="\t")``; a file that is no (gzipped) text table is a :class:`ValueError` naming it."""
    import gzip

    try:
        return pd.read_csv(path, sep="\t", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise ValueError(f"{what} {str(path)!r} is not a readable tab-separated table ({err}).") from None


def _read_counts(counts: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(counts, pd.DataFrame):
        df = counts.copy(deep=False)  # the index is replaced below: leave the caller's frame alone
        where = "The count matrix"
    else:
        path = _check_path(counts, "Count matrix")
        where = f"The count matrix {str(path)!r}"
        # the header is parsed apart: pandas would rename duplicated gene names to 'GENE.1'
        df = _read_table(path, "Count matrix", header=None, skiprows=1, index_col=0)
        try:
            header = _read_header(path)
        except (UnicodeDecodeError, OSError, EOFError, StopIteration) as err:
            raise ValueError(f"Count matrix {str(path)!r} has no readable header line ({err}).") from None
        if len(header) == df.shape[1] + 1:
            header = header[1:]  # the first field names the spot-id column
        if len(header) != df.shape[1]:
            raise ValueError(
                f"The count matrix header has {len(header)} names for {df.shape[1]} gene columns ({str(path)!r})."
            )
        df.columns = pd.Index(header)
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise ValueError(f"The count matrix is empty (shape {df.shape}).")
    non_numeric = [c for c, dt in df.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
    if non_numeric:
        raise ValueError(
            f"{where} has non-numeric columns {non_numeric[:5]}; expected spots x genes with the "
            "spot id '<x>x<y>' as first column (index)."
        )
    values = df.to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any():
        n_bad = int((~np.isfinite(values) | (values < 0)).any(axis=1).sum())
        raise ValueError(
            f"{where} holds NaN, infinite or negative values in {n_bad} spots; raw counts must be finite and >= 0."
        )
    df.index = df.index.astype(str).rename(None)
    df.columns = df.columns.astype(str).rename(None)
    if not df.index.is_unique:
        dup = df.index[df.index.duplicated()].unique()
        raise ValueError(f"The count matrix has duplicated spot ids, e.g. {list(dup[:5])}.")
    return df


def _read_spots(spots: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(spots, pd.DataFrame):
        df = spots.copy()
    else:
        path = _check_path(spots, "Spot file")
        df = _read_table(path, "Spot file")
    missing = [c for c in _SPOT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"The spot file lacks the columns {missing}; expected "
            "'x y new_x new_y pixel_x pixel_y [selected]' "
            f"(got {list(df.columns)})."
        )
    for c in ("x", "y"):
        try:
            vals = df[c].to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"Spot file column {c!r} must hold integer array coordinates (got text).") from None
        if not np.isfinite(vals).all():
            raise ValueError(f"Spot file column {c!r} has {int((~np.isfinite(vals)).sum())} missing array coordinates.")
        if not np.allclose(vals, np.round(vals)):
            raise ValueError(f"Spot file column {c!r} must hold integer array coordinates.")
        df[c] = np.round(vals).astype(np.int64)
    df.index = pd.Index(df["x"].astype(str) + "x" + df["y"].astype(str)).rename(None)
    if not df.index.is_unique:
        dup = df.index[df.index.duplicated()].unique()
        raise ValueError(f"The spot file has duplicated array coordinates, e.g. {list(dup[:5])}.")
    return df


def _fit_px_per_unit(array: np.ndarray, pixel: np.ndarray) -> float:
    """Robust (Theil–Sen) slope of pixel vs array coordinate: pixels per array unit."""
    from scipy.stats import theilslopes

    ok = np.isfinite(array) & np.isfinite(pixel)  # spots without counts may lack coordinates: fit on the rest
    array, pixel = array[ok], pixel[ok]
    if np.unique(np.round(array, 3)).size < 2:
        raise ValueError("Cannot derive the pixel size: all spots share one array column. Pass `pixel_size_um=`.")
    slope = float(theilslopes(pixel, array)[0])
    if not np.isfinite(slope) or slope == 0:
        raise ValueError("Cannot derive the pixel size from the spot file. Pass `pixel_size_um=`.")
    return abs(slope)


def _default_library_id(counts: Any) -> str:
    if isinstance(counts, str | Path):
        name = Path(counts).name
        return re.sub(r"(\.(tsv|txt|csv))?(\.gz)?$", "", name, flags=re.IGNORECASE) or PLATFORM
    return PLATFORM


def legacy_st(
    counts: str | Path | pd.DataFrame,
    spots: str | Path | pd.DataFrame,
    image: str | Path | np.ndarray | Any | None = None,
    *,
    library_id: str | None = None,
    spot_diameter_um: float = SPOT_DIAMETER_UM["legacy_st"],
    spot_spacing_um: float = 200.0,
    pixel_size_um: float | None = None,
    image_scale: float = 1.0,
    table_key: str = TABLE_KEY,
) -> SpatialData:
    """Read a legacy Spatial Transcriptomics (ST) section into a :class:`~spatialdata.SpatialData`.

    Legacy ST (Ståhl et al. 2016) has 100 µm spots on a 200 µm grid; a section is a spots x genes count
    matrix, a spot ("selection") file with array and pixel coordinates, and optionally an H&E image.

    Parameters
    ----------
    counts
        Path to a spots x genes TSV (optionally gzipped) whose first column is the spot id ``"<x>x<y>"``
        (integer array coordinates), header = gene symbols; or such a DataFrame (index = spot ids).
    spots
        Path to the spot selection TSV with columns ``x y new_x new_y pixel_x pixel_y [selected]``, or
        such a DataFrame. ``pixel_x, pixel_y`` are spot centres in pixels of the full-resolution H&E.
    image
        Path to the H&E (jpg/png/tif), an ``(height, width, 3)`` uint8 numpy/dask array, or ``None``
        for an image-less section. An alpha channel is dropped; other non-RGB images are rejected. A TIFF /
        OME-TIFF / SVS is read lazily, tile by tile, and its stored pyramid levels become the image's levels.
    library_id
        Key under ``uns['spatial']``; default: the counts file name without extension (e.g. ``"G2"``),
        or ``"legacy_st"`` for a DataFrame.
    spot_diameter_um
        Spot diameter in µm.
    spot_spacing_um
        Centre-to-centre distance of neighbouring spots (one array unit) in µm.
    pixel_size_um
        µm per pixel of the global frame (i.e. of ``image`` as given, after ``image_scale``). Default:
        derived from the robust (Theil–Sen) slope of ``pixel_x`` against ``new_x`` (``x`` when absent):
        ``spot_spacing_um / (slope * image_scale)``.
    image_scale
        Factor from the spot file's pixel frame to ``image``'s pixels, for a downscaled image (e.g. 2000/6954
        for her2st A1's 2000 px app image). Spot pixel coordinates are multiplied by it, so the global
        frame is ``image``'s pixel frame.
    table_key
        Name of the table element.

    Returns
    -------
    :class:`~spatialdata.SpatialData` with

    - ``images['he']`` (only with ``image``): RGB uint8 ``(c, y, x)``, identity to ``"global"``;
      multiscale when its longer side exceeds 4096 px or the file stores a pyramid.
    - ``shapes['spots']``: circles at the spot centres (global frame), column ``radius`` = spot radius in
      global pixels, integer index ``0..n-1``.
    - ``tables[table_key]``: AnnData annotating ``"spots"`` with

      - ``X``: raw counts, :class:`scipy.sparse.csr_matrix` float32; ``var_names``: unique gene symbols;
        ``obs_names``: spot ids ``"<x>x<y>"`` in count-matrix order;
      - ``obs['array_x']``, ``obs['array_y']``: integer array coordinates; ``obs['region']``
        (= ``"spots"``) and ``obs['spot_id']`` (= shapes index);
      - ``obsm['spatial']``: spot centres ``(x, y)`` in global pixels, float64;
      - ``uns['spatial'][library_id]``: ``scalefactors['spot_diameter_fullres']`` (spot diameter in
        global pixels); with an image also ``images['hires']`` (longer side ≤ 2000 px) and
        ``scalefactors['tissue_hires_scalef']``; ``metadata`` with ``platform='legacy_st'``,
        ``image_key``, ``spots_key``, ``pixel_size_um``, ``spot_diameter_um``, ``spot_spacing_um``,
        ``image_scale``.

    Raises
    ------
    FileNotFoundError
        A path does not exist (or is a folder).
    TypeError
        A path that is not a str / os.PathLike; a size (``spot_diameter_um``, ``spot_spacing_um``,
        ``pixel_size_um``, ``image_scale``) that is not a number.
    ValueError
        A size that is NaN, infinite or not positive; a count matrix / spot file that is not a readable
        (gzipped) tab-separated table, or an image file that is not a readable image (the message names the
        file); counts that are NaN, infinite or negative; NaN / infinite pixel coordinates of counted spots
        or missing array coordinates; spots of the count matrix missing from the spot file; the image is not
        RGB uint8; spot centres fall outside the image; the pixel size cannot be derived.
    """
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    image_scale = _number(image_scale, "image_scale")
    spot_diameter_um = _number(spot_diameter_um, "spot_diameter_um")
    spot_spacing_um = _number(spot_spacing_um, "spot_spacing_um")
    if pixel_size_um is not None:
        pixel_size_um = _number(pixel_size_um, "pixel_size_um")
    if library_id is None:
        library_id = _default_library_id(counts)

    cnt = _read_counts(counts)
    sel = _read_spots(spots)
    missing = cnt.index.difference(sel.index, sort=False)
    if len(missing):
        raise ValueError(
            f"{len(missing)} spots of the count matrix are not in the spot file, e.g. "
            f"{list(missing[:5])}. Spot ids must be '<x>x<y>' with the spot file's x, y columns."
        )
    for c in ("pixel_x", "pixel_y"):
        try:
            sel[c] = sel[c].to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"Spot file column {c!r} must hold pixel coordinates (numbers).") from None
    _check_finite_xy(
        sel.loc[cnt.index, ["pixel_x", "pixel_y"]].to_numpy(float), "counted spots' pixel_x/pixel_y", list(cnt.index)
    )
    n_extra = len(sel) - len(cnt)
    if n_extra:
        logger.info("Dropping %d spots of the spot file that have no counts.", n_extra)

    # pixel size from the full spot file (more points = better fit), in the spot file's pixel frame
    if pixel_size_um is None:
        ax = "new_x" if "new_x" in sel.columns else "x"
        px_per_unit = _fit_px_per_unit(sel[ax].to_numpy(float), sel["pixel_x"].to_numpy(float))
        ay = "new_y" if "new_y" in sel.columns else "y"
        if sel[ay].nunique() > 1:
            py_per_unit = _fit_px_per_unit(sel[ay].to_numpy(float), sel["pixel_y"].to_numpy(float))
            if abs(py_per_unit / px_per_unit - 1) > 0.05:
                logger.warning(
                    "Pixel scale differs between x (%.1f px/unit) and y (%.1f px/unit); using x.",
                    px_per_unit,
                    py_per_unit,
                )
        pixel_size_um = spot_spacing_um / (px_per_unit * image_scale)
        logger.info("Pixel size %.4f µm/px (%.1f px per array unit).", pixel_size_um, px_per_unit * image_scale)
    diameter_px = float(spot_diameter_um / pixel_size_um)

    sel = sel.loc[cnt.index]
    xy = sel[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64) * float(image_scale)
    if not np.isfinite(xy).all():
        raise ValueError("The spot file has missing pixel coordinates for some counted spots.")

    image_element = None
    if image is not None:
        # a TIFF / OME-TIFF / SVS is read lazily, its stored pyramid levels kept; other files in memory
        arr = _read_he_lazy(image, "Image file") if isinstance(image, str | Path) else image
        image_element = _image_model(arr)
        h, w = _image_hw(_image_levels(image_element)[0])
        _check_spots_inside(xy, diameter_px / 2, h, w, names=list(cnt.index))

    n = cnt.shape[0]
    X = sparse.csr_matrix(cnt.to_numpy(dtype=np.float32, copy=False))
    obs = pd.DataFrame(
        {
            "array_x": sel["x"].to_numpy(np.int64),
            "array_y": sel["y"].to_numpy(np.int64),
            REGION_KEY: pd.Categorical([SPOTS_KEY] * n),
            INSTANCE_KEY: np.arange(n, dtype=np.int64),
        },
        index=cnt.index.copy(),
    )
    var = pd.DataFrame(index=pd.Index(_make_unique(cnt.columns)))
    adata = AnnData(X=X, obs=obs, var=var)
    adata.obsm[SPATIAL_KEY] = xy
    table = TableModel.parse(adata, region=SPOTS_KEY, region_key=REGION_KEY, instance_key=INSTANCE_KEY)

    shapes = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.full(n, diameter_px / 2, dtype=np.float64),
        index=np.arange(n, dtype=np.int64),
        transformations={GLOBAL_CS: Identity()},
    )
    images = {IMAGE_KEY: image_element} if image_element is not None else {}
    sdata = SpatialData(images=images, shapes={SPOTS_KEY: shapes}, tables={table_key: table})
    _add_scanpy_spatial(
        sdata,
        table_key=table_key,
        library_id=str(library_id),
        spot_diameter_px=diameter_px,
        image_key=IMAGE_KEY if image_element is not None else None,
        platform=PLATFORM,
        metadata={
            "pixel_size_um": float(pixel_size_um),
            "spot_diameter_um": float(spot_diameter_um),
            "spot_spacing_um": float(spot_spacing_um),
            "image_scale": float(image_scale),
        },
    )
    return sdata
