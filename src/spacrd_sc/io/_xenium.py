"""Reader for 10x Xenium: cells summed into spot-sized squares, the post-Xenium H&E aligned."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._images import (
    GLOBAL_CS,
    _affine_scale,
    _apply_affine,
    _check_path,
    _image_hw,
    _image_levels,
    _image_model,
    _read_he_lazy,
)
from .._logging import logger
from .._spatial import _spots_outside
from ._checks import _check_finite_xy, _check_hdf5, _check_parquet, _check_zip, _number, _read_json
from ._tenx import (
    DEFAULT_BIN_UM,
    _add_circles_and_table,
    _bin_label,
    _binned_table,
    _default_library_id,
    _drop_table,
    _finish,
    _quiet_reader,
    _sum_by_grid,
    _valid_name,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData


#: Name spatialdata-io gives to a post-Xenium H&E image element; reused for ours.
XENIUM_HE_KEY = "he_image"
#: Table key under which the cell-level Xenium table is kept with ``keep_source=True``.
XENIUM_CELL_TABLE_KEY = "cell_table"


#: Decoded transcripts of a Xenium run (``feature_name``, ``x_location``, ``y_location`` in µm, ``qv``).
_TRANSCRIPTS = "transcripts.parquet"


def _find_alignment(path: Path) -> Path:
    """The only ``*he_imagealignment.csv`` of a Xenium folder; :class:`ValueError` when none or several."""
    found = sorted(path.glob("*he_imagealignment.csv"))
    if len(found) == 1:
        logger.info("Using the H&E alignment %s.", found[0])
        return found[0]
    what = f"several alignment files {[f.name for f in found]}" if found else "no '*_he_imagealignment.csv'"
    raise ValueError(
        f"An H&E image was given without its alignment and {str(path)!r} holds {what}. Pass `he_alignment=` "
        "(the '*_he_imagealignment.csv' exported by Xenium Explorer, or np.eye(3) when the H&E is already in "
        "Xenium morphology pixels)."
    )


def _transcript_counts(file: Path, var_names: pd.Index, min_qv: float) -> tuple[sparse.csr_matrix, np.ndarray, int]:
    """One-hot (transcripts x genes) counts, their ``(x, y)`` in µm, and how many transcripts were dropped.

    Kept: ``qv >= min_qv`` and a ``feature_name`` among ``var_names`` (the gene-expression features). A symbol
    listed twice in the panel (``GENE``, ``GENE-1`` after making names unique) counts under its first entry.
    """
    df = pd.read_parquet(file, columns=["feature_name", "x_location", "y_location", "qv"])
    _check_finite_xy(df[["x_location", "y_location"]].to_numpy(float), f"transcript positions in {str(file)!r}")
    names = df["feature_name"].map(lambda v: v.decode() if isinstance(v, bytes) else str(v))
    gene = pd.Index(var_names).get_indexer(names)
    keep = (gene >= 0) & (df["qv"].to_numpy(float) >= float(min_qv))
    if not keep.any():
        raise ValueError(f"No transcript of {str(file)!r} has qv >= {min_qv} and a gene of the cell matrix.")
    gene = gene[keep]
    X = sparse.csr_matrix(
        (np.ones(len(gene), dtype=np.float32), (np.arange(len(gene)), gene)), shape=(len(gene), len(var_names))
    )
    xy = df.loc[keep, ["x_location", "y_location"]].to_numpy(float)
    return X, xy, int((~keep).sum())


def _read_alignment(he_alignment: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
    """The 3x3 H&E px → morphology px affine from 10x's ``*_imagealignment.csv`` (or an array)."""
    if isinstance(he_alignment, str | os.PathLike):
        file = _check_path(he_alignment, "H&E alignment file")
        try:
            M = np.loadtxt(file, delimiter=",", dtype=float, ndmin=2)
        except ValueError as err:
            raise ValueError(
                f"{str(file)!r} is not a 3 x 3 comma-separated affine matrix (10x's '*_he_imagealignment.csv')."
            ) from err
    else:
        M = np.asarray(he_alignment, dtype=float)
    if M.shape != (3, 3):
        raise ValueError(f"The H&E alignment must be a 3 x 3 affine matrix; got shape {M.shape}.")
    if not np.isfinite(M).all():
        raise ValueError(f"The H&E alignment holds NaN or infinite values: {M.tolist()}.")
    if not np.allclose(M[2], [0.0, 0.0, 1.0], atol=1e-6):
        raise ValueError(f"The H&E alignment is not affine (last row {M[2].tolist()}, expected [0, 0, 1]).")
    if abs(np.linalg.det(M[:2, :2])) < 1e-12:
        raise ValueError("The H&E alignment matrix is singular.")
    return M


def xenium(
    path: str | os.PathLike[str],
    *,
    bin_size_um: float = DEFAULT_BIN_UM,
    he_image: str | os.PathLike[str] | np.ndarray | None = None,
    he_alignment: str | os.PathLike[str] | np.ndarray | None = None,
    library_id: str | None = None,
    keep_source: bool = False,
    source: Literal["cells", "transcripts"] = "cells",
    min_qv: float = 20.0,
    table_key: str = TABLE_KEY,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Xenium output folder and sum its cells (or transcripts) into spot-sized square pseudo-spots.

    :func:`spatialdata_io.xenium` reads the cell table; cell counts (``source="cells"``, by cell centroid)
    or the decoded transcripts of ``transcripts.parquet`` (``source="transcripts"``, by transcript position,
    ``qv >= min_qv``, genes of the cell matrix only: control probes and codewords are dropped) are summed into
    ``bin_size_um`` squares of a grid anchored at the Xenium frame origin (µm). Without an H&E the section is
    **image-less** and the ``"global"`` frame (and ``obsm['spatial']``) is Xenium *morphology pixels*
    (µm / ``pixel_size`` from ``experiment.xenium``); plot it with
    ``sq.pl.spatial_scatter(adata, color=..., img=False, scale_factor=1.0)``. With ``he_image`` the
    post-Xenium H&E becomes the ``"global"`` frame: bin centres are mapped into H&E pixels and every other
    element gets the inverse alignment composed into its transformation.

    Parameters
    ----------
    path
        Xenium output folder: ``experiment.xenium``, ``cell_feature_matrix.h5``, ``cells.parquet``,
        ``cells.zarr.zip``.
    bin_size_um
        Side of the square bins in µm (default 55, a Visium spot).
    he_image
        Post-Xenium H&E: an (OME-)TIFF (read lazily), a PNG/JPEG, or an ``(y, x, 3)`` uint8 array.
        When ``None`` but spatialdata-io loaded an aligned ``"he_image"`` (``aligned_images=True`` and
        10x's ``*_he_image.ome.tif`` + ``*_he_imagealignment.csv`` in ``path``), that image is used.
    he_alignment
        10x's ``*_he_imagealignment.csv`` (from Xenium Explorer) or a 3x3 array: the affine that maps H&E
        pixel ``(x, y, 1)`` to Xenium morphology pixels (10x's documented direction; multiply by
        ``pixel_size`` for µm). ``None`` with ``he_image``: the only ``*he_imagealignment.csv`` in ``path``;
        an error when there is none (pass ``np.eye(3)`` for an H&E already in morphology pixels).
    library_id
        Section name (``uns['spatial']`` key). Default: the folder name.
    keep_source
        Keep the cell-level table as ``"cell_table"`` annotating spatialdata-io's ``"cell_circles"`` (its
        ``obsm['spatial']`` stays in µm, as spatialdata-io writes it).
    source
        What is binned: ``"cells"`` (cell counts at their centroids) or ``"transcripts"`` (each decoded
        transcript at its own position; needs ``transcripts.parquet``; transcripts of cells cut by a bin
        border are split between bins, which pseudo-spots of real Visium spots also do).
    min_qv
        Lowest transcript quality (Phred ``qv``) kept with ``source="transcripts"`` (10x's default 20).
    table_key
        Key of the binned table.
    **kwargs
        Passed to :func:`spatialdata_io.xenium`. Defaults set here (only the cell table is needed):
        ``cells_boundaries``, ``nucleus_boundaries``, ``cells_labels``, ``nucleus_labels``, ``transcripts``,
        ``morphology_mip``, ``morphology_focus``, ``aligned_images`` all ``False``;
        ``cells_as_circles=keep_source``.

    Returns
    -------
    :class:`~spatialdata.SpatialData` with

    - image ``"he_image"`` (with an H&E; identity to ``"global"``, multiscale when large) and whatever else
      was requested from spatialdata-io through ``kwargs``;
    - shapes ``"square_XXXum"`` (``XXX`` = ``bin_size_um``): one circle per non-empty bin, radius half the bin
      side in global px;
    - table ``table_key`` annotating them (``obs['region']``, ``obs['spot_id']``), with

      - ``X``: summed raw counts (gene-expression features unless ``gex_only=False``), float32 CSR;
        ``var`` as the cell matrix's (unique gene symbols, ``gene_ids``, ``feature_types``, ``genome``);
      - ``obs['array_row']``, ``obs['array_col']``: bin indices ``floor(y / bin)``, ``floor(x / bin)`` (µm);
        ``obs['n_cells']`` (cells summed) or ``obs['n_transcripts']`` (transcripts summed);
      - ``obsm['spatial']``: bin centres ``(x, y)`` in H&E px (with an H&E) or morphology px (without);
      - ``uns['spatial'][library_id]``: ``images['hires']`` and ``scalefactors['tissue_hires_scalef']``
        (with an H&E), ``scalefactors['spot_diameter_fullres']`` (bin side in global px) and ``metadata``
        (``platform='xenium'``, ``image_key`` (with an H&E), ``spots_key``, ``library_id``, ``bin_size_um``,
        ``pixel_size_um``, ``n_cells``, ``source`` (and ``n_transcripts``, ``n_transcripts_dropped``,
        ``min_qv`` for transcripts), ``global_frame`` (``'he_pixels'`` or ``'morphology_pixels'``),
        ``he_to_morphology`` (3x3, with an H&E), ``analysis_sw_version``).

    Raises
    ------
    FileNotFoundError
        The folder, ``experiment.xenium``, ``cell_feature_matrix.h5``, ``cells.parquet``, ``cells.zarr.zip``,
        ``he_image``, ``he_alignment`` or (``source="transcripts"``) ``transcripts.parquet`` is missing (the
        message names it).
    TypeError
        ``path`` is not a str / os.PathLike; ``bin_size_um`` / ``min_qv`` not a number.
    ValueError
        An H&E without an alignment (none given, none or several ``*he_imagealignment.csv`` in ``path``);
        a malformed alignment matrix (or one with NaN / infinite values); a missing ``pixel_size`` or one that
        is not a positive finite number; ``bin_size_um`` NaN, infinite or not positive; ``min_qv`` NaN; an
        unknown ``source``. Checked before the read, naming the file: ``experiment.xenium`` not JSON,
        ``cell_feature_matrix.h5`` not HDF5, ``cells.parquet`` / ``transcripts.parquet`` not Parquet or
        lacking columns, ``cells.zarr.zip`` not a zip, an H&E that is not a readable image. After the read:
        NaN / infinite cell centroids or transcript positions.
    """
    import spatialdata_io
    from spatialdata.transformations import Affine, Identity, Sequence, get_transformation, set_transformation

    path = _check_path(path, "Xenium", kind="dir")
    specs_file = _check_path(path / "experiment.xenium", "Xenium specification file")
    matrix_file = _check_path(
        path / "cell_feature_matrix.h5",
        "Cell count matrix",
        hint="spatialdata-io reads the HDF5 matrix (the 'cell_feature_matrix/' MEX folder alone is not enough).",
    )
    cells_file = _check_path(path / "cells.parquet", "Cell table")
    zip_file = _check_path(
        path / "cells.zarr.zip", "Cell zarr archive", hint="spatialdata-io 0.7.1 opens it even for the table only."
    )
    bin_size_um = _number(bin_size_um, "bin_size_um")
    specs = _read_json(specs_file, "Xenium specification file")
    if "pixel_size" not in specs:
        raise ValueError(f"{str(specs_file)!r} has no 'pixel_size' (µm per morphology pixel).")
    pixel_size = _number(specs["pixel_size"], "pixel_size", where=str(specs_file))
    _check_hdf5(matrix_file, "Cell count matrix")
    _check_parquet(cells_file, "Cell table", ["cell_id", "x_centroid", "y_centroid"])
    _check_zip(zip_file, "Cell zarr archive")
    he_arr = None
    if he_image is not None:
        he_arr = he_image if isinstance(he_image, np.ndarray) else _read_he_lazy(he_image)
    if he_alignment is not None and he_image is None and not kwargs.get("aligned_images", False):
        raise ValueError("`he_alignment` was given without `he_image`.")
    if he_image is not None and he_alignment is None:
        he_alignment = _find_alignment(path)
    M = _read_alignment(he_alignment) if he_alignment is not None else None
    if source not in ("cells", "transcripts"):
        raise ValueError(f"source must be 'cells' or 'transcripts'; got {source!r}.")
    if source == "transcripts":
        tx = _check_path(path / _TRANSCRIPTS, "Transcripts file", hint="Needed for source='transcripts'.")
        _check_parquet(tx, "Transcripts file", ["feature_name", "x_location", "y_location", "qv"])
        min_qv = _number(min_qv, "min_qv", positive=False)

    library_id = _valid_name(library_id) if library_id is not None else _default_library_id(path)
    for key in (
        "cells_boundaries",
        "nucleus_boundaries",
        "cells_labels",
        "nucleus_labels",
        "transcripts",
        "morphology_mip",
        "morphology_focus",
        "aligned_images",
    ):
        kwargs.setdefault(key, False)
    kwargs.setdefault("cells_as_circles", keep_source)

    logger.info("Reading Xenium section %r from %s.", library_id, path)
    with _quiet_reader():
        sdata = spatialdata_io.xenium(path, **kwargs)
    cells = sdata.tables[TABLE_KEY]
    if not cells.var_names.is_unique:  # spatialdata-io 0.7.1 does not make Xenium gene names unique
        cells.var_names_make_unique()
    if cells.n_obs == 0:
        raise ValueError(f"The Xenium cell matrix of {str(path)!r} has no cells.")
    xy_um = np.asarray(cells.obsm[SPATIAL_KEY], dtype=float)
    if source == "cells":
        _check_finite_xy(xy_um, f"cell centroids in {str(cells_file)!r}", list(cells.obs_names))

    # the "global" frame: H&E pixels when an H&E is given / was loaded, else morphology pixels
    if he_arr is None and XENIUM_HE_KEY in sdata.images and he_image is None:
        loaded = get_transformation(sdata.images[XENIUM_HE_KEY], GLOBAL_CS)
        M = np.asarray(loaded.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
        he_present = True
    else:
        he_present = he_arr is not None
    morph_to_global = np.linalg.inv(M) if he_present else np.eye(3)

    if source == "transcripts":
        X_src, xy_um, n_dropped = _transcript_counts(path / _TRANSCRIPTS, cells.var_names, min_qv)
        member_name = "n_transcripts"
    else:
        X_src, n_dropped, member_name = cells.X, 0, "n_cells"
    X, rows, cols, G = _sum_by_grid(X_src, np.floor(xy_um[:, 1] / bin_size_um), np.floor(xy_um[:, 0] / bin_size_um))
    n_members = np.asarray(G.sum(1)).ravel()
    centres_um = np.column_stack([(cols + 0.5) * bin_size_um, (rows + 0.5) * bin_size_um])
    centres = _apply_affine(morph_to_global, centres_um / pixel_size)
    side_px = bin_size_um / pixel_size * _affine_scale(morph_to_global)

    shapes_key = f"square_{_bin_label(bin_size_um)}um"
    agg = _binned_table(
        X,
        cells.var,
        rows,
        cols,
        n_members,
        centres,
        shapes_key=shapes_key,
        barcode_prefix=f"x_{_bin_label(bin_size_um)}um",
        member_name=member_name,
    )

    if he_present:
        # every spatialdata-io element lives in morphology px ("global"); H&E px become the new "global".
        to_he = Affine(morph_to_global, input_axes=("x", "y"), output_axes=("x", "y"))
        for _, name, element in list(sdata.gen_spatial_elements()):
            if name == XENIUM_HE_KEY:
                continue
            old = get_transformation(element, get_all=True).get(GLOBAL_CS)
            if old is not None:
                set_transformation(element, Sequence([old, to_he]), GLOBAL_CS)
        if he_arr is not None:
            if XENIUM_HE_KEY in sdata.images:
                logger.warning("Replacing the aligned H&E found by spatialdata-io with `he_image`.")
                del sdata.images[XENIUM_HE_KEY]
            sdata.images[XENIUM_HE_KEY] = _image_model(he_arr)
        else:
            set_transformation(sdata.images[XENIUM_HE_KEY], Identity(), GLOBAL_CS)
        h, w = _image_hw(_image_levels(sdata.images[XENIUM_HE_KEY])[0])
        n_out = int(_spots_outside(centres, side_px / 2.0, h, w).sum())
        if n_out:
            logger.warning("%d of %d bins lie outside the %d x %d px H&E.", n_out, len(centres), w, h)

    if keep_source:
        sdata.tables[XENIUM_CELL_TABLE_KEY] = cells
    _drop_table(sdata, TABLE_KEY)
    _drop_table(sdata, table_key)
    _add_circles_and_table(sdata, agg, shapes_key=shapes_key, radius=side_px / 2.0, table_key=table_key)

    meta: dict[str, Any] = {
        "bin_size_um": float(bin_size_um),
        "pixel_size_um": pixel_size,
        "n_cells": int(cells.n_obs),
        "source": source,
        "global_frame": "he_pixels" if he_present else "morphology_pixels",
        "analysis_sw_version": str(specs.get("analysis_sw_version", "")),
    }
    if source == "transcripts":
        meta["n_transcripts"] = int(len(xy_um))
        meta["n_transcripts_dropped"] = int(n_dropped)
        meta["min_qv"] = float(min_qv)
    if he_present:
        meta["he_to_morphology"] = np.asarray(M, dtype=float)
    return _finish(
        sdata,
        table_key=table_key,
        library_id=library_id,
        spot_diameter_px=side_px,
        image_key=XENIUM_HE_KEY if he_present else None,
        platform="xenium",
        metadata=meta,
    )
