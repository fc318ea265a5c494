"""The tl↔model feature contract (:class:`FeatureSpec`) and AnnData → arrays.

Everything the model sees passes through here (gene selection, normalisation, per-section scaling, image
features, neighbour tokens), so sources (at training) and targets (at scoring) are prepared by the same
code from the same :class:`FeatureSpec`. No label is read here except by :func:`binary_labels`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import _validate
from .._constants import IMAGE_FEATURES_KEY, LIBRARY_KEY, SPATIAL_KEY, Key
from .._logging import logger
from ..model import ModelConfig

if TYPE_CHECKING:
    from ..model import SpaCRD

SCALINGS = ("standard", "minmax", "none")
#: Scalings that earlier versions offered (not adopted by the nested comparison on her2st); a model saved with one
#: is refused by :class:`FeatureSpec` with a clear error.
REMOVED_SCALINGS = ("balanced",)


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


def section_codes(adata: AnnData, library_key: str | None) -> np.ndarray:
    """Integer section code per spot (sorted section names); all 0 when ``library_key`` is None."""
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
        if method == "minmax":
            lo = block.min(axis=0)
            span = block.max(axis=0) - lo
            block = (block - lo) / np.where(span > 0, span, 1.0)
        else:  # standard
            mu, sd = block.mean(axis=0), block.std(axis=0)
            block = (block - mu) / np.where(sd > 0, sd, 1.0)
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

    check_var_names(adata)
    X = _log_normalize(_raw_counts(adata, layer))
    sections = section_codes(adata, library_key)
    eligible = np.ones(adata.n_vars, dtype=bool)
    for s in np.unique(sections):
        eligible &= np.asarray((X[sections == s] > 0).sum(axis=0)).ravel() > 0
    _validate.log_dropped_genes(adata.var_names[~eligible], "no counts in some source section", of=adata.n_vars)
    if restrict_to is not None:
        shared = adata.var_names.isin(pd.Index(restrict_to))
        _validate.log_dropped_genes(adata.var_names[eligible & ~shared], "not among the target genes", of=adata.n_vars)
        eligible &= shared
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
        cut = tmp.var_names.difference(order, sort=False)
        _validate.log_dropped_genes(cut, f"not among the {n_top_genes} most variable", of=n_eligible)
        return list(order)
    _validate.log_dropped_genes(tmp.var_names[~hv], f"not among the {n_top_genes} most variable", of=n_eligible)
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
    check_var_names(adata)
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
    ckey, dkey = Key.obsp.connectivities(neighbors_key), Key.obsp.distances(neighbors_key)
    if ckey not in adata.obsp:
        raise KeyError(
            f"adata.obsp[{ckey!r}] is missing: build the spatial graph first with "
            f"`squidpy.gr.spatial_neighbors_knn(adata, library_key='section', n_neighs={k})` "
            "(or pass `neighbors_key=`)."
        )
    C = sparse.csr_matrix(adata.obsp[ckey])
    if C.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(f"adata.obsp[{ckey!r}] has shape {C.shape}, expected ({adata.n_obs}, {adata.n_obs}).")
    rows = np.repeat(np.arange(adata.n_obs), np.diff(C.indptr))
    cols = C.indices.astype(np.int64)
    keep = cols != rows
    rows, cols = rows[keep], cols[keep]
    if dkey in adata.obsp:  # nearest first; ties (and missing distances, read as 0) keep the graph's order
        d = np.asarray(sparse.csr_matrix(adata.obsp[dkey])[rows, cols]).ravel()
        order = np.lexsort((d, rows))
        rows, cols = rows[order], cols[order]
    same = sections[cols] == sections[rows]
    crossing = int((~same).sum())
    rows, cols = rows[same], cols[same]
    counts = np.bincount(rows, minlength=adata.n_obs)
    rank = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    first = rank < k
    out = np.full((adata.n_obs, k), -1, dtype=np.int64)
    out[rows[first], rank[first]] = cols[first]
    typical = int(np.median(counts)) if counts.size else k
    if typical < k:
        logger.warning(
            "The spatial graph gives a median of %d neighbours per spot but the model reads %d: the other token "
            "positions are padding. Build the graph with `squidpy.gr.spatial_neighbors_knn(adata, n_neighs=%d)` "
            "(with `library_key=` for several sections).",
            typical,
            k,
            k,
        )
    if crossing:
        logger.warning(
            "The spatial graph links %d spot pairs across sections; those links were ignored. "
            "Build it per section: `squidpy.gr.spatial_neighbors_knn(adata, library_key='section', n_neighs=%d)`.",
            crossing,
            k,
        )
    return out


def binary_labels(adata: AnnData, label_key: str) -> np.ndarray:
    """``obs[label_key]`` as int64 0/1, checked (:func:`spacrd_sc._validate.bool_column`) to hold both classes."""
    y = _validate.bool_column(adata, label_key).astype(np.int64)
    if y.size and y.min() == y.max():
        raise ValueError(
            f"adata.obs[{label_key!r}] holds a single class ({bool(y[0])}); training needs cancer and non-cancer spots."
        )
    return y


@dataclass(frozen=True)
class FeatureSpec:
    """How a model's inputs are made from a table: the one contract between :mod:`spacrd_sc.tl` and a model.

    Built by :func:`~spacrd_sc.tl.align`, stored in the model (``model.preprocessing`` holds
    :meth:`preprocessing`, the gene list and ``n_neighbors`` live in ``model.config``) and read back with
    :meth:`of` at :func:`~spacrd_sc.tl.fit_vrbca` and :func:`~spacrd_sc.tl.cancer_score`.

    Attributes
    ----------
    genes
        Model genes, in the model's column order.
    n_neighbors
        Spatial neighbours per spot (columns of the neighbour index).
    n_image_features
        Size of the image features, ``None`` for a model that reads no image.
    image_key
        ``obsm`` key of the image features (``None`` without image).
    layer
        Layer with raw counts (``None``: ``X``).
    target_sum
        Counts per spot after ``normalize_total``, before ``log1p``.
    scaling
        Per-section feature scaling: ``"standard"``, ``"minmax"`` or ``"none"``.
    library_key
        ``obs`` column of sections (scaling per section), ``None`` for one section.
    neighbors_key
        Prefix of the squidpy graph in ``obsp``.
    """

    genes: tuple[str, ...]
    n_neighbors: int = ModelConfig.n_neighbors
    n_image_features: int | None = None
    image_key: str | None = None
    layer: str | None = None
    target_sum: float = 1e4
    scaling: str = "standard"
    library_key: str | None = LIBRARY_KEY
    neighbors_key: str = SPATIAL_KEY

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", tuple(str(g) for g in self.genes))
        if self.scaling in REMOVED_SCALINGS:
            raise ValueError(
                f"This model was trained with scaling={self.scaling!r}, an option removed from spacrd_sc (it was not "
                "adopted); score it with spacrd_sc 0.x before the removal, or train a new model."
            )
        if self.scaling not in SCALINGS:
            raise ValueError(f"Unknown scaling {self.scaling!r}; choose one of {SCALINGS}.")
        if (self.n_image_features is None) != (self.image_key is None):
            raise ValueError("image_key and n_image_features must both be set (image model) or both be None.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return {**dataclasses.asdict(self), "genes": list(self.genes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict` (unknown entries are an error)."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown FeatureSpec entries {unknown}.")
        return cls(**d)

    def preprocessing(self) -> dict[str, Any]:
        """The record stored as ``model.preprocessing`` (saved-model format 1: the same keys as always)."""
        return {
            "layer": self.layer,
            "target_sum": self.target_sum,
            "log1p": True,
            "scaling": self.scaling,
            "image_key": self.image_key,
            "library_key": self.library_key,
            "neighbors_key": self.neighbors_key,
        }

    @classmethod
    def of(cls, model: SpaCRD) -> FeatureSpec:
        """The spec of a model (also one built directly from arrays, whose record is empty: defaults)."""
        pre = dict(model.preprocessing)
        if not pre.pop("log1p", True):
            raise ValueError("The model's preprocessing says log1p=False; spacrd_sc always applies log1p.")
        image = not model.image_less
        return cls(
            genes=tuple(model.genes),
            n_neighbors=int(model.config["n_neighbors"]),
            n_image_features=model.n_image_features if image else None,
            image_key=(pre.get("image_key") or IMAGE_FEATURES_KEY) if image else None,
            layer=pre.get("layer"),
            target_sum=float(pre.get("target_sum", 1e4)),
            scaling=pre.get("scaling", "standard"),
            library_key=pre.get("library_key", LIBRARY_KEY),
            neighbors_key=pre.get("neighbors_key", SPATIAL_KEY),
        )

    def replace(self, **changes: Any) -> FeatureSpec:
        """A copy with ``changes`` (``None`` values are ignored: keep the model's setting)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class ModelArrays(NamedTuple):
    """What :func:`model_arrays` returns."""

    x_gene: np.ndarray
    x_image: np.ndarray | None
    neighbors: np.ndarray
    sections: np.ndarray
    n_missing: int


def model_arrays(adata: AnnData, spec: FeatureSpec) -> ModelArrays:
    """Genes (model order, absent ones zero), image features (or None), neighbour index and section codes,
    scaled per section as ``spec.scaling`` says.

    All checks run here, before any training or scoring starts.
    """
    sections = section_codes(adata, spec.library_key)
    nbrs = neighbor_index(adata, spec.neighbors_key, spec.n_neighbors, sections)
    x_image = None
    if spec.image_key is not None:
        x_image = image_matrix(adata, spec.image_key, sections=sections, scaling=spec.scaling)
        if x_image.shape[1] != spec.n_image_features:
            raise ValueError(
                f"adata.obsm[{spec.image_key!r}] has {x_image.shape[1]} features but the model was trained on "
                f"{spec.n_image_features}: extract them with the same backbone."
            )
    x_gene, n_missing = gene_matrix(
        adata, spec.genes, layer=spec.layer, sections=sections, scaling=spec.scaling, target_sum=spec.target_sum
    )
    return ModelArrays(x_gene, x_image, nbrs, sections, n_missing)


def check_var_names(adata: AnnData, what: str = "adata") -> None:
    """Raise a clear error when gene names repeat (genes are matched to the model by name)."""
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"{what}.var_names has {len(dup)} duplicated gene names (e.g. {list(dup[:5])}); genes are matched "
            "by name: run `adata.var_names_make_unique()` or sum the duplicates first."
        )


def check_gene_list(genes: Sequence[str], available: pd.Index, what: str, where: str) -> list[str]:
    """``genes`` as a list of unique names, checked against ``available``; errors name the missing ones and
    suggest the case-insensitive match when that is the problem.
    """
    if isinstance(genes, str):
        raise TypeError(f"{what} must be a sequence of gene names, not a single string.")
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError(f"{what} is empty.")
    index = pd.Index(genes)
    dup = sorted(set(index[index.duplicated()]))
    if dup:
        raise ValueError(f"{what} contains duplicates: {dup[:10]}.")
    missing = [g for g in genes if g not in available]
    if missing:
        upper = {a.upper() for a in available}
        case = [g for g in missing if g.upper() in upper]
        hint = f" {len(case)} of them match up to letter case (e.g. {case[:3]}): check the naming." if case else ""
        raise ValueError(f"{len(missing)} of the {len(genes)} {what} are not in {where}, e.g. {missing[:5]}.{hint}")
    return genes
