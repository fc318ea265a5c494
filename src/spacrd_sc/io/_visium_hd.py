"""Reader for 10x Visium HD (Space Ranger ≥ 3 ``outs``): bins summed into spot-sized squares."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._images import GLOBAL_CS, _check_path
from .._logging import logger
from ._checks import _check_finite_xy, _check_hdf5, _check_image, _check_parquet, _number, _read_json, _sizes
from ._tenx import (
    _SCALEFACTORS,
    _VISIUM_COUNTS,
    DEFAULT_BIN_UM,
    _add_circles_and_table,
    _bin_label,
    _binned_table,
    _default_library_id,
    _drop_element,
    _drop_table,
    _finish,
    _first_image,
    _lazy_fullres,
    _quiet_reader,
    _sum_by_grid,
    _valid_name,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData


#: Columns of a bin ``tissue_positions.parquet``, in the order spatialdata-io 0.7.1 requires.
_HD_POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)


def _check_feature_slice(file: Path) -> None:
    """``feature_slice.h5`` is HDF5 with the run metadata spatialdata-io parses (``metadata_json``)."""
    import h5py

    _check_hdf5(file, "Visium HD feature slice", matrix=False)
    with h5py.File(file, "r") as f:
        meta = f.attrs.get("metadata_json")
    try:
        doc = json.loads(meta) if meta is not None else None
        layout = json.loads(doc["hd_layout_json"]) if isinstance(doc, dict) and "hd_layout_json" in doc else None
    except (ValueError, TypeError):
        layout = None
    if not isinstance(layout, dict):
        raise ValueError(
            f"Visium HD feature slice {str(file)!r} lacks a readable 'metadata_json' attribute with 'hd_layout_json'."
        )


def _check_scalefactors(path: Path, bin_file: Path, src_um: int) -> dict[str, float]:
    """Positive finite sizes in the section's and the bins' ``scalefactors_json.json``; the bins' sizes agree."""
    top = path / "spatial" / _SCALEFACTORS
    if top.is_file():
        _sizes(_read_json(top, "Scale factors file"), ("tissue_hires_scalef", "tissue_lowres_scalef"), top)
    sf = _read_json(bin_file, "Scale factors file")
    sizes = _sizes(
        sf,
        ("spot_diameter_fullres", "tissue_hires_scalef", "tissue_lowres_scalef"),
        bin_file,
        optional=("bin_size_um", "microns_per_pixel"),
    )
    if "bin_size_um" in sizes and not np.isclose(sizes["bin_size_um"], src_um):
        raise ValueError(
            f"{str(bin_file)!r} gives bin_size_um={sizes['bin_size_um']:g} for the {src_um} µm bin folder."
        )
    if {"bin_size_um", "microns_per_pixel"} <= sizes.keys() and not np.isclose(
        sizes["bin_size_um"] / sizes["spot_diameter_fullres"], sizes["microns_per_pixel"]
    ):
        raise ValueError(
            f"{str(bin_file)!r} is inconsistent: bin_size_um / spot_diameter_fullres = "
            f"{sizes['bin_size_um'] / sizes['spot_diameter_fullres']:g} µm/px but microns_per_pixel = "
            f"{sizes['microns_per_pixel']:g}."
        )
    return sizes


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
    TypeError
        ``path`` is not a str / os.PathLike; ``bin_size_um`` is not a number.
    ValueError
        ``bin_size_um`` is NaN, infinite, not positive or smaller than the source bins. Checked before the
        read, naming the file: ``feature_slice.h5`` or a count matrix that is not HDF5 (or lacks its metadata /
        matrix); scale factors that are not JSON or whose sizes are not positive finite numbers or disagree
        (``bin_size_um`` vs the folder, ``bin_size_um / spot_diameter_fullres`` vs ``microns_per_pixel``); a
        positions file that is not Parquet or lacks columns; an image that is not readable. After the read:
        NaN / infinite bin centres; fewer than three bins off one line of the array.
    """
    import spatialdata_io

    if "dataset_id" in kwargs:
        raise TypeError("Pass the section name as `library_id=`, not `dataset_id=`.")
    path = _check_path(path, "Visium HD", kind="dir")
    bin_size_um = _number(bin_size_um, "bin_size_um")
    slices = sorted(f.name for f in path.iterdir() if f.is_file() and f.name.endswith("feature_slice.h5"))
    if not slices:
        raise FileNotFoundError(
            f"'feature_slice.h5' (or '<library_id>_feature_slice.h5') not found in {str(path)!r}; "
            "point `path` at the Visium HD `outs` folder."
        )
    _check_feature_slice(path / slices[0])
    bins = _hd_available_bins(_hd_bins_folder(path))
    if not bins:
        raise FileNotFoundError(f"No binned outputs ('binned_outputs/square_XXXum') in {str(path)!r}.")
    if kwargs.get("fullres_image_file") is not None:
        _check_image(_check_path(kwargs["fullres_image_file"], "Full-resolution image"), "Full-resolution image")
    images = [path / "spatial" / n for n in ("tissue_hires_image.png", "tissue_lowres_image.png")]
    if kwargs.get("fullres_image_file") is None and (path / "microscope_image").is_dir():
        images += sorted((path / "microscope_image").iterdir())
    for file in images:
        if file.is_file() and file.suffix.lower() in {".tif", ".tiff", ".btf", ".png", ".jpg", ".jpeg"}:
            _check_image(file, "Image")
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
    _check_hdf5(_check_path(bin_dir / counts_name, "Count matrix"), "Count matrix")
    positions_file = _check_path(bin_dir / "spatial" / "tissue_positions.parquet", "Bin positions file")
    _check_parquet(positions_file, "Bin positions file", _HD_POSITION_COLUMNS)
    sf_file = _check_path(bin_dir / "spatial" / _SCALEFACTORS, "Scale factors file")
    sf = _check_scalefactors(path, sf_file, src_um)
    src_side_px = sf["spot_diameter_fullres"]
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
    _check_finite_xy(xy, f"bin pixel centres in {str(positions_file)!r}", list(src.obs_names))
    arr = np.column_stack([src.obs["array_col"].to_numpy(float), src.obs["array_row"].to_numpy(float)])
    _check_finite_xy(arr, f"bin array indices in {str(positions_file)!r}", list(src.obs_names))
    if np.linalg.matrix_rank(np.column_stack([arr, np.ones(len(arr))])) < 3:
        # the array -> pixel affine below needs three bins not on one line; fewer would place squares anywhere
        raise ValueError(
            f"The {src_um} µm count matrix of {str(path)!r} has {src.n_obs} bin(s) on a single line of the array: "
            "three bins not on one line are needed to place the aggregated squares."
        )
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

    fullres = kwargs.get("fullres_image_file")
    if fullres is None and (path / "microscope_image").is_dir():
        found = sorted(f for f in (path / "microscope_image").iterdir() if f.is_file())
        fullres = found[0] if found else None
    _lazy_fullres(sdata, f"{dataset_id}_full_image", fullres)
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
