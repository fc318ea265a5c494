"""Reader for 10x Visium (Space Ranger ``outs``): a thin wrapper over :func:`spatialdata_io.visium`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._images import GLOBAL_CS, _check_path
from .._logging import logger
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
        missing (the message names it).
    """
    import spatialdata_io

    if "dataset_id" in kwargs:
        raise TypeError("Pass the section name as `library_id=`, not `dataset_id=`.")
    path = _check_path(path, "Visium", kind="dir")
    counts_file = str(kwargs.get("counts_file", _VISIUM_COUNTS))
    counts_name = _visium_counts_file(path, counts_file, library_id)

    tp = kwargs.get("tissue_positions_file")
    if tp is not None:
        _check_path(path / tp, "Spot positions file")
    elif not any((path / "spatial" / n).is_file() for n in _VISIUM_POSITIONS):
        raise FileNotFoundError(
            f"Spot positions file not found: neither 'spatial/{_VISIUM_POSITIONS[0]}' nor "
            f"'spatial/{_VISIUM_POSITIONS[1]}' in {str(path)!r}."
        )
    sf_file = _check_path(path / kwargs.get("scalefactors_file", Path("spatial") / _SCALEFACTORS), "Scale factors file")
    scalefactors = json.loads(sf_file.read_text())
    missing = [
        k for k in ("spot_diameter_fullres", "tissue_hires_scalef", "tissue_lowres_scalef") if k not in scalefactors
    ]
    if missing:
        raise ValueError(f"{str(sf_file)!r} lacks the keys {missing}.")
    if fullres_image_file is not None:
        _check_path(path / Path(fullres_image_file), "Full-resolution image")

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
    if not np.isfinite(xy).all():
        bad = table.obs_names[~np.isfinite(xy).all(1)]
        raise ValueError(
            f"{len(bad)} barcodes of the count matrix have no row in the positions file (e.g. {list(bad[:3])})."
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
