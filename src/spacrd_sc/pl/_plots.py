"""Plots of scores and training (scanpy conventions: ``ax``, ``show``, ``save``; axes returned with ``show=False``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .. import _validate
from .._constants import PATHOLOGY_KEY, TABLE_KEY, Key
from .._docs import inject_docs
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


@inject_docs
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

    Scores that all lie in [0, 1] (the package's likelihoods) are drawn on a fixed 0–1 axis (the violins' y
    axis, the histograms' x axis and bins), so sections compare at a glance; other values use their range.

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
    {ax_show_save}
    {table_key}

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
    unit = bool(scores.min() >= 0 and scores.max() <= 1)  # likelihoods: the fixed 0–1 axis
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
        if unit:
            ax.set_ylim(0.0, 1.0)
        if threshold is not None:
            ax.axhline(threshold, color="crimson", ls="--", lw=1, label=label)
    else:
        edges = np.linspace(0.0, 1.0, bins + 1) if unit else np.linspace(scores.min(), scores.max(), bins + 1)
        for c, d in zip(cats, data_by, strict=True):
            ax.hist(d, bins=edges, histtype="step", lw=1.5, label=f"{c} (n={d.size})")
        ax.set_xlabel(score_key)
        ax.set_ylabel("spots")
        if unit:
            ax.set_xlim(0.0, 1.0)
        if threshold is not None:
            ax.axvline(threshold, color="crimson", ls="--", lw=1, label=label)
    if threshold is not None or kind == "hist":
        ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{score_key} by {groupby}" if groupby else score_key)
    return _finish(ax, show, save)


def _library(adata: AnnData, library_id: str | None) -> tuple[str | None, dict]:
    """The ``uns['spatial']`` library to draw (the only one when ``library_id`` is None) and its entry."""
    spatial = adata.uns.get("spatial")
    libs = list(spatial) if isinstance(spatial, dict) else []
    if library_id is None:
        if len(libs) > 1:
            raise ValueError(f"The table holds several libraries {libs}: pass `library_id=` (one of them).")
        library_id = libs[0] if libs else None
    elif library_id not in libs:
        raise KeyError(f"library_id {library_id!r} is not in adata.uns['spatial'] (libraries: {libs or 'none'}).")
    entry = spatial[library_id] if library_id is not None else {}
    return library_id, entry if isinstance(entry, dict) else {}


def _call_title(adata: AnnData, score_key: str, call_key: str | None, called: np.ndarray | None) -> str:
    """``spacrd_score (scale 0–1)`` + the call rule and called share, from ``uns[prefix]`` when recorded."""
    title = f"{score_key} (scale 0–1)"
    if called is None:
        return title
    record = adata.uns.get(Key.prefix(score_key) or score_key)
    record = record if isinstance(record, dict) else {}
    rule = (record.get("params") or {}).get("threshold") if isinstance(record.get("params"), dict) else None
    thr = record.get("threshold")
    share = record.get("called_share")
    share = float(share) if isinstance(share, int | float) and call_key == Key.call(Key.prefix(score_key)) else None
    share = float(np.mean(called)) if share is None else share
    parts: list[str] = []
    if rule not in (None, ""):
        parts.append(f"rule {rule}")
    if isinstance(thr, int | float):
        parts.append(f"threshold {float(thr):.2f}")
    elif isinstance(thr, dict) and thr:
        parts.append(f"threshold {min(thr.values()):.2f}–{max(thr.values()):.2f} by section")
    lines = [title, f"outlined: {call_key}, {share:.0%} of spots called"] + ([", ".join(parts)] if parts else [])
    return "\n".join(lines)


@inject_docs
def score_map(
    data: AnnData | SpatialData,
    *,
    score_key: str = Key.score(),
    call_key: str | None = Key.call(),
    library_id: str | None = None,
    img: bool | None = None,
    shape: Literal["circle", "square", "hex", "auto"] | None = "auto",
    size: float | None = None,
    cmap: str = "viridis",
    outline_color: str = "crimson",
    outline_width: float = 1.0,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    table_key: str = TABLE_KEY,
) -> Axes | None:
    """Map of the cancer scores on a fixed 0–1 colour scale with the called spots outlined.

    Drawn with :func:`squidpy.pl.spatial_scatter` (so the spots sit where squidpy puts them, over the H&E when
    the table has one), with ``norm=Normalize(0, 1)``: the colourbar spans 0–1 whatever range the section's
    scores cover, so maps of different sections read alike. The spots called cancer (``obs[call_key]``) are
    drawn a second time, by the same squidpy call on just those spots, with an edge only (no fill), so the
    calls show on top of the scores. The title names the rule and threshold (``uns[prefix]["params"]
    ["threshold"]``, ``uns[prefix]["threshold"]`` written by :func:`spacrd_sc.tl.cancer_score`) and the share
    of spots called (``uns[prefix]["called_share"]``, else counted from ``obs[call_key]``).

    Parameters
    ----------
    data
        Scored section (AnnData or SpatialData).
    score_key
        ``obs`` column with scores in [0, 1].
    call_key
        ``obs`` bool column with the calls to outline; ``None``: no outline.
    library_id
        Library of ``uns['spatial']`` to draw; default: the only one (an error when there are several).
    img
        Draw the H&E under the spots; default: when the library has an image.
    shape
        Spot shape passed to squidpy: ``"auto"`` is ``"circle"`` (spot diameters from the library's scale
        factors) when the table has a library, else ``None`` (points of ``size``).
    size
        Spot size passed to squidpy (its meaning follows ``shape``).
    cmap
        Colour map of the scores.
    outline_color, outline_width
        Edge colour and line width of the called spots' outline.
    title
        Title; default: the score key, the call rule with its threshold and the share of spots called.
    {ax_show_save}
    {table_key}

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` when ``show`` is False, else ``None``. The colourbar is the figure's
    last axes.

    Raises
    ------
    KeyError
        ``score_key`` / ``call_key`` missing; ``library_id`` not in ``uns['spatial']``.
    ValueError
        Scores not finite / outside [0, 1]; calls not boolean; several libraries and no ``library_id``;
        ``img=True`` for a library without an image.
    """
    import matplotlib.pyplot as plt
    import squidpy as sq
    from matplotlib.colors import Normalize

    adata = _validate.table(_get_table(data, table_key), what="score_map")
    s = _validate.scores(adata, score_key)
    if s.min() < 0 or s.max() > 1:
        raise ValueError(
            f"adata.obs[{score_key!r}] spans {s.min():.3g}–{s.max():.3g}; score_map draws scores in [0, 1] on a fixed "
            "0–1 scale (use squidpy.pl.spatial_scatter for other values)."
        )
    called = _validate.bool_column(adata, call_key, param="call_key") if call_key is not None else None
    _validate.coordinates(adata)
    library_id, entry = _library(adata, library_id)
    has_img = bool(entry.get("images"))
    if img is None:
        img = has_img
    elif img and not has_img:
        raise ValueError(f"img=True but the table has no image (library {library_id!r}); pass img=False or None.")
    if shape == "auto":
        shape = "circle" if library_id is not None else None
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    common = {"library_id": library_id, "shape": shape, "size": size, "img": bool(img), "ax": ax}
    if library_id is None:  # squidpy needs a library for images and circles only
        common.pop("library_id")
    sq.pl.spatial_scatter(
        adata, color=score_key, cmap=cmap, norm=Normalize(vmin=0.0, vmax=1.0), title=score_key, **common
    )
    if called is not None and called.any():
        before, limits = len(ax.collections), (ax.get_xlim(), ax.get_ylim())
        sq.pl.spatial_scatter(
            adata[called], color=None, na_color="white", legend_na=False, colorbar=False, **{**common, "img": False}
        )
        for coll in ax.collections[before:]:
            coll.set_facecolor("none")
            coll.set_edgecolor(outline_color)
            coll.set_linewidth(outline_width)
            coll.set_label(f"{call_key} (outlined)")
        ax.set_xlim(limits[0])  # squidpy flips the y axis on each call: keep the first call's frame
        ax.set_ylim(limits[1])
    ax.set_title(title if title is not None else _call_title(adata, score_key, call_key, called), fontsize=9)
    return _finish(ax, show, save)


@inject_docs
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
    {ax_show_save}

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
