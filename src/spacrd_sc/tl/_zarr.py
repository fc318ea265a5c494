"""Sections stored as SpatialData zarr: extract features or score one store in place (one task of a cluster map).

:func:`extract_zarr` and :func:`score_zarr` each open one store, run :func:`~spacrd_sc.tl.extract_uni` /
:func:`~spacrd_sc.tl.cancer_score` on it and write the table back into the same store. They are plain functions of
a path, so any scheduler maps them over many sections (``dask.distributed``'s ``client.map``, a SLURM array job, a
loop); spacrd_sc adds no scheduler of its own. Two tasks must never write the same store at the same time.

Writing a table back: spatialdata 0.7 refuses ``write_element(name, overwrite=True)`` for an element of the store
the object was read from ("the target path ... is a subfolder of the current Zarr store"), so the element has to be
deleted from disk and written again. A process killed between the two would lose the table (raw counts included),
so the new table is first written under a backup name, then the old one is replaced, then the backup deleted: at
every moment a complete table is on disk.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import IMAGE_FEATURES_KEY, SCORE_KEY, TABLE_KEY, Key
from .._docs import inject_docs
from .._logging import logger
from .._utils import _get_table
from ..model import SpaCRD
from ._extract import extract_uni
from ._score import cancer_score

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Suffix of the element that holds the new table while the old one is replaced.
BACKUP_SUFFIX = "_spacrd_backup"


def _open(path: str | os.PathLike, table_key: str, *, tables_only: bool) -> SpatialData:
    """Read the store at ``path`` (only its tables with ``tables_only``); clear errors for a missing store or
    table, or a backup left by an interrupted write."""
    import spatialdata as sd

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"No SpatialData zarr store at {str(path)!r} (not a directory).")
    if (path / "tables" / f"{table_key}{BACKUP_SUFFIX}").exists():
        raise ValueError(
            f"{str(path)!r} holds tables/{table_key}{BACKUP_SUFFIX}: an earlier write of table {table_key!r} was "
            "interrupted. That element is the complete new table; check it, then delete the one you do not keep "
            "(`sdata.delete_element_from_disk(name)`)."
        )
    sdata = sd.read_zarr(path, selection=("tables",) if tables_only else None)
    _get_table(sdata, table_key)  # KeyError naming the tables present
    return sdata


def _replace_table(sdata: SpatialData, table_key: str) -> None:
    """Write ``sdata.tables[table_key]`` back into the store it was read from, never leaving the store without a
    complete table (see the module docstring)."""
    backup = f"{table_key}{BACKUP_SUFFIX}"
    sdata.tables[backup] = sdata.tables[table_key]
    try:
        sdata.write_element(backup)
        sdata.delete_element_from_disk(table_key)
        sdata.write_element(table_key)
        sdata.delete_element_from_disk(backup)
    finally:
        del sdata.tables[backup]


@functools.lru_cache(maxsize=4)
def _load_model(folder: str, stamp: int, device: str) -> SpaCRD:
    """A saved model, loaded once per process (and per change of the folder, through ``stamp``)."""
    return SpaCRD.load(folder, device=device)


def _model(model: SpaCRD | str | os.PathLike, device: str | None) -> SpaCRD:
    """``model`` itself, or the model saved in folder ``model`` (cached per process)."""
    if isinstance(model, SpaCRD):
        return model
    if not isinstance(model, str | os.PathLike):
        raise TypeError(f"model must be a SpaCRD or the folder of a saved one, got {type(model).__name__}.")
    folder = Path(model).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"No saved SpaCRD model at {str(folder)!r} (not a directory).")
    stamp = max((f.stat().st_mtime_ns for f in folder.iterdir()), default=0)
    return _load_model(str(folder), stamp, "auto" if device is None else device)


@inject_docs
def extract_zarr(
    path: str | os.PathLike,
    *,
    table_key: str = TABLE_KEY,
    **kwargs: Any,
) -> dict[str, Any]:
    """Backbone features of every spot of a section stored as SpatialData zarr, written into the store's table.

    Reads the store at ``path`` (the image stays on disk and is read patch by patch), runs
    :func:`~spacrd_sc.tl.extract_uni` and writes the table back into the same store, safely (the new table is
    written under a backup name before the old one is replaced). One call is one task of a cluster map, e.g.
    ``client.map(sc_crd.tl.extract_zarr, paths, backbone="uni", weights=...)``.

    Parameters
    ----------
    path
        Folder of a SpatialData zarr store (as written by ``SpatialData.write``) with an H&E image, spot circles
        and a table.
    {table_key}
    **kwargs
        Keyword arguments of :func:`~spacrd_sc.tl.extract_uni` (``backbone``, ``weights``, ``batch_size``,
        ``device``, ``key_added``, ``overwrite``, ...; ``progress_bar`` defaults to ``False``). Inside a dask
        worker keep ``num_workers=0``: dask's worker processes are daemons and cannot start DataLoader workers.

    Returns
    -------
    A summary: ``path``, ``table_key``, ``key_added``, ``n_spots``, ``dim`` (feature size) and ``seconds``. The
    store's table gains ``obsm[key_added]`` and ``uns[key_added]`` (see :func:`~spacrd_sc.tl.extract_uni`).
    """
    if "copy" in kwargs:
        raise TypeError("extract_zarr writes into the store; `copy` is not accepted.")
    kwargs.setdefault("progress_bar", False)
    t0 = time.perf_counter()
    sdata = _open(path, table_key, tables_only=False)
    extract_uni(sdata, table_key=table_key, **kwargs)
    _replace_table(sdata, table_key)
    key = kwargs.get("key_added", IMAGE_FEATURES_KEY)
    feats = sdata.tables[table_key].obsm[key]
    summary = {
        "path": str(path),
        "table_key": table_key,
        "key_added": key,
        "n_spots": int(feats.shape[0]),
        "dim": int(feats.shape[1]),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    logger.info("extract_zarr: %s", summary)
    return summary


@inject_docs
def score_zarr(
    path: str | os.PathLike,
    model: SpaCRD | str | os.PathLike,
    *,
    table_key: str = TABLE_KEY,
    key_added: str = SCORE_KEY,
    device: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score the spots of a section stored as SpatialData zarr with a trained model and write the scores back.

    Reads the tables of the store at ``path`` (not its images), runs :func:`~spacrd_sc.tl.cancer_score` on table
    ``table_key`` and writes that table back into the same store, safely (the new table is written under a backup
    name before the old one is replaced). One call is one task of a cluster map, e.g.
    ``client.map(sc_crd.tl.score_zarr, paths, model=model_folder)``: with a folder, each worker process loads the
    model once and reuses it for every section it scores.

    Parameters
    ----------
    path
        Folder of a SpatialData zarr store whose table holds raw counts, a squidpy spatial graph in ``obsp`` and,
        for a model that uses them, image features in ``obsm`` (:func:`extract_zarr`).
    model
        A trained :class:`~spacrd_sc.SpaCRD`, or the folder it was saved in (:meth:`~spacrd_sc.SpaCRD.save`).
    {table_key}
    key_added
        Name the written keys derive from, as in :func:`~spacrd_sc.tl.cancer_score`.
    device
        Where to score; default: the model's device (for a folder: ``"auto"``).
    **kwargs
        Further keyword arguments of :func:`~spacrd_sc.tl.cancer_score` (``threshold``, ``library_key``,
        ``layer``, ``overwrite``, ...).

    Returns
    -------
    A summary: ``path``, ``table_key``, ``key_added``, ``n_spots``, ``n_called`` (spots called cancer),
    ``mean_score`` and ``seconds``. The store's table gains what :func:`~spacrd_sc.tl.cancer_score` writes:
    ``obs[f"{key_added}_score"]``, ``obs[f"{key_added}_cancer"]``, ``obsm[f"X_{key_added}"]`` and
    ``uns[key_added]``.
    """
    if "copy" in kwargs:
        raise TypeError("score_zarr writes into the store; `copy` is not accepted.")
    t0 = time.perf_counter()
    model = _model(model, device)  # a bad model or folder fails before the store is read
    sdata = _open(path, table_key, tables_only=True)
    cancer_score(sdata, model, table_key=table_key, key_added=key_added, device=device, **kwargs)
    _replace_table(sdata, table_key)
    obs = sdata.tables[table_key].obs
    summary = {
        "path": str(path),
        "table_key": table_key,
        "key_added": key_added,
        "n_spots": int(len(obs)),
        "n_called": int(obs[Key.call(key_added)].sum()),
        "mean_score": float(np.mean(obs[Key.score(key_added)])),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    logger.info("score_zarr: %s", summary)
    return summary
