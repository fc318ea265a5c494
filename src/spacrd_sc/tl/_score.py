"""Applying a trained model to new sections."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from anndata import AnnData
from spatialdata import SpatialData

from .. import __version__, _validate
from .._constants import SCORE_KEY, TABLE_KEY, Key
from .._docs import inject_docs
from .._logging import logger
from .._utils import _get_table
from ..model import SpaCRD
from ._inputs import FeatureSpec, check_var_names, model_arrays
from ._threshold import DEFAULT_RULE, call_sections, check_rule, source_share_of, threshold_uns


@inject_docs
def cancer_score(
    data: AnnData | SpatialData,
    model: SpaCRD,
    *,
    key_added: str = SCORE_KEY,
    threshold: str | float = DEFAULT_RULE,
    library_key: str | None = None,
    neighbors_key: str | None = None,
    layer: str | None = None,
    min_gene_overlap: float = 0.5,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    copy: bool = False,
    overwrite: bool = False,
    table_key: str = TABLE_KEY,
) -> AnnData | None:
    """Score every spot of a section with a trained SpaCRD model and call cancer regions.

    Genes are matched to the model's gene set by name; model genes absent from the section are filled with
    zeros (their number is logged and recorded). Features are scaled on the section's own values, as at
    training. No label is read.

    Parameters
    ----------
    data
        Section(s) to score (AnnData or SpatialData), raw counts in ``X`` (or ``layer``) and a squidpy spatial
        graph in ``obsp``; image features in ``obsm`` when the model uses them.
    model
        A trained :class:`~spacrd_sc.SpaCRD` (:func:`fit_vrbca` or :meth:`~spacrd_sc.SpaCRD.load`).
    key_added
        Name the written keys derive from (:class:`spacrd_sc._constants.Key`): ``obs[f"{key_added}_score"]``,
        ``obs[f"{key_added}_cancer"]``, ``obsm[f"X_{key_added}"]`` and ``uns[key_added]``.
    threshold
        Label-free rule that turns each section's scores into calls (``spacrd_sc.tl._threshold`` says why each
        exists). Default ``"half_smooth"``: a spot is called cancer when the mean score of the spot and its graph
        neighbours is ≥ 0.5. ``"gmm"``: a 2-component Gaussian mixture on the scores, cut where the weighted
        components cross (the SpaCRD paper's rule). ``"prior"``: EM re-estimate of the section's cancer share
        from the training share (Saerens et al. 2002), then a 0.5 cut on the adjusted posteriors. A number: a
        fixed threshold on the score.
    library_key
        ``obs`` column of sections when ``data`` holds several; scaling and the call rule are per section.
        Default: the model's library key when that column exists in ``obs``, else one section.
    neighbors_key
        Prefix of the squidpy graph in ``obsp``; default: the model's.
    layer
        Layer with raw counts; default: the model's (``X`` when it was trained on ``X``).
    min_gene_overlap
        Refuse to score when fewer than this fraction of the model's genes are present (and, whatever the
        fraction, when fewer than ``spacrd_sc.settings.min_genes``, default 50, are).
    batch_size, device
        Inference batch size (default: :meth:`~spacrd_sc.SpaCRD.predict`'s) and device (default: the model's device).
    seed
        Random seed of the GMM fit.
    {copy}
    overwrite
        Replace existing keys of these names that spacrd_sc did not write (refused otherwise, naming them;
        keys it wrote, e.g. by an earlier run, are replaced with a warning).
    {table_key}

    Returns
    -------
    ``None`` (or the scored copy with ``copy=True``). Scoring a her2st section with the ready her2st model
    (:func:`spacrd_sc.datasets.her2st_model`), which was trained on it, logs a warning. Writes to the table:

    ``obs[f"{key_added}_score"]``
        float32 cancer likelihood in [0, 1].
    ``obs[f"{key_added}_cancer"]``
        bool, the call of the ``threshold`` rule (score, or smoothed score for ``"half_smooth"``, ≥ threshold).
    ``obsm[f"X_{key_added}"]``
        float32 (n_spots, 512) fused embedding.
    ``uns[key_added]``
        ``"params"`` (settings, mode, gene overlap; ``"threshold"`` is the rule), ``"threshold"`` (float, or
        a dict per section), ``"called_share"`` (share of spots called cancer), ``"gmm"`` (fitted means, sds,
        weights, for ``"gmm"``) and ``"cancer_share"`` (EM estimate of the section's cancer share, for
        ``"prior"``); each per section when ``library_key`` is set.
    """
    adata = _validate.table(_get_table(data, table_key), min_spots=2, what="scoring (a spot and a neighbour)")
    if not model.is_fitted:
        raise ValueError("The model is not trained: run `sc_crd.tl.fit_vrbca` first (or load a trained model).")
    check_rule(threshold)
    if threshold == "prior" and source_share_of(model) is None:
        raise ValueError(f"threshold={threshold!r} needs the training cancer share, which this model did not record.")
    check_var_names(adata)
    overlap = int(adata.var_names.isin(model.genes).sum())
    frac = overlap / len(model.genes)
    if frac < min_gene_overlap:
        raise ValueError(
            f"Only {overlap} of the model's {len(model.genes)} genes ({frac:.0%}) are in this section "
            f"(min_gene_overlap={min_gene_overlap:.0%}); check the gene naming (symbols vs Ensembl ids) "
            f"and the species, or train on this section's genes (`align(..., target_genes=target.var_names)`, "
            f"`sc_crd.datasets.her2st_model(genes=...)`). Model genes start with {model.genes[:5]}."
        )
    _validate.enough_genes(
        overlap,
        what=f"Genes shared by the model ({len(model.genes)} genes) and this section",
        fix="Use a model trained on this section's genes (`align(..., target_genes=target.var_names)`).",
    )
    spec = FeatureSpec.of(model)
    if library_key is None and spec.library_key in adata.obs:
        library_key = spec.library_key
        logger.info("Scaling and thresholding per %r (the model's library key).", library_key)
    spec = dataclasses.replace(spec, library_key=library_key).replace(neighbors_key=neighbors_key, layer=layer)
    _validate.graph(adata, spec.neighbors_key, library_key=library_key)
    score_col, call_col, emb_key = Key.score(key_added), Key.call(key_added), Key.embedding(key_added)
    written = {"obs": [score_col, call_col], "obsm": [emb_key], "uns": [key_added]}
    _validate.writable_keys(adata, written, overwrite=overwrite, record=key_added)
    _validate.her2st_training_sections(adata, model, library_key)
    if copy:
        adata = adata.copy()
    arrays = model_arrays(adata, spec)
    if arrays.n_missing:
        logger.warning(
            "%d of the model's %d genes are absent from this section; they were set to zero.",
            arrays.n_missing,
            len(model.genes),
        )
    batch = {} if batch_size is None else {"batch_size": batch_size}
    pred = model.predict(arrays.x_gene, arrays.x_image, arrays.neighbors, device=device, **batch)
    scores = pred.proba.astype(np.float32)
    sections = arrays.sections
    names = adata.obs[library_key].astype(str).to_numpy() if library_key is not None else np.full(adata.n_obs, "all")
    # Label-free calls (the `threshold` rule; logic in _threshold.py).
    conn = adata.obsp[Key.obsp.connectivities(spec.neighbors_key)] if threshold == "half_smooth" else None
    calls, call_infos = call_sections(
        scores, sections, names, threshold, source_share=source_share_of(model), connectivities=conn, seed=seed
    )

    adata.obs[score_col] = scores
    adata.obs[call_col] = calls
    adata.obsm[emb_key] = pred.embedding.astype(np.float32)
    uns: dict[str, Any] = {
        "params": {
            "threshold": threshold if isinstance(threshold, str) else float(threshold),
            "library_key": library_key,
            "neighbors_key": spec.neighbors_key,
            "layer": spec.layer,
            "scaling": spec.scaling,
            "image_key": spec.image_key,
            "image_less": bool(model.image_less),
            "mode": model.mode_description,
            "n_model_genes": len(model.genes),
            "n_genes_absent": arrays.n_missing,
            "spacrd_sc_version": __version__,
        },
        **threshold_uns(call_infos, per_section=library_key is not None),
    }
    # anndata cannot write None into uns
    uns["params"] = {k: ("" if v is None else v) for k, v in uns["params"].items()}
    adata.uns[key_added] = uns
    _validate.record_written(adata, written)
    return adata if copy else None
