"""The one input contract of the public ``tl`` / ``pp`` / ``pl`` functions (private).

Every public function calls the checks it needs here, before any work, so the same input gets the same
answer everywhere. What is checked, and the answer:

* **Tables** (:func:`table`): an AnnData (or a SpatialData's table) with at least ``min_spots`` spots; a
  table too small for the computation gets a named ``ValueError`` instead of an error from inside scipy,
  scikit-learn or scanpy.
* **Boolean columns** (:func:`bool_column`): cancer labels and calls are ``bool`` (or integer/float 0/1
  without missing values). Strings and categories are refused with the fix: ``astype(bool)`` would read the
  string ``"False"`` as ``True``.
* **Scores and thresholds** (:func:`scores`, :func:`threshold`): finite numbers; a NaN score or threshold
  would otherwise read as "not cancer" (every comparison with NaN is False).
* **Spot graphs** (:func:`graph`): ``obsp[f"{neighbors_key}_connectivities"]`` exists, is ``(n, n)``,
  has edges beyond self-loops and links no spots of different sections (``library_key``); where a model
  reads more neighbour tokens than most spots have, its neighbour index warns (the rest is padding).
* **Coordinates** (:func:`coordinates`): ``obsm["spatial"]`` is ``(n, ≥2)`` and finite.
* **Genes** (:func:`enough_genes`): at least :data:`~spacrd_sc._settings.Settings.min_genes` genes
  (default :data:`~spacrd_sc._constants.MIN_GENES`) to train or score on; :func:`log_dropped_genes` logs
  every rule that drops genes.
* **Written keys** (:func:`writable_keys`, :func:`record_written`): see "Which keys the package wrote".

Which keys the package wrote
----------------------------
Every function that writes ``obs`` / ``obsm`` / ``uns`` keys lists them, after writing, in
``adata.uns["spacrd_sc"]["written"]`` (``{"obs": [...], "obsm": [...], "uns": [...]}``; plain lists of
strings, so the table still writes to h5ad and zarr). A ``key_added`` naming an existing key that is not in
that record is refused (``ValueError`` naming the key and the two fixes: another ``key_added`` or
``overwrite=True``); a key in the record is overwritten with a warning. Tables written by spacrd_sc before
the record existed are recognised by the ``uns[key_added]["params"]`` entry the same function wrote beside
its keys. The record follows the table's ``uns``: a subset or copy keeps it, ``anndata.concat`` drops it
(then pass ``overwrite=True`` to re-run on the concatenated table).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._constants import MIN_GENES, SPATIAL_KEY, Key
from ._logging import logger

if TYPE_CHECKING:
    from anndata import AnnData
    from scipy import sparse

#: ``uns`` entry holding the package's record of the keys it wrote.
RECORD_KEY = "spacrd_sc"
#: Fewest spots a table must have to train on (both classes, per-section scaling, BatchNorm statistics).
MIN_TRAIN_SPOTS = 10
#: Where the package writes: ``AnnData`` attributes a ``key_added`` names a key of.
_PLACES = ("obs", "obsm", "uns")


# ------------------------------------------------------------------------------------------------ tables
def table(adata: AnnData, *, min_spots: int = 1, what: str = "this function") -> AnnData:
    """``adata`` checked to hold at least ``min_spots`` spots (``ValueError`` naming both counts)."""
    if adata.n_obs < min_spots:
        raise ValueError(
            f"The table has {adata.n_obs} spot{'s' if adata.n_obs != 1 else ''}; {what} needs at least "
            f"{min_spots}. Check the subset or filter that produced it."
        )
    return adata


def obs_column(adata: AnnData, key: str, *, param: str, hint: str = "") -> pd.Series:
    """``adata.obs[key]``; a ``KeyError`` naming the parameter, the key and the columns present otherwise."""
    if not isinstance(key, str):
        raise TypeError(f"{param} must be the name of an adata.obs column (a str), got {key!r}.")
    if key not in adata.obs:
        cols = list(adata.obs.columns)
        raise KeyError(
            f"{param} {key!r} is not a column of adata.obs (columns: {cols[:20]}{' ...' if len(cols) > 20 else ''})."
            + (f" {hint}" if hint else "")
        )
    return adata.obs[key]


# ------------------------------------------------------------------------------------------ bool columns
def bool_column(adata: AnnData, key: str, *, param: str = "label_key", hint: str = "") -> np.ndarray:
    """``obs[key]`` as a bool array, checked: bool, or 0/1 numbers, without missing values.

    Strings and categories are refused (``ValueError``) with the fix: ``astype(bool)`` reads any non-empty
    string, ``"False"`` included, as ``True``.
    """
    col = obs_column(adata, key, param=param, hint=hint)
    present = col.dropna()
    fix = (
        f'make it boolean first, e.g. `adata.obs[{key!r}] = adata.obs["pathology"].isin(["invasive cancer", '
        f'"cancer in situ"])`'
    )
    if {str(v).lower() for v in pd.unique(present)} <= {"true", "false"}:
        fix += f" or `adata.obs[{key!r}] = adata.obs[{key!r}].astype(str).str.lower() == 'true'`"
    textual = isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(col)
    if col.dtype == object:  # bools with missing values are object too: text only where a value is not a number
        textual = not all(isinstance(v, bool | int | float | np.bool_ | np.number) for v in present)
    if textual:
        kind = "categorical" if isinstance(col.dtype, pd.CategoricalDtype) else "text"
        vals = [str(v) for v in pd.unique(present)[:5]]
        raise ValueError(
            f"adata.obs[{key!r}] must be boolean or 0/1, but it is {kind} (values {vals}): spacrd_sc does not "
            f"guess which values mean cancer ('False' as text would read as True). {fix[0].upper()}{fix[1:]}."
        )
    n_missing = int(col.isna().sum())
    if n_missing:
        raise ValueError(
            f"adata.obs[{key!r}] has {n_missing} missing values, which would read as neither class; drop those "
            f"spots first (`adata = adata[adata.obs[{key!r}].notna()].copy()`)."
        )
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=bool)
    if not (pd.api.types.is_numeric_dtype(col) or col.dtype == object):
        raise ValueError(f"adata.obs[{key!r}] must be boolean or 0/1, got dtype {col.dtype}; {fix}.")
    values = col.to_numpy().astype(np.float64)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"adata.obs[{key!r}] must be boolean or 0/1, found values {sorted(set(values[bad].tolist()))[:5]}; {fix}."
        )
    return values.astype(bool)


# ------------------------------------------------------------------------------------- scores / thresholds
def scores(adata: AnnData, score_key: str, *, hint: str = "run `sc_crd.tl.cancer_score` first.") -> np.ndarray:
    """``obs[score_key]`` as float64, checked to be numeric and finite (a NaN score never reads as "not cancer")."""
    if score_key not in adata.obs:
        raise KeyError(f"score_key {score_key!r} is not in adata.obs; {hint}")
    col = obs_column(adata, score_key, param="score_key")
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise ValueError(f"adata.obs[{score_key!r}] must hold numeric scores, got dtype {col.dtype}.")
    s = col.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        raise ValueError(
            f"adata.obs[{score_key!r}] has {int(bad.sum())} NaN/inf scores (e.g. spot {adata.obs_names[bad][0]!r}); "
            "a missing score would read as 'not cancer'. Score every spot, or subset to the scored ones."
        )
    return s


def threshold(value: Any, *, param: str = "threshold", values: np.ndarray | None = None) -> float:
    """``value`` as a finite float. With the scores ``values`` in [0, 1] (probabilities), a threshold outside
    [0, 1] is refused too: it would call every spot or none."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{param} must be a number, got {value!r}.")
    t = float(value)
    if not np.isfinite(t):
        raise ValueError(f"{param} must be a finite number, got {value!r}: comparisons with NaN call no spot.")
    in_unit = values is None or (values.size and values.min() >= 0.0 and values.max() <= 1.0)
    if in_unit and not 0.0 <= t <= 1.0:
        raise ValueError(
            f"{param}={t!r} lies outside [0, 1], the range of the scores (probabilities): it would call every "
            "spot or none."
        )
    return t


# ------------------------------------------------------------------------------------------- coordinates
def coordinates(adata: AnnData, key: str = SPATIAL_KEY) -> np.ndarray:
    """``obsm[key]`` as ``(n, 2)`` float64, checked: present, one row per spot, ≥ 2 columns, finite."""
    if key not in adata.obsm:
        raise KeyError(f"adata.obsm[{key!r}] (spot centres) is missing.")
    xy = np.asarray(adata.obsm[key])
    if xy.ndim != 2 or xy.shape[0] != adata.n_obs or xy.shape[1] < 2:
        raise ValueError(f"adata.obsm[{key!r}] must be (n_spots, 2) spot centres, got shape {xy.shape}.")
    try:
        xy = xy[:, :2].astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"adata.obsm[{key!r}] must hold numbers, got dtype {xy.dtype}.") from err
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise ValueError(
            f"adata.obsm[{key!r}] has NaN/inf coordinates for {int(bad.sum())} spots (e.g. "
            f"{adata.obs_names[bad][0]!r}); drop them (`adata = adata[np.isfinite(adata.obsm[{key!r}]).all(1)]`)."
        )
    return xy


# ------------------------------------------------------------------------------------------------- graphs
def sections(adata: AnnData, library_key: str | None) -> np.ndarray | None:
    """Section name per spot (``obs[library_key]`` as str), checked; ``None`` without ``library_key``."""
    if library_key is None:
        return None
    col = obs_column(
        adata,
        library_key,
        param="library_key",
        hint="Concatenate sections with `anndata.concat(..., label='section')` or pass `library_key=None`.",
    )
    if col.isna().any():
        raise ValueError(f"adata.obs[{library_key!r}] has {int(col.isna().sum())} missing section names.")
    return col.astype(str).to_numpy()


def graph(adata: AnnData, neighbors_key: str, *, library_key: str | None = None) -> sparse.csr_matrix:
    """The spot graph ``obsp[f"{neighbors_key}_connectivities"]`` as CSR, checked.

    Refused: missing (``KeyError``), wrong shape, no edge between two different spots, edges between spots
    of different sections of ``obs[library_key]`` (``ValueError``; each names the squidpy call that fixes
    it). Where a model reads more neighbour tokens than most spots have, the model's neighbour index
    (``spacrd_sc.tl._inputs.neighbor_index``) warns: the other tokens are padding.
    """
    from scipy import sparse

    key = Key.obsp.connectivities(neighbors_key)
    fix = (
        "`squidpy.gr.spatial_neighbors_knn(adata, n_neighs=6"
        + (f", library_key={library_key!r}" if library_key is not None else "")
        + ")`"
    )
    if key not in adata.obsp:
        raise KeyError(
            f"adata.obsp[{key!r}] is missing: build the spot graph first with {fix} (or pass `neighbors_key=`)."
        )
    C = sparse.csr_matrix(adata.obsp[key])
    if C.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(f"adata.obsp[{key!r}] has shape {C.shape}, expected ({adata.n_obs}, {adata.n_obs}).")
    coo = C.tocoo()
    off = (coo.row != coo.col) & (coo.data != 0)
    rows, cols = coo.row[off], coo.col[off]
    if rows.size == 0:
        raise ValueError(f"adata.obsp[{key!r}] has no edges between spots: rebuild it with {fix}.")
    secs = sections(adata, library_key)
    if secs is not None:
        crossing = int((secs[rows] != secs[cols]).sum())
        if crossing:
            raise ValueError(
                f"adata.obsp[{key!r}] links {crossing} spot pairs across sections of adata.obs[{library_key!r}]: "
                f"spots of different sections are not neighbours. Rebuild it per section with {fix}."
            )
    return C


# -------------------------------------------------------------------------------------------------- genes
def min_genes() -> int:
    """The fewest genes a model may train or score on: ``spacrd_sc.settings.min_genes``."""
    from ._settings import settings

    return settings.min_genes


def enough_genes(n: int, *, what: str, fix: str) -> None:
    """Refuse (``ValueError``) ``n`` genes below :func:`min_genes`, before any work, naming ``what`` and ``fix``."""
    need = min_genes()
    if n < need:
        raise ValueError(
            f"{what}: {n} genes, below the minimum of {need} (`sc_crd.settings.min_genes`, default "
            f"MIN_GENES = {MIN_GENES}: the gene encoder's principal components and the highly-variable-gene choice "
            f"mean nothing on a handful of genes). {fix} To go below it knowingly (toy data): "
            f"`sc_crd.settings.min_genes = {max(n, 1)}`."
        )


def log_dropped_genes(dropped: Iterable[str], rule: str, *, of: int) -> None:
    """Log how many genes a rule dropped (and a few names): one INFO line per rule."""
    dropped = list(dropped)
    if dropped:
        logger.info(
            "%d of %d genes dropped (%s), e.g. %s.",
            len(dropped),
            of,
            rule,
            ", ".join(map(str, dropped[:5])) + (" ..." if len(dropped) > 5 else ""),
        )


def her2st_training_sections(adata: AnnData, model: Any, library_key: str | None = None) -> list[str]:
    """her2st sections of ``adata`` that ``model`` was trained on (empty for other models / tables); warned.

    A ready her2st model records its sections in ``model.training_params["her2st_model"]["sections"]``; a her2st
    table names its section in ``uns["spatial"][lib]["metadata"]`` (``dataset="her2st"``, ``section``) as
    written by :func:`spacrd_sc.datasets.her2st`, and, when concatenated, in ``obs[library_key]``.
    """
    record = getattr(model, "training_params", {}).get("her2st_model", {})
    trained = {str(s).upper() for s in record.get("sections", [])}
    if not trained:
        return []
    found: set[str] = set()
    spatial = adata.uns.get(SPATIAL_KEY)
    if isinstance(spatial, Mapping):
        for entry in spatial.values():
            meta = entry.get("metadata", {}) if isinstance(entry, Mapping) else {}
            if isinstance(meta, Mapping) and str(meta.get("dataset", "")) == "her2st":
                found.add(str(meta.get("section", "")).upper())
    if library_key is not None and library_key in adata.obs and found:
        found &= {str(s).upper() for s in pd.unique(adata.obs[library_key].astype(str))}
    hit = sorted(found & trained)
    if hit:
        logger.warning(
            "Section(s) %s were in the training data of this her2st model (trained on %s): their scores are "
            "training-set scores, not an estimate of accuracy on new sections. Score held-out sections, or "
            "train without them (`sc_crd.tl.align` / `fit_vrbca` on the other sections).",
            hit,
            sorted(trained),
        )
    return hit


# ------------------------------------------------------------------------------------------- written keys
def _written(adata: AnnData) -> dict[str, set[str]]:
    rec = adata.uns.get(RECORD_KEY)
    written = rec.get("written", {}) if isinstance(rec, Mapping) else {}
    return {
        where: {str(k) for k in np.atleast_1d(written.get(where, []))} if isinstance(written, Mapping) else set()
        for where in _PLACES
    }


def writable_keys(
    adata: AnnData,
    keys: Mapping[str, Sequence[str]],
    *,
    overwrite: bool,
    record: str | None = None,
) -> None:
    """Check, before any work, that writing ``keys`` (``{"obs": [...], "obsm": [...], "uns": [...]}``) loses
    nothing the package did not write.

    An existing key the package wrote (listed in ``uns["spacrd_sc"]["written"]``, or, for tables written
    before that record, beside an ``uns[record]["params"]`` entry) is overwritten with a warning. Any other
    existing key is refused with a ``ValueError`` naming it, unless ``overwrite=True`` (then a warning).
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
    written = _written(adata)
    legacy = record is not None and isinstance(adata.uns.get(record), Mapping) and "params" in adata.uns[record]
    foreign = []
    for where, names in keys.items():
        for key in names:
            if not isinstance(key, str) or not key:
                raise ValueError(f"key_added must give non-empty string keys, got {key!r}.")
            if key not in getattr(adata, where):
                continue
            if key in written[where] or legacy:
                logger.warning("Overwriting adata.%s[%r].", where, key)
            elif overwrite:
                logger.warning("Overwriting adata.%s[%r] (not written by spacrd_sc; overwrite=True).", where, key)
            else:
                foreign.append(f"adata.{where}[{key!r}]")
    if foreign:
        raise ValueError(
            f"{', '.join(foreign)} already exist{'s' if len(foreign) == 1 else ''} and spacrd_sc did not write "
            f"{'it' if len(foreign) == 1 else 'them'}: refusing to replace user data. Pass another `key_added=`, "
            "or `overwrite=True` to replace it."
        )


def record_written(adata: AnnData, keys: Mapping[str, Sequence[str]]) -> None:
    """Add ``keys`` to ``uns["spacrd_sc"]["written"]`` (call after writing them)."""
    written = _written(adata)
    for where, names in keys.items():
        written[where].update(names)
    rec = adata.uns.get(RECORD_KEY)
    rec = dict(rec) if isinstance(rec, Mapping) else {}
    rec["written"] = {where: sorted(names) for where, names in written.items() if names}
    adata.uns[RECORD_KEY] = rec
