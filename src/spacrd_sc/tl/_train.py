"""Training entry points: stage 1 (:func:`align`) and stages 2+3 (:func:`fit_vrbca`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from spatialdata import SpatialData

from .._constants import IMAGE_FEATURES_KEY, LABEL_KEY, LIBRARY_KEY, SPATIAL_KEY, TABLE_KEY
from .._logging import logger
from .._utils import _get_table, _warn_overwrite
from ..model import SpaCRD
from . import _prep


def model_inputs(
    adata: AnnData,
    model: SpaCRD,
    *,
    library_key: str | None,
    neighbors_key: str,
    layer: str | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """Arrays for ``model`` from ``adata``: genes, image features (or None), neighbour index, #absent genes.

    ``layer`` names where this table keeps raw counts (``None``: ``X``).

    All checks run here, before any training or scoring starts.
    """
    pre = model.preprocessing
    sections = _prep._sections(adata, library_key)
    nbrs = _prep.neighbor_index(adata, neighbors_key, model.config["n_neighbors"], sections)
    x_image = None
    if not model.image_less:
        x_image = _prep.image_matrix(adata, pre["image_key"], sections=sections, scaling=pre["scaling"])
        if x_image.shape[1] != model.n_image_features:
            raise ValueError(
                f"adata.obsm[{pre['image_key']!r}] has {x_image.shape[1]} features but the model was trained on "
                f"{model.n_image_features}: extract them with the same backbone."
            )
    x_gene, n_missing = _prep.gene_matrix(
        adata,
        model.genes,
        layer=layer,
        sections=sections,
        scaling=pre["scaling"],
        target_sum=pre["target_sum"],
    )
    return x_gene, x_image, nbrs, n_missing


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
    epochs: int | None = None,
    batch_size: int = 512,
    lr: float | None = None,
    device: str = "auto",
    seed: int = 0,
    progress_bar: bool = True,
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
        Prefix of the squidpy graph ``obsp[f"{neighbors_key}_connectivities"]``.
    layer
        Layer with raw counts; ``None`` uses ``X``.
    n_top_genes
        Number of highly variable genes (batch-aware over sections) kept for the model.
    genes
        Use exactly these genes instead of choosing them.
    target_genes
        Genes of the sections to be scored later; the choice is restricted to genes they share.
    scaling
        Per-section scaling of every feature on the section's own values: ``"standard"`` (z-score),
        ``"minmax"`` (to [0, 1], as the reference code) or ``"none"``.
    use_contrastive, use_cross_attention, use_vae, modality
        Switches for the paper's ablations (no contrastive stage, no cross-attention, no VAE; ``modality``
        ``"expression"`` or ``"image"`` for single-modality models).
    model_kwargs
        Further :class:`~spacrd_sc.SpaCRD` constructor arguments (dimensions, temperature, β, γ, ...), e.g.
        ``{"n_pcs": None}`` to feed the genes to the encoder directly instead of as their top 256 principal
        components (computed on these spots, stored in the model; the default).
    epochs, batch_size, lr
        Stage-1 schedule; ``None`` keeps the model's defaults.
    device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    seed
        Random seed: the same seed on the same device gives the same model.
    progress_bar
        Show a progress bar over epochs.
    table_key
        Table to use when ``data`` is a SpatialData.

    Returns
    -------
    A :class:`~spacrd_sc.SpaCRD` with its encoders trained (``model.is_aligned``), its gene list in
    ``model.genes`` and its preprocessing settings in ``model.preprocessing``. ``data`` is not modified.
    """
    adata = _get_table(data, table_key)
    if adata.n_obs == 0:
        raise ValueError("The table has no spots.")
    sections = _prep._sections(adata, library_key)
    if image_key is not None and image_key not in adata.obsm:
        logger.info("adata.obsm has no %r: training the image-less model (expression + neighbourhood).", image_key)
        image_key = None
    if modality == "image" and image_key is None:
        raise ValueError("modality='image' needs image features; run `sc_crd.tl.extract_uni` first.")
    if modality == "expression":
        image_key = None
    n_image_features = None
    if image_key is not None:  # checked (and scaled) in model_inputs below, before any training
        n_image_features = int(np.asarray(adata.obsm[image_key]).reshape(adata.n_obs, -1).shape[1])
    if genes is None:
        genes = _prep.select_genes(
            adata, layer=layer, library_key=library_key, n_top_genes=n_top_genes, restrict_to=target_genes
        )
    else:
        genes = list(genes)
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise ValueError(f"{len(missing)} of the given genes are not in adata.var_names, e.g. {missing[:5]}.")
    preprocessing = {
        "layer": layer,
        "target_sum": 1e4,
        "log1p": True,
        "scaling": scaling,
        "image_key": image_key,
        "library_key": library_key,
        "neighbors_key": neighbors_key,
    }
    kwargs = dict(model_kwargs or {})
    model = SpaCRD(
        genes,
        n_image_features,
        use_contrastive=use_contrastive,
        use_cross_attention=use_cross_attention,
        use_vae=use_vae,
        modality=modality,
        preprocessing=preprocessing,
        **kwargs,
    )
    x_gene, x_image_m, nbrs, _ = model_inputs(
        adata, model, library_key=library_key, neighbors_key=neighbors_key, layer=layer
    )
    logger.info(
        "Stage 1 on %d spots, %d sections, %d genes, %s.",
        adata.n_obs,
        len(np.unique(sections)),
        len(genes),
        "image-less" if model.image_less else f"{model.n_image_features} image features",
    )
    model.fit_alignment(
        x_gene,
        x_image_m,
        nbrs,
        **_schedule(epochs, batch_size, lr),
        device=device,
        seed=seed,
        progress_bar=progress_bar,
    )
    return model


def fit_vrbca(
    data: AnnData | SpatialData,
    model: SpaCRD,
    *,
    label_key: str = LABEL_KEY,
    neighbors_key: str | None = None,
    library_key: str | None = None,
    epochs: int | None = None,
    fused_epochs: int | None = None,
    batch_size: int = 512,
    lr: float | None = None,
    device: str = "auto",
    seed: int = 0,
    progress_bar: bool = True,
    key_added: str = "X_spacrd",
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
        Schedule: the first ``fused_epochs`` optimise the fusion loss only, the rest the classification loss.
        ``None`` keeps the model's defaults.
    device, seed, progress_bar
        As in :func:`align`.
    key_added
        ``obsm`` key for the fused spot embedding.
    table_key
        Table to use when ``data`` is a SpatialData.

    Returns
    -------
    The trained model (``model.is_fitted``); per-epoch losses in ``model.history``. Writes to the table:

    ``obsm[key_added]``
        float32 (n_spots, 512): fused embedding h* of every source spot.
    """
    adata = _get_table(data, table_key)
    pre = model.preprocessing
    neighbors_key = pre["neighbors_key"] if neighbors_key is None else neighbors_key
    library_key = pre["library_key"] if library_key is None else library_key
    y = _prep.binary_labels(adata, label_key)
    x_gene, x_image, nbrs, n_missing = model_inputs(
        adata, model, library_key=library_key, neighbors_key=neighbors_key, layer=pre["layer"]
    )
    if n_missing:
        raise ValueError(
            f"{n_missing} model genes are absent from the training data; train on the data given to align."
        )
    sched = _schedule(epochs, batch_size, lr)
    if fused_epochs is not None:
        sched["fused_epochs"] = fused_epochs
    model.fit_fusion(x_gene, x_image, nbrs, y, **sched, device=device, seed=seed, progress_bar=progress_bar)
    _warn_overwrite(adata, "obsm", key_added)
    adata.obsm[key_added] = model.embed(x_gene, x_image, nbrs).astype(np.float32)
    return model


def _schedule(epochs: int | None, batch_size: int, lr: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_size": batch_size}
    if epochs is not None:
        out["epochs"] = epochs
    if lr is not None:
        out["lr"] = lr
    return out
