"""Metrics of a scored section against its labels (for evaluation only; never feeds back into scoring)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from spatialdata import SpatialData

from .._constants import LABEL_KEY, PATHOLOGY_KEY, TABLE_KEY
from .._utils import _get_table
from ._inputs import binary_labels


def evaluate(
    data: AnnData | SpatialData,
    *,
    score_key: str = "spacrd_score",
    label_key: str = LABEL_KEY,
    call_key: str | None = None,
    threshold: float | None = None,
    exclude_undetermined: bool = False,
    pathology_key: str = PATHOLOGY_KEY,
    table_key: str = TABLE_KEY,
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
        ``obs`` bool column with the calls used for F1. Default: ``score_key`` with ``_score`` replaced by
        ``_cancer`` when that column exists.
    threshold
        Use ``score >= threshold`` as the call instead of ``call_key``.
    exclude_undetermined
        Leave out spots whose ``obs[pathology_key]`` is ``"undetermined"``.
    pathology_key
        ``obs`` column with pathologist categories (used with ``exclude_undetermined``).
    table_key
        Table to use when ``data`` is a SpatialData.

    Returns
    -------
    dict with ``auc`` (ROC-AUC), ``ap`` (average precision), ``f1`` (F1 of the calls), ``ks`` (two-sample
    Kolmogorov–Smirnov distance between the scores of cancer and non-cancer spots), ``n`` and ``n_cancer``.
    """
    from scipy.stats import ks_2samp
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    adata = _get_table(data, table_key)
    if score_key not in adata.obs:
        raise KeyError(f"score_key {score_key!r} is not in adata.obs; run `sc_crd.tl.cancer_score` first.")
    keep = np.ones(adata.n_obs, dtype=bool)
    if exclude_undetermined:
        if pathology_key not in adata.obs:
            raise KeyError(f"exclude_undetermined needs adata.obs[{pathology_key!r}], which is missing.")
        keep = (adata.obs[pathology_key].astype(str) != "undetermined").to_numpy()
    sub = adata[keep]
    y = binary_labels(sub, label_key)
    s = sub.obs[score_key].to_numpy(dtype=np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"adata.obs[{score_key!r}] has NaN/inf values.")
    if threshold is not None:
        calls = s >= float(threshold)
    else:
        if call_key is None and score_key.endswith("_score"):
            call_key = score_key[: -len("_score")] + "_cancer"
        if call_key is None or call_key not in sub.obs:
            raise KeyError(f"No calls for F1: adata.obs[{call_key!r}] is missing. Pass `threshold=` or `call_key=`.")
        calls = sub.obs[call_key].to_numpy().astype(bool)
    return {
        "auc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "f1": float(f1_score(y, calls)),
        "ks": float(ks_2samp(s[y == 1], s[y == 0]).statistic),
        "n": int(y.size),
        "n_cancer": int(y.sum()),
    }
