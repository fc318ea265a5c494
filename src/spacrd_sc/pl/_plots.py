"""Plots of scores and training (scanpy conventions: ``ax``, ``show``, ``save``; axes returned with ``show=False``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .. import _validate
from .._constants import PATHOLOGY_KEY, TABLE_KEY, Key
from .._logging import logger
from .._utils import _get_table

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from spatialdata import SpatialData

    from ..model import SpaCRD


def _finish(ax: Axes, show: bool | None, save: str | Path | None) -> Axes | None:
    import matplotlib.pyplot as plt

    fig = ax.figure
    if save is not None:
        fig.savefig(save, bbox_inches="tight")
        logger.info("Saved figure to %s.", save)
    if show is None:
        show = save is None
    if show:
        plt.show()
        return None
    return ax


def score_distribution(
    data: AnnData | SpatialData,
    *,
    score_key: str = Key.score(),
    groupby: str | None = PATHOLOGY_KEY,
    kind: Literal["violin", "hist"] = "violin",
    threshold: float | None = None,
    order: Sequence[str] | None = None,
    bins: int = 40,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    table_key: str = TABLE_KEY,
) -> Axes | None:
    """Distribution of cancer scores per category, with the decision threshold marked.

    Parameters
    ----------
    data
        Scored section (AnnData or SpatialData).
    score_key
        ``obs`` column with the scores.
    groupby
        Categorical ``obs`` column to split by (e.g. the pathologist label); ``None`` for all spots together.
    kind
        ``"violin"`` (one violin per category) or ``"hist"`` (overlaid step histograms).
    threshold
        Threshold to mark; default: ``uns[prefix]["threshold"]`` written by :func:`spacrd_sc.tl.cancer_score`
        (a float, or the mean over sections when it is per section). Not drawn when absent. With the
        ``"half_smooth"`` rule (the default) the calls compare each spot's neighbourhood-mean
        score, not the score drawn here, with the threshold, so spots on either side of the line may be
        called either way; the legend says so.
    order
        Order of the categories; default: the column's category order.
    bins
        Number of bins for ``kind="hist"``.
    ax
        Axes to draw into; a new figure when ``None``.
    show
        Show the figure; default: show unless ``save`` is given. With ``show=False`` the axes are returned.
    save
        Path to write the figure to.
    table_key
        Table to use when ``data`` is a SpatialData.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` when ``show`` is False, else ``None``.
    """
    import matplotlib.pyplot as plt

    adata = _validate.table(_get_table(data, table_key), what="score_distribution")
    scores = _validate.scores(adata, score_key)
    if kind not in ("violin", "hist"):
        raise ValueError(f"kind must be 'violin' or 'hist', got {kind!r}.")
    if threshold is not None:
        threshold = _validate.threshold(threshold, values=scores)
    if groupby is None:
        groups = pd.Categorical(np.full(adata.n_obs, "all spots"))
    else:
        if groupby not in adata.obs:
            raise KeyError(f"groupby {groupby!r} is not a column of adata.obs ({list(adata.obs.columns)}).")
        col = adata.obs[groupby]
        cats_in_order = col.cat.categories.astype(str) if isinstance(col.dtype, pd.CategoricalDtype) else None
        groups = pd.Categorical(col.astype(str), categories=cats_in_order)
    cats = list(order) if order is not None else [c for c in groups.categories if (groups == c).any()]
    unknown = set(cats) - set(groups.categories)
    if unknown:
        raise ValueError(f"order names categories not in adata.obs[{groupby!r}]: {sorted(unknown)}.")
    record = adata.uns.get(Key.prefix(score_key) or score_key)
    record = record if isinstance(record, dict) else {}
    smoothed = False
    if threshold is None:
        stored = record.get("threshold")
        if isinstance(stored, dict):
            threshold = float(np.mean(list(stored.values())))
        elif stored is not None:
            threshold = float(stored)
        smoothed = str(record.get("params", {}).get("threshold", "")).endswith("_smooth")
    label = None
    if threshold is not None:
        label = f"threshold {threshold:.2f}" + (" (on the neighbourhood mean)" if smoothed else "")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(cats) + 2), 3.5))
    data_by = [scores[np.asarray(groups == c)] for c in cats]
    if kind == "violin":
        nonempty = [i for i, d in enumerate(data_by) if d.size > 1]
        ax.violinplot([data_by[i] for i in nonempty], positions=nonempty, showmedians=True, widths=0.8)
        for i, d in enumerate(data_by):
            jitter = np.random.default_rng(i).uniform(-0.15, 0.15, d.size)
            ax.scatter(i + jitter, d, s=3, color="0.2", alpha=0.4, linewidths=0)
        ax.set_xticks(
            range(len(cats)),
            [f"{c}\n(n={d.size})" for c, d in zip(cats, data_by, strict=True)],
            rotation=30,
            ha="right",
        )
        ax.set_ylabel(score_key)
        if threshold is not None:
            ax.axhline(threshold, color="crimson", ls="--", lw=1, label=label)
    else:
        edges = np.linspace(np.nanmin(scores), np.nanmax(scores), bins + 1)
        for c, d in zip(cats, data_by, strict=True):
            ax.hist(d, bins=edges, histtype="step", lw=1.5, label=f"{c} (n={d.size})")
        ax.set_xlabel(score_key)
        ax.set_ylabel("spots")
        if threshold is not None:
            ax.axvline(threshold, color="crimson", ls="--", lw=1, label=label)
    if threshold is not None or kind == "hist":
        ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{score_key} by {groupby}" if groupby else score_key)
    return _finish(ax, show, save)


def training_history(
    model: SpaCRD,
    *,
    keys: Sequence[str] | None = None,
    log_scale: bool = False,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Per-epoch training losses recorded by the model (``model.history``).

    Parameters
    ----------
    model
        A :class:`~spacrd_sc.SpaCRD` after :func:`~spacrd_sc.tl.align` and/or :func:`~spacrd_sc.tl.fit_vrbca`.
    keys
        Which losses to draw; default: all recorded.
    log_scale
        Logarithmic y axis.
    ax
        Axes to draw into; a new figure when ``None``.
    show
        Show the figure; default: show unless ``save`` is given. With ``show=False`` the axes are returned.
    save
        Path to write the figure to.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` when ``show`` is False, else ``None``.
    """
    import matplotlib.pyplot as plt

    from ..model import SpaCRD

    if not isinstance(model, SpaCRD):
        raise TypeError(f"model must be a spacrd_sc.SpaCRD, got {type(model).__name__}.")
    if isinstance(keys, str):
        keys = [keys]
    history = {k: v for k, v in model.history.items() if len(v)}
    if not history:
        raise ValueError("The model has no training history yet: train it with `sc_crd.tl.align` / `fit_vrbca`.")
    keys = list(history) if keys is None else list(keys)
    missing = [k for k in keys if k not in history]
    if missing:
        raise KeyError(f"No history for {missing}; recorded: {list(history)}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    # One epoch axis for the whole run: stage 1 ("align") first, then the fusion stage, where the classifier
    # losses, recorded only in its last epochs, are aligned to the end of the stage.
    n_align = len(history.get("align", []))
    n_fusion = max((len(v) for k, v in history.items() if k != "align"), default=0)
    for k in keys:
        v = np.asarray(history[k], dtype=float)
        start = 1 if k == "align" else n_align + n_fusion - v.size + 1
        ax.plot(np.arange(start, start + v.size), v, marker="o" if v.size < 30 else None, ms=3, label=k)
    if n_align and n_fusion:
        ax.axvline(n_align + 0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("epoch (alignment, then fusion)" if n_align and n_fusion else "epoch")
    ax.set_ylabel("loss")
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("SpaCRD training history")
    return _finish(ax, show, save)
