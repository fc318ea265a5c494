"""Metrics of a scored section against its labels (for evaluation only; never feeds back into scoring)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from spatialdata import SpatialData

from .. import _validate
from .._constants import LABEL_KEY, PATHOLOGY_KEY, TABLE_KEY, Key
from .._utils import _get_table
from ._inputs import binary_labels


def evaluate(
    data: AnnData | SpatialData,
    *,
    score_key: str = Key.score(),
    label_key: str = LABEL_KEY,
    call_key: str | None = None,
    threshold: float | None = None,
    exclude_undetermined: bool = False,
    pathology_key: str = PATHOLOGY_KEY,
    table_key: str = TABLE_KEY,
    groupby: str | Sequence[str] | None = None,
) -> dict[str, float]:
    """Compare cancer scores with binary labels.

    Parameters
    ----------
    data
        Scored section (AnnData or SpatialData).
    score_key
        ``obs`` column with scores in [0, 1] (written by :func:`spacrd_sc.tl.cancer_score`).
    label_key
        ``obs`` column with the true binary label (bool or 0/1).
    call_key
        ``obs`` bool column with the calls used for F1. Default: the call column written beside ``score_key``
        (``Key.call(Key.prefix(score_key))``, e.g. ``"spacrd_cancer"`` for ``"spacrd_score"``).
    threshold
        Use ``score >= threshold`` as the call instead of ``call_key``.
    exclude_undetermined
        Leave out spots whose ``obs[pathology_key]`` is ``"undetermined"``.
    pathology_key
        ``obs`` column with pathologist categories (used with ``exclude_undetermined``).
    table_key
        Table to use when ``data`` is a SpatialData.
    groupby
        Not accepted here: anything but ``None`` raises a :class:`TypeError` that points to
        :func:`spacrd_sc.tl.evaluate_groups`, which reports scores and calls per group. The parameter exists only
        to give that pointer instead of Python's bare "unexpected keyword" error. Why not delegate: ``evaluate``
        returns a dict of label metrics for one set of spots and ``evaluate_groups`` a per-group DataFrame of call
        shares that needs no label; a return type that changed with an option would break code written against
        either (``evaluate(...)["auc"]``), and per-group AUCs are often undefined (a group of one class).

    Returns
    -------
    dict with ``auc`` (ROC-AUC), ``ap`` (average precision), ``f1`` (F1 of the calls), ``ks`` (two-sample
    Kolmogorov–Smirnov distance between the scores of cancer and non-cancer spots), ``n`` and ``n_cancer``.

    Raises
    ------
    TypeError
        ``groupby`` given (use :func:`spacrd_sc.tl.evaluate_groups`).
    """
    if groupby is not None:
        raise TypeError(
            f"evaluate() does not split by groups (groupby={groupby!r}); use "
            f"sc_crd.tl.evaluate_groups(data, {groupby!r}, score_key=..., call_key=...) for scores and calls per "
            "group (a DataFrame), or evaluate() on a subset (adata[adata.obs[key] == value]) for one group's metrics."
        )
    from scipy.stats import ks_2samp
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    adata = _validate.table(_get_table(data, table_key), min_spots=2, what="evaluate (both classes)")
    _validate.scores(adata, score_key)
    keep = np.ones(adata.n_obs, dtype=bool)
    if exclude_undetermined:
        if pathology_key not in adata.obs:
            raise KeyError(f"exclude_undetermined needs adata.obs[{pathology_key!r}], which is missing.")
        keep = (adata.obs[pathology_key].astype(str) != "undetermined").to_numpy()
    sub = adata[keep]
    y = binary_labels(sub, label_key)
    s = _validate.scores(sub, score_key)
    calls = _calls(sub, score_key, call_key, threshold)
    return {
        "auc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "f1": float(f1_score(y, calls)),
        "ks": float(ks_2samp(s[y == 1], s[y == 0]).statistic),
        "n": int(y.size),
        "n_cancer": int(y.sum()),
    }


def _calls(adata: AnnData, score_key: str, call_key: str | None, threshold: float | None) -> np.ndarray:
    """Boolean cancer calls: ``score >= threshold`` when given, else ``obs[call_key]`` (default: the call column
    that :func:`spacrd_sc.tl.cancer_score` wrote beside ``score_key``)."""
    if threshold is not None:
        s = _validate.scores(adata, score_key)
        return s >= _validate.threshold(threshold, values=s)
    if call_key is None:
        prefix = Key.prefix(score_key)
        call_key = Key.call(prefix) if prefix is not None else None
    if call_key is None or call_key not in adata.obs:
        raise KeyError(
            f"No cancer calls: adata.obs[{call_key!r}] is missing (derived from score_key {score_key!r}). "
            "Pass `threshold=` or `call_key=`."
        )
    return _validate.bool_column(adata, call_key, param="call_key")


def evaluate_groups(
    data: AnnData | SpatialData,
    groupby: str | Sequence[str] = PATHOLOGY_KEY,
    *,
    score_key: str = Key.score(),
    call_key: str | None = None,
    threshold: float | None = None,
    label_key: str | None = LABEL_KEY,
    table_key: str = TABLE_KEY,
) -> pd.DataFrame:
    """Scores and cancer calls per class: which tissue types are over- or under-called.

    For each group of ``obs[groupby]`` (e.g. the pathologist's tissue classes) the share of spots called
    cancer and the mean score, so that e.g. breast glands called cancer stand out at once. Needs no binary
    label; with ``label_key`` present it also reports the labelled cancer share of each group.

    Parameters
    ----------
    data
        Scored section (AnnData or SpatialData).
    groupby
        ``obs`` column (or columns, e.g. ``["section", "pathology"]``) defining the groups.
    score_key
        ``obs`` column with scores in [0, 1] (written by :func:`spacrd_sc.tl.cancer_score`).
    call_key
        ``obs`` bool column with the calls. Default: the call column written beside ``score_key``
        (``"spacrd_cancer"`` for ``"spacrd_score"``).
    threshold
        Use ``score >= threshold`` as the call instead of ``call_key``.
    label_key
        ``obs`` column with the true binary label; its per-group share is added when the column exists.
        ``None`` leaves it out.
    table_key
        Table to use when ``data`` is a SpatialData.

    Returns
    -------
    :class:`pandas.DataFrame` indexed by the observed groups (a MultiIndex for several columns), with
    ``n_spots`` (int), ``mean_score``, ``median_score``, ``called_fraction`` (share of spots called cancer,
    0–1) and, with labels, ``label_fraction`` (share labelled cancer). Spots whose group is missing are left
    out.
    """
    adata = _validate.table(_get_table(data, table_key), what="evaluate_groups")
    keys = [groupby] if isinstance(groupby, str) else list(groupby)
    missing = [k for k in keys if k not in adata.obs]
    if not keys or missing:
        raise KeyError(f"groupby {missing or keys!r} not in adata.obs ({list(adata.obs.columns)}).")
    df = adata.obs[keys].copy()
    df["score"] = _validate.scores(adata, score_key)
    df["called"] = _calls(adata, score_key, call_key, threshold)
    agg = {
        "n_spots": ("score", "size"),
        "mean_score": ("score", "mean"),
        "median_score": ("score", "median"),
        "called_fraction": ("called", "mean"),
    }
    if label_key is not None and label_key in adata.obs:
        df["label"] = _validate.bool_column(adata, label_key)
        agg["label_fraction"] = ("label", "mean")
    out = df.groupby(keys, observed=True).agg(**agg)
    out["n_spots"] = out["n_spots"].astype(int)
    return out
