"""Reader for 10x Visium (Space Ranger ``outs``): a thin wrapper over :func:`spatialdata_io.visium`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._images import GLOBAL_CS, _check_path
from .._logging import logger
from ._checks import _check_finite_xy, _check_hdf5, _check_image, _read_json, _sizes
from ._tenx import (
    _SCALEFACTORS,
    _VISIUM_COUNTS,
    _default_library_id,
    _drop_table,
    _finish,
    _first_image,
    _lazy_fullres,
    _quiet_reader,
    _valid_name,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData


_VISIUM_POSITIONS = ("tissue_positions_list.csv", "tissue_positions.csv")


def _visium_counts_file(path: Path, counts_file: str, library_id: str | None) -> str:
    names = sorted(f for f in os.listdir(path) if f.endswith(counts_file) and (path / f).is_file())
    if not names:
        raise FileNotFoundError(
            f"Count matrix not found: no '{counts_file}' or '<library_id>_{counts_file}' in {str(path)!r}. "
            "Point `path` at Space Ranger's `outs` folder (or pass `counts_file=`)."
        )
    if library_id is not None and f"{library_id}_{counts_file}" in names:
        return f"{library_id}_{counts_file}"
    return names[0]


def _check_positions(file: Path, barcodes: np.ndarray | None) -> None:
    """The positions CSV parses, has Space Ranger's six columns and finite pixel centres for ``barcodes``."""
    import pandas as pd

    try:
        df = pd.read_csv(file, header=None, index_col=0, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"Spot positions file {str(file)!r} is not a readable CSV ({err}).") from None
    if "in_tissue" in df.iloc[0].tolist():  # a header (Space Ranger >= 2, or v1 with one)
        df = df.iloc[1:]
    if df.shape[1] != 5:
        raise ValueError(
            f"Spot positions file {str(file)!r} has {df.shape[1] + 1} columns; expected 6 (barcode, in_tissue, "
            "array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres)."
        )
    xy = df.iloc[:, 3:5].apply(pd.to_numeric, errors="coerce")
    if barcodes is not None:
        missing = pd.Index(barcodes).difference(df.index, sort=False)
        if len(missing):
            raise ValueError(
                f"{len(missing)} barcodes of the count matrix have no row in {str(file)!r} (e.g. {list(missing[:3])})."
            )
        xy = xy.loc[pd.Index(barcodes)]
    _check_finite_xy(xy.to_numpy(float), f"spot pixel centres in {str(file)!r}", list(xy.index))


def _h5_barcodes(file: Path) -> np.ndarray | None:
    import h5py

    with h5py.File(file, "r") as f:
        group = f["matrix"] if "matrix" in f else next(g for g in f.values() if isinstance(g, h5py.Group))
        raw = group["barcodes"][:]
    return np.array([b.decode() if isinstance(b, bytes) else str(b) for b in raw])


def _h5_library_id(file: Path) -> str | None:
    import h5py

    try:
        with h5py.File(file, "r") as f:
            ids = f.attrs.get("library_ids")
    except OSError:
        return None
    if ids is None or len(np.atleast_1d(ids)) == 0:
        return None
    lid = np.atleast_1d(ids)[0]
    return lid.decode("utf-8") if isinstance(lid, bytes) else str(lid)


def visium(
    path: str | os.PathLike[str],
    *,
    library_id: str | None = None,
    fullres_image_file: str | os.PathLike[str] | None = None,
    table_key: str = TABLE_KEY,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Visium (Space Ranger ``outs``) folder.

    A thin wrapper over :func:`spatialdata_io.visium` that checks the files first, puts the spots in the
    ``"global"`` coordinate system (Space Ranger's full-resolution pixels, as scanpy and spatialdata-io do)
    and adds what :mod:`spacrd_sc` and squidpy need.

    Parameters
    ----------
    path
        The ``outs`` folder: ``[<library_id>_]filtered_feature_bc_matrix.h5`` and ``spatial/`` with
        ``tissue_positions_list.csv`` (Space Ranger 1) or ``tissue_positions.csv`` (≥ 2),
        ``scalefactors_json.json``, ``tissue_hires_image.png`` and ``tissue_lowres_image.png``.
    library_id
        Section name (``uns['spatial']`` key). Default: the counts-file prefix, else the ``library_ids``
        attribute of the matrix, else the folder name. Elements are named by spatialdata-io's ``dataset_id``,
        written ``<id>`` below: the counts-file prefix when there is one, else ``library_id``.
    fullres_image_file
        The full-resolution H&E given to Space Ranger (path, absolute or relative to ``path``). When given it
        is the patch image; otherwise the hires image is (at ``tissue_hires_scalef`` of full resolution).
    table_key
        Key of the table in the returned object.
    **kwargs
        Passed to :func:`spatialdata_io.visium` (e.g. ``counts_file``, ``tissue_positions_file``,
        ``scalefactors_file``, ``imread_kwargs``, ``image_models_kwargs``).

    Returns
    -------
    :class:`~spatialdata.SpatialData` with spatialdata-io's elements:

    - images ``"<id>_hires_image"``, ``"<id>_lowres_image"`` (where present) and ``"<id>_full_image"``
      (with ``fullres_image_file``), scaled into ``"global"``;
    - shapes ``"<id>"``: one circle per spot, radius ``spot_diameter_fullres / 2`` (global px);
    - table ``table_key`` annotating it (``obs['region']``, ``obs['spot_id']``), with

      - ``X``: raw UMI counts, float32 CSR; ``var_names`` gene symbols made unique, ``var['gene_ids']``,
        ``var['feature_types']``, ``var['genome']``;
      - ``obs['in_tissue']``, ``obs['array_row']``, ``obs['array_col']``;
      - ``obsm['spatial']``: spot centres ``(x, y)`` in full-resolution pixels (float64);
      - ``uns['spatial'][library_id]``: ``images['hires']`` (a ≤ 2000 px copy of the patch image),
        ``scalefactors['tissue_hires_scalef']``, ``scalefactors['spot_diameter_fullres']`` and
        ``metadata`` (``platform='visium'``, ``image_key``, ``spots_key``, ``library_id``, Space Ranger's
        ``software_version`` / ``chemistry_description`` where present).

    Raises
    ------
    FileNotFoundError
        The folder, the count matrix, the positions file, the scale factors or ``fullres_image_file`` is
        missing (the message names it); ``path`` is a file.
    TypeError
        ``path`` is not a str / os.PathLike.
    ValueError
        Checked before the read, naming the file: a count matrix that is not HDF5 or holds no 10x matrix;
        scale factors that are not a JSON object, lack a key, or whose ``spot_diameter_fullres``,
        ``tissue_hires_scalef`` or ``tissue_lowres_scalef`` is not a positive finite number; a positions
        file that is not a 6-column CSV, lacks a barcode of the matrix or has NaN / infinite pixel centres;
        an image that is not a readable TIFF / PNG / JPEG.
    """
    import spatialdata_io

    if "dataset_id" in kwargs:
        raise TypeError("Pass the section name as `library_id=`, not `dataset_id=`.")
    path = _check_path(path, "Visium", kind="dir")
    counts_file = str(kwargs.get("counts_file", _VISIUM_COUNTS))
    counts_name = _visium_counts_file(path, counts_file, library_id)
    if counts_name.endswith(".h5"):
        _check_hdf5(path / counts_name, "Count matrix")

    tp = kwargs.get("tissue_positions_file")
    if tp is not None:
        positions = _check_path(path / tp, "Spot positions file")
    else:
        found = [path / "spatial" / n for n in _VISIUM_POSITIONS if (path / "spatial" / n).is_file()]
        if not found:
            raise FileNotFoundError(
                f"Spot positions file not found: neither 'spatial/{_VISIUM_POSITIONS[0]}' nor "
                f"'spatial/{_VISIUM_POSITIONS[1]}' in {str(path)!r}."
            )
        positions = found[0]
    sf_file = _check_path(path / kwargs.get("scalefactors_file", Path("spatial") / _SCALEFACTORS), "Scale factors file")
    scalefactors = _read_json(sf_file, "Scale factors file")
    scalefactors.update(
        _sizes(scalefactors, ("spot_diameter_fullres", "tissue_hires_scalef", "tissue_lowres_scalef"), sf_file)
    )
    _check_positions(positions, _h5_barcodes(path / counts_name) if counts_name.endswith(".h5") else None)
    if fullres_image_file is not None:
        _check_image(_check_path(path / Path(fullres_image_file), "Full-resolution image"), "Full-resolution image")
    for name in ("tissue_hires_image.png", "tissue_lowres_image.png"):
        if (path / "spatial" / name).is_file():
            _check_image(path / "spatial" / name, "Image")

    file_prefix = counts_name[: -len(counts_file) - 1] if counts_name != counts_file else None
    if library_id is None:
        library_id = file_prefix or _h5_library_id(path / counts_name) or _default_library_id(path)
    library_id = _valid_name(library_id)
    # spatialdata-io's dataset_id names the elements: keep its natural choice (the file prefix) if any
    dataset_id = file_prefix or library_id

    logger.info("Reading Visium section %r from %s.", library_id, path)
    with _quiet_reader():
        sdata = spatialdata_io.visium(path, dataset_id=dataset_id, fullres_image_file=fullres_image_file, **kwargs)
    sdata.rename_coordinate_systems({dataset_id: GLOBAL_CS})

    table = sdata.tables[TABLE_KEY]
    if table_key != TABLE_KEY:
        _drop_table(sdata, TABLE_KEY)
        sdata.tables[table_key] = table
    xy = np.asarray(table.obsm[SPATIAL_KEY], dtype=float)
    if not np.isfinite(xy).all():  # checked above from the files; kept for `tissue_positions_file` variants
        bad = table.obs_names[~np.isfinite(xy).all(1)]
        raise ValueError(
            f"{len(bad)} barcodes of the count matrix have no finite position in the positions file "
            f"(e.g. {list(bad[:3])})."
        )
    reader_meta = dict(table.uns.get(SPATIAL_KEY, {}).get(dataset_id, {}).get("metadata", {}))

    if fullres_image_file is not None:
        _lazy_fullres(sdata, f"{dataset_id}_full_image", path / Path(fullres_image_file))
    image_key = _first_image(
        sdata, [f"{dataset_id}_full_image", f"{dataset_id}_hires_image", f"{dataset_id}_lowres_image"]
    )
    if image_key is None:
        logger.warning("The Visium folder %s holds no image: the section is image-less.", path)
    elif image_key.endswith("_lowres_image"):
        logger.warning(
            "Only the lowres image is present: spot patches will be ~%.0f px wide.",
            scalefactors["spot_diameter_fullres"] * scalefactors["tissue_lowres_scalef"],
        )
    return _finish(
        sdata,
        table_key=table_key,
        library_id=library_id,
        spot_diameter_px=float(scalefactors["spot_diameter_fullres"]),
        image_key=image_key,
        platform="visium",
        metadata={**{k: str(v) for k, v in reader_meta.items()}, "counts_file": counts_name},
    )
