"""Training entry points: stage 1 (:func:`align`) and stages 2+3 (:func:`fit_vrbca`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from spatialdata import SpatialData

from .. import _validate
from .._constants import IMAGE_FEATURES_KEY, LABEL_KEY, LIBRARY_KEY, SCORE_KEY, SPATIAL_KEY, TABLE_KEY, Key
from .._docs import inject_docs
from .._logging import logger
from .._settings import settings
from .._utils import _get_table
from ..model import ModelConfig, SpaCRD, TrainingConfig
from ._inputs import REMOVED_SCALINGS, SCALINGS, FeatureSpec, binary_labels, check_gene_list, model_arrays, select_genes


@inject_docs
def align(
    data: AnnData | SpatialData,
    *,
    image_key: str | None = IMAGE_FEATURES_KEY,
    library_key: str | None = LIBRARY_KEY,
    neighbors_key: str = SPATIAL_KEY,
    layer: str | None = None,
    n_top_genes: int = 3000,
    genes: Sequence[str] | None = None,
    target_genes: Sequence[str] | None = None,
    scaling: Literal["standard", "minmax", "none"] = "standard",
    use_contrastive: bool = True,
    use_cross_attention: bool = True,
    use_vae: bool = True,
    modality: Literal["both", "expression", "image"] = "both",
    model_kwargs: dict[str, Any] | None = None,
    epochs: int | None = TrainingConfig.align_epochs,
    batch_size: int = TrainingConfig.batch_size,
    lr: float = TrainingConfig.align_lr,
    device: str = "auto",
    amp: bool = TrainingConfig.amp,
    seed: int = TrainingConfig.seed,
    progress_bar: bool | None = None,
    table_key: str = TABLE_KEY,
) -> SpaCRD:
    """Stage 1 of SpaCRD: choose the gene set and align image and expression encoders contrastively.

    Parameters
    ----------
    data
        Source spots (usually several sections concatenated with ``anndata.concat(..., label="section")``),
        raw counts in ``X`` (or ``layer``), a squidpy spatial graph in ``obsp``.
    image_key
        ``obsm`` key of image features (:func:`spacrd_sc.tl.extract_uni`). ``None``, or a key absent from
        ``obsm``, selects the image-less model (expression + neighbourhood only).
    library_key
        ``obs`` column naming each spot's section: scaling is done per section. ``None`` for one section.
    neighbors_key
        Prefix of the squidpy graph ``obsp["<neighbors_key>_connectivities"]``.
    layer
        Layer with raw counts; ``None`` uses ``X``.
    n_top_genes
        Number of highly variable genes (batch-aware over sections) kept for the model.
    genes
        Use exactly these genes instead of choosing them (all must be in ``var_names``, no duplicates).
    target_genes
        Genes of the sections to be scored later (e.g. a Xenium panel, ``target.var_names``): the choice is
        restricted to the genes the sources share with them, so sources and target use the same gene set.
        Target genes absent from the sources are left out (their number is logged); duplicates are ignored;
        names are matched exactly (an error points out a letter-case mismatch).
    scaling
        Per-section scaling of every feature on the section's own values: ``"standard"`` (z-score, the
        default), ``"minmax"`` (to [0, 1], as the reference code) or ``"none"``.
    use_contrastive, use_cross_attention, use_vae, modality
        Switches for the paper's ablations (no contrastive stage, no cross-attention, no VAE; ``modality``
        ``"expression"`` or ``"image"`` for single-modality models).
    model_kwargs
        Further :class:`~spacrd_sc.SpaCRD` constructor arguments (dimensions, temperature, β, γ, ...), e.g.
        ``{"n_pcs": None}`` to feed the genes to the encoder directly instead of as their top 256 principal
        components (computed on these spots, stored in the model; the default), or ``{"n_members": 1}`` for a
        single network instead of the default seed ensemble of three (probabilities averaged; a third of the
        training time).
    epochs, batch_size, lr
        Stage-1 schedule (:class:`~spacrd_sc.model.TrainingConfig`); ``epochs=None``: 5 for the image-less model,
        20 for the image-gene alignment.
    {device}
    amp
        bf16 autocast on CUDA (ignored on the CPU; :class:`~spacrd_sc.model.TrainingConfig` ``amp``).
    {seed}
    {progress_bar}
    {table_key}

    Returns
    -------
    A :class:`~spacrd_sc.SpaCRD` with its encoders trained (``model.is_aligned``), its gene list in
    ``model.genes`` and its preprocessing settings in ``model.preprocessing``. ``data`` is not modified.

    Notes
    -----
    Inside an initialised :mod:`torch.distributed` process group (a script launched with ``torchrun``) training is
    data-parallel (DDP): each process trains on its part of every batch and all end with the same model; call it
    on every process (see the "Several GPUs and many sections" page).
    """
    adata = _validate.table(_get_table(data, table_key), min_spots=_validate.MIN_TRAIN_SPOTS, what="training")
    if scaling not in SCALINGS:
        removed = " ('balanced' was removed: not adopted)" if scaling in REMOVED_SCALINGS else ""
        raise ValueError(f"scaling must be one of {list(SCALINGS)}, got {scaling!r}{removed}.")
    _validate.graph(adata, neighbors_key, library_key=library_key)
    if image_key is not None and image_key not in adata.obsm:
        logger.info("adata.obsm has no %r: training the image-less model (expression + neighbourhood).", image_key)
        image_key = None
    if modality == "image" and image_key is None:
        raise ValueError("modality='image' needs image features; run `sc_crd.tl.extract_uni` first.")
    if modality == "expression":
        image_key = None
    n_image_features = None
    if image_key is not None:  # checked (and scaled) in model_arrays below, before any training
        n_image_features = int(np.asarray(adata.obsm[image_key]).reshape(adata.n_obs, -1).shape[1])
    genes = _choose_genes(adata, genes, target_genes, layer=layer, library_key=library_key, n_top_genes=n_top_genes)
    _validate.enough_genes(
        len(genes), what="The model's gene set", fix="Train on more genes (`genes=`, `target_genes=`, `n_top_genes=`)."
    )
    spec = FeatureSpec(
        genes=tuple(genes),
        n_neighbors=int((model_kwargs or {}).get("n_neighbors", ModelConfig.n_neighbors)),
        n_image_features=n_image_features,
        image_key=image_key,
        layer=layer,
        scaling=scaling,
        library_key=library_key,
        neighbors_key=neighbors_key,
    )
    model = SpaCRD(
        genes,
        n_image_features,
        use_contrastive=use_contrastive,
        use_cross_attention=use_cross_attention,
        use_vae=use_vae,
        modality=modality,
        preprocessing=spec.preprocessing(),
        **dict(model_kwargs or {}),
    )
    train = TrainingConfig(align_epochs=epochs, align_lr=lr, batch_size=batch_size, seed=seed, amp=amp)
    arrays = model_arrays(adata, spec)
    logger.info(
        "Stage 1 on %d spots, %d sections, %d genes, %s.",
        adata.n_obs,
        len(np.unique(arrays.sections)),
        len(genes),
        "image-less" if model.image_less else f"{model.n_image_features} image features",
    )
    model.fit_alignment(
        arrays.x_gene,
        arrays.x_image,
        arrays.neighbors,
        config=train,
        device=device,
        progress_bar=settings.progress_bar if progress_bar is None else progress_bar,
    )
    return model


@inject_docs
def fit_vrbca(
    data: AnnData | SpatialData,
    model: SpaCRD,
    *,
    label_key: str = LABEL_KEY,
    neighbors_key: str | None = None,
    library_key: str | None = None,
    epochs: int = TrainingConfig.fusion_epochs,
    fused_epochs: int | None = TrainingConfig.fused_epochs,
    batch_size: int = TrainingConfig.batch_size,
    lr: float = TrainingConfig.fusion_lr,
    device: str = "auto",
    amp: bool = TrainingConfig.amp,
    seed: int = TrainingConfig.seed,
    progress_bar: bool | None = None,
    key_added: str = SCORE_KEY,
    overwrite: bool = False,
    table_key: str = TABLE_KEY,
) -> SpaCRD:
    """Stages 2 and 3 of SpaCRD: VRBCA fusion over spot neighbourhoods and the cancer discriminator.

    Parameters
    ----------
    data
        The same source spots as for :func:`align`, with binary labels in ``obs[label_key]``.
    model
        The model returned by :func:`align`.
    label_key
        ``obs`` column with the binary cancer label (bool or 0/1); both classes must be present.
    neighbors_key, library_key
        Default to the values given to :func:`align`.
    epochs, fused_epochs, batch_size, lr
        Schedule (:class:`~spacrd_sc.model.TrainingConfig`): the first ``fused_epochs`` (default: half)
        optimise the fusion loss only, the rest the classification loss.
    {device}
    amp
        bf16 autocast on CUDA (ignored on the CPU; :class:`~spacrd_sc.model.TrainingConfig` ``amp``).
    {seed}
    {progress_bar}
    key_added
        Name the written keys derive from (as in :func:`cancer_score`): the embedding goes to
        ``obsm[f"X_{key_added}"]``.
    overwrite
        Replace an existing ``obsm[f"X_{key_added}"]`` that spacrd_sc did not write (refused otherwise; keys
        it wrote are replaced with a warning).
    {table_key}

    Returns
    -------
    The trained model (``model.is_fitted``); per-epoch losses in ``model.history``, the settings of both stages in
    ``model.training_config``. Writes to the table:

    ``obsm[f"X_{key_added}"]``
        float32 (n_spots, 512): fused embedding h* of every source spot (``X_spacrd`` by default).

    Notes
    -----
    Inside an initialised :mod:`torch.distributed` process group (a script launched with ``torchrun``) training is
    data-parallel (DDP): each process trains on its part of every batch and all end with the same model; call it
    on every process (see the "Several GPUs and many sections" page).
    """
    adata = _validate.table(_get_table(data, table_key), min_spots=_validate.MIN_TRAIN_SPOTS, what="training")
    spec = FeatureSpec.of(model).replace(neighbors_key=neighbors_key, library_key=library_key)
    _validate.enough_genes(len(spec.genes), what="The model's gene set", fix="Train it on more genes (`tl.align`).")
    y = binary_labels(adata, label_key)
    train = dataclasses.replace(
        model.training_config,
        fusion_epochs=epochs,
        fused_epochs=fused_epochs,
        fusion_lr=lr,
        batch_size=batch_size,
        seed=seed,
        amp=amp,
    )
    _validate.graph(adata, spec.neighbors_key, library_key=spec.library_key)
    emb_key = Key.embedding(key_added)
    written = {"obsm": [emb_key]}
    _validate.writable_keys(adata, written, overwrite=overwrite, record=key_added)
    arrays = model_arrays(adata, spec)
    if arrays.n_missing:
        raise ValueError(
            f"{arrays.n_missing} model genes are absent from the training data; train on the data given to align."
        )
    progress_bar = settings.progress_bar if progress_bar is None else progress_bar
    x = (arrays.x_gene, arrays.x_image, arrays.neighbors)
    model.fit_fusion(*x, y, config=train, device=device, progress_bar=progress_bar)
    adata.obsm[emb_key] = model.predict(*x).embedding
    _validate.record_written(adata, written)
    return model


def _choose_genes(
    adata: AnnData,
    genes: Sequence[str] | None,
    target_genes: Sequence[str] | None,
    *,
    layer: str | None,
    library_key: str | None,
    n_top_genes: int,
) -> list[str]:
    """The model's gene list: ``genes`` as given (checked), else HVGs among the genes shared with the target."""
    if genes is not None:
        genes = check_gene_list(genes, adata.var_names, "genes", "the source adata.var_names")
        if target_genes is not None:
            absent = sorted(set(genes) - set(map(str, target_genes)))
            if absent:
                raise ValueError(f"{len(absent)} of the given genes are not in target_genes, e.g. {absent[:5]}.")
        _validate.enough_genes(len(genes), what="genes", fix="Pass more genes.")
        return genes
    if target_genes is not None:
        if isinstance(target_genes, str):
            raise TypeError("target_genes must be a sequence of gene names, not a single string.")
        target = pd.Index(pd.unique(pd.Index(target_genes).astype(str)))
        shared = adata.var_names.intersection(target)
        if shared.empty:
            upper = adata.var_names.str.upper().intersection(target.str.upper())
            hint = f"; {len(upper)} match up to letter case: check the naming" if len(upper) else ""
            raise ValueError(
                f"None of the {len(target)} target_genes is in the source adata.var_names (sources start with "
                f"{list(adata.var_names[:3])}, target with {list(target[:3])}){hint}."
            )
        _validate.enough_genes(
            len(shared), what="Genes shared by the sources and target_genes", fix="Score a section with more genes."
        )
        logger.info(
            "%d of the %d target genes are in the sources (%d absent from them).",
            len(shared),
            len(target),
            len(target) - len(shared),
        )
        absent = target.difference(shared, sort=False)
        _validate.log_dropped_genes(absent, "target genes absent from the sources", of=len(target))
        target_genes = list(shared)
    return select_genes(adata, layer=layer, library_key=library_key, n_top_genes=n_top_genes, restrict_to=target_genes)
