"""AnnData → arrays: gene selection, normalisation, per-section scaling and neighbour tokens.

Everything the model sees passes through here, so sources (at training) and targets (at scoring)
are prepared by the same code. Nothing here looks at labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._logging import logger

SCALINGS = ("standard", "minmax", "none")


def _raw_counts(adata: AnnData, layer: str | None) -> sparse.csr_matrix:
    """Counts from ``layer`` (or ``X``) as CSR float32, checked to look like counts."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer {layer!r} not in adata.layers ({list(adata.layers)}).")
    X = adata.layers[layer] if layer is not None else adata.X
    if X is None:
        raise ValueError("adata.X is empty; pass `layer=` naming the raw counts.")
    X = sparse.csr_matrix(X, dtype=np.float32)
    data = X.data
    if data.size:
        if not np.isfinite(data).all():
            raise ValueError("The counts contain NaN or inf values.")
        if (data < 0).any():
            raise ValueError(
                "The counts contain negative values: they look scaled, not raw. "
                "spacrd_sc normalises itself; pass `layer=` naming the raw counts."
            )
        sample = data[: min(data.size, 100_000)]
        if not np.allclose(sample, np.round(sample)):
            raise ValueError(
                "adata.X holds non-integer values: it looks normalised already. spacrd_sc expects raw counts "
                "(it applies normalize_total(1e4) + log1p itself); pass `layer=` naming the raw counts."
            )
    return X


def _log_normalize(X: sparse.csr_matrix, target_sum: float = 1e4) -> sparse.csr_matrix:
    """``normalize_total(target_sum)`` + ``log1p``, spot by spot (no information crosses spots)."""
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    Y = sparse.diags(scale.astype(np.float32)) @ X
    Y = sparse.csr_matrix(Y, dtype=np.float32)
    np.log1p(Y.data, out=Y.data)
    return Y


def _sections(adata: AnnData, library_key: str | None) -> np.ndarray:
    """Section label per spot; one section when ``library_key`` is None."""
    if library_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64)
    if library_key not in adata.obs:
        raise KeyError(
            f"library_key {library_key!r} is not a column of adata.obs ({list(adata.obs.columns)}). "
            "Concatenate sections with `anndata.concat(..., label='section')` or pass `library_key=None` "
            "for a single section."
        )
    col = adata.obs[library_key]
    if col.isna().any():
        raise ValueError(f"adata.obs[{library_key!r}] has missing values.")
    return pd.Categorical(col.astype(str)).codes.astype(np.int64)


def _scale_per_section(X: np.ndarray, sections: np.ndarray, method: str) -> np.ndarray:
    """Scale every feature within each section on that section's own values (in place)."""
    if method not in SCALINGS:
        raise ValueError(f"Unknown scaling {method!r}; choose one of {SCALINGS}.")
    if method == "none":
        return X
    for s in np.unique(sections):
        idx = np.flatnonzero(sections == s)
        block = X[idx]
        if method == "standard":
            mu = block.mean(axis=0)
            sd = block.std(axis=0)
            block = (block - mu) / np.where(sd > 0, sd, 1.0)
        else:  # minmax
            lo = block.min(axis=0)
            span = block.max(axis=0) - lo
            block = (block - lo) / np.where(span > 0, span, 1.0)
        X[idx] = block.astype(np.float32, copy=False)
    return X


def select_genes(
    adata: AnnData,
    *,
    layer: str | None,
    library_key: str | None,
    n_top_genes: int,
    restrict_to: Sequence[str] | None = None,
) -> list[str]:
    """Highly variable genes chosen on the sources (batch-aware when there are several sections).

    Genes with no counts in some section are not eligible (they are absent from that section's panel
    after an outer concat). ``restrict_to`` (e.g. a target's genes) limits the choice to shared genes.
    """
    import scanpy as sc

    X = _log_normalize(_raw_counts(adata, layer))
    sections = _sections(adata, library_key)
    eligible = np.ones(adata.n_vars, dtype=bool)
    for s in np.unique(sections):
        eligible &= np.asarray((X[sections == s] > 0).sum(axis=0)).ravel() > 0
    if restrict_to is not None:
        eligible &= adata.var_names.isin(pd.Index(restrict_to))
    n_eligible = int(eligible.sum())
    if n_eligible == 0:
        raise ValueError("No gene is expressed in every source section (and shared with `restrict_to`).")
    tmp = AnnData(X[:, eligible], obs=pd.DataFrame(index=adata.obs_names.copy()))
    tmp.var_names = adata.var_names[eligible]
    if n_eligible <= n_top_genes:
        logger.info("Using all %d eligible genes (n_top_genes=%d).", n_eligible, n_top_genes)
        return list(tmp.var_names)
    batch = None
    if library_key is not None and len(np.unique(sections)) > 1:
        tmp.obs["_batch"] = sections.astype(str)
        batch = "_batch"
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat", batch_key=batch, subset=False)
    hv = tmp.var["highly_variable"].to_numpy()
    if batch is not None and hv.sum() > n_top_genes:  # seurat+batch may return ties beyond n_top_genes
        order = tmp.var.sort_values(["highly_variable_nbatches", "dispersions_norm"], ascending=False).index[
            :n_top_genes
        ]
        return list(order)
    return list(tmp.var_names[hv])


def gene_matrix(
    adata: AnnData,
    genes: Sequence[str],
    *,
    layer: str | None,
    sections: np.ndarray,
    scaling: str,
    target_sum: float = 1e4,
) -> tuple[np.ndarray, int]:
    """Dense (n_spots, len(genes)) float32 in the model's gene order; absent genes are zeros.

    Returns the matrix and the number of model genes absent from ``adata``.
    """
    X = _log_normalize(_raw_counts(adata, layer), target_sum)
    pos = adata.var_names.get_indexer(pd.Index(genes))
    present = pos >= 0
    out = np.zeros((adata.n_obs, len(genes)), dtype=np.float32)
    if present.any():
        out[:, present] = X[:, pos[present]].toarray()
    _scale_per_section(out, sections, scaling)
    return out, int((~present).sum())


def image_matrix(adata: AnnData, image_key: str, *, sections: np.ndarray, scaling: str) -> np.ndarray:
    """Image features ``obsm[image_key]`` as float32, checked and scaled per section."""
    if image_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm[{image_key!r}] is missing; run `sc_crd.tl.extract_uni` first or pass `image_key=None` "
            "for the image-less (expression + neighbourhood) model."
        )
    F = np.asarray(adata.obsm[image_key], dtype=np.float32).copy()
    if F.ndim != 2 or F.shape[0] != adata.n_obs:
        raise ValueError(f"adata.obsm[{image_key!r}] must be 2-d with one row per spot, got shape {F.shape}.")
    bad = ~np.isfinite(F).all(axis=1)
    if bad.any():
        secs = np.unique(sections[bad])
        raise ValueError(
            f"adata.obsm[{image_key!r}] has NaN/inf in {int(bad.sum())} spots (section codes {list(secs)}): "
            "image features are missing for some sections but not others. Extract them for every section "
            "or pass `image_key=None` for the image-less model."
        )
    empty = ~F.any(axis=1)
    for s in np.unique(sections):
        m = sections == s
        if empty[m].all():
            raise ValueError(
                f"adata.obsm[{image_key!r}] is all zeros for one section (code {s}): image features are "
                "missing for some sections but not others. Extract them for every section or pass `image_key=None`."
            )
    return _scale_per_section(F, sections, scaling)


def neighbor_index(adata: AnnData, neighbors_key: str, k: int, sections: np.ndarray) -> np.ndarray:
    """(n_spots, k) int64 indices of each spot's nearest graph neighbours, -1 where it has fewer.

    Taken from ``obsp[f"{neighbors_key}_connectivities"]`` (squidpy), ordered by
    ``obsp[f"{neighbors_key}_distances"]`` when present. The spot itself is never included.
    """
    ckey, dkey = f"{neighbors_key}_connectivities", f"{neighbors_key}_distances"
    if ckey not in adata.obsp:
        raise KeyError(
            f"adata.obsp[{ckey!r}] is missing: build the spatial graph first with "
            "`squidpy.gr.spatial_neighbors(adata, library_key='section', n_neighs=6, coord_type='generic')` "
            "(or pass `neighbors_key=`)."
        )
    C = sparse.csr_matrix(adata.obsp[ckey])
    D = sparse.csr_matrix(adata.obsp[dkey]) if dkey in adata.obsp else None
    out = np.full((adata.n_obs, k), -1, dtype=np.int64)
    crossing = 0
    for i in range(adata.n_obs):
        cols = C.indices[C.indptr[i] : C.indptr[i + 1]]
        cols = cols[cols != i]
        if cols.size == 0:
            continue
        if D is not None:
            d = np.asarray(D[i, cols].todense()).ravel()
            cols = cols[np.argsort(d, kind="stable")]
        crossing += int((sections[cols] != sections[i]).sum())
        cols = cols[sections[cols] == sections[i]][:k]
        out[i, : cols.size] = cols
    if crossing:
        logger.warning(
            "The spatial graph links %d spot pairs across sections; those links were ignored. "
            "Build it with `library_key=` in squidpy.gr.spatial_neighbors.",
            crossing,
        )
    return out


def binary_labels(adata: AnnData, label_key: str) -> np.ndarray:
    """``obs[label_key]`` as int64 0/1, checked to hold both classes."""
    if label_key not in adata.obs:
        raise KeyError(f"label_key {label_key!r} is not a column of adata.obs ({list(adata.obs.columns)}).")
    col = adata.obs[label_key]
    if col.isna().any():
        raise ValueError(f"adata.obs[{label_key!r}] has {int(col.isna().sum())} missing values.")
    vals = pd.unique(col.astype(object))
    if not set(vals) <= {0, 1}:
        raise ValueError(f"adata.obs[{label_key!r}] must be boolean or 0/1, found values {sorted(map(str, vals))[:5]}.")
    y = col.astype(bool).to_numpy().astype(np.int64)
    if y.min() == y.max():
        raise ValueError(
            f"adata.obs[{label_key!r}] holds a single class ({bool(y[0])}); training needs cancer and non-cancer spots."
        )
    return y
