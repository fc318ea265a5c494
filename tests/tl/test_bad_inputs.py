"""Bad inputs of every public ``tl`` function and the named error (type + message) or warning each gets (#23).

One row per case: ``(call, expected exception, message regex)``. ``call(ctx)`` builds a fresh bad input from the
module's synthetic sections (never modifying the shared ones) and runs the function. Warnings (inputs that are
used, with a word) are in :data:`WARNED`. The input contract behind these answers is ``spacrd_sc._validate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _helpers.sections import FAST, make_section, with_graph
from _helpers.sections import SMALL as SMALL_NET
from scipy import sparse

import spacrd_sc as sc_crd
from spacrd_sc._constants import MIN_GENES

tl = sc_crd.tl
#: Spots of the sources (3 sections of 12 x 10) and of the target.
N_SRC, N_TGT = 360, 120
SMALL = {"model_kwargs": SMALL_NET}


@dataclass
class Ctx:
    """The module's shared inputs; every accessor returns a copy a case may spoil."""

    _sources: ad.AnnData
    _target: ad.AnnData
    _scored: ad.AnnData
    model: sc_crd.SpaCRD
    aligned: sc_crd.SpaCRD

    def sources(self) -> ad.AnnData:
        return self._sources.copy()

    def target(self) -> ad.AnnData:
        return self._target.copy()

    def scored(self) -> ad.AnnData:
        return self._scored.copy()


@pytest.fixture(scope="module")
def ctx() -> Ctx:
    secs = {f"S{i}": make_section(f"S{i}", seed=i, nx=12, ny=10, n_genes=80) for i in range(3)}
    sources = with_graph(ad.concat(secs, label="section"), "section")
    target = with_graph(make_section("T", seed=11, nx=12, ny=10, n_genes=80))
    aligned = tl.align(sources, n_top_genes=60, **SMALL, **{**FAST, "epochs": 1})
    model = tl.align(sources, n_top_genes=60, **SMALL, **{**FAST, "epochs": 1})
    tl.fit_vrbca(sources.copy(), model, **{**FAST, "epochs": 2})
    scored = target.copy()
    tl.cancer_score(scored, model, threshold=0.5)
    return Ctx(sources, target, scored, model, aligned)


# ------------------------------------------------------------------------------------------ input spoilers
def _empty(a: ad.AnnData) -> ad.AnnData:
    return a[:0].copy()


def _one_spot(a: ad.AnnData) -> ad.AnnData:
    return a[:1].copy()


def _no_graph(a: ad.AnnData) -> ad.AnnData:
    del a.obsp["spatial_connectivities"]
    return a


def _edgeless(a: ad.AnnData) -> ad.AnnData:
    """A graph of self-loops only (e.g. a k-NN graph built with ``n_neighs=0`` plus the diagonal)."""
    a.obsp["spatial_connectivities"] = sparse.identity(a.n_obs, format="csr")
    return a


def _crossing(a: ad.AnnData, key: str = "section") -> ad.AnnData:
    """The graph built over all sections at once (``library_key`` forgotten): the sections' grids overlap."""
    if key not in a.obs:
        a.obs[key] = np.where(np.arange(a.n_obs) % 2, "A", "B")
    del a.obsp["spatial_connectivities"]
    return with_graph(a)


def _obs(a: ad.AnnData, key: str, values: Any) -> ad.AnnData:
    a.obs[key] = values
    return a


def _as_text(a: ad.AnnData, key: str) -> ad.AnnData:
    a.obs[key] = a.obs[key].astype(str)  # "True" / "False": astype(bool) would read both as True
    return a


def _as_category(a: ad.AnnData, key: str) -> ad.AnnData:
    a.obs[key] = pd.Categorical(np.where(a.obs[key].astype(bool), "tumour", "normal"))
    return a


def _with_nan(a: ad.AnnData, key: str, where: int = 3) -> ad.AnnData:
    """One missing value: a bool column becomes object (True/False/NaN), as pandas does on a failed merge."""
    numeric = pd.api.types.is_numeric_dtype(a.obs[key]) and a.obs[key].dtype != bool
    col = a.obs[key].to_numpy().astype(float if numeric else object)
    col[where] = np.nan
    a.obs[key] = col
    return a


def _nan_xy(a: ad.AnnData) -> ad.AnnData:
    xy = np.asarray(a.obsm["spatial"], dtype=float).copy()
    xy[2] = np.nan
    a.obsm["spatial"] = xy
    return a


def _uns(a: ad.AnnData, key: str, value: Any) -> ad.AnnData:
    a.uns[key] = value
    return a


def _xy(a: ad.AnnData, xy: np.ndarray | None) -> ad.AnnData:
    if xy is None:
        del a.obsm["spatial"]
    else:
        a.obsm["spatial"] = xy
    return a


def _genes_subset(a: ad.AnnData, n: int) -> ad.AnnData:
    return a[:, :n].copy()


def _image(a: ad.AnnData, F: np.ndarray) -> ad.AnnData:
    a.obsm["X_uni"] = F
    return a


def _nan_image(a: ad.AnnData) -> ad.AnnData:
    F = np.random.default_rng(0).normal(size=(a.n_obs, 8)).astype(np.float32)
    F[:5] = np.nan
    return _image(a, F)


def _counts(a: ad.AnnData, fn: Callable[[np.ndarray], np.ndarray]) -> ad.AnnData:
    a.X = sparse.csr_matrix(fn(np.asarray(a.X.toarray(), dtype=np.float32)))
    return a


def _dup_genes(a: ad.AnnData) -> ad.AnnData:
    names = list(a.var_names)
    names[1] = names[0]
    a.var_names = names
    return a


def _her2st_like(a: ad.AnnData, section: str) -> ad.AnnData:
    a.uns["spatial"] = {section: {"metadata": {"dataset": "her2st", "section": section}, "scalefactors": {}}}
    return a


def _score_copy(c: Ctx, a: ad.AnnData | None = None, **kw: Any) -> None:
    tl.cancer_score(c.target() if a is None else a, c.model, **{"threshold": 0.5, **kw})


def _regions(a: ad.AnnData, **kw: Any) -> None:
    tl.tumour_regions(a, **{"um_per_px": 1.0, **kw})


# ------------------------------------------------------------------------------------------------ the table
NOT_BOOL = r"must be boolean or 0/1"
GENES = rf"below the minimum of {MIN_GENES}"
REFUSED = r"already exists? and spacrd_sc did not write"

RAISED: list[Any] = [
    # --- align: tables, graphs, genes, counts, image features
    pytest.param(
        lambda c: tl.align(_empty(c.sources()), **FAST), ValueError, r"0 spots; training needs", id="align-empty"
    ),
    pytest.param(
        lambda c: tl.align(_one_spot(c.sources()), **FAST),
        ValueError,
        r"1 spot; training needs at least 10",
        id="align-1spot",
    ),
    pytest.param(
        lambda c: tl.align(_no_graph(c.sources()), **FAST),
        KeyError,
        r"spatial_connectivities.*missing",
        id="align-no-graph",
    ),
    pytest.param(
        lambda c: tl.align(_edgeless(c.sources()), **FAST),
        ValueError,
        r"no edges between spots",
        id="align-edgeless-graph",
    ),
    pytest.param(
        lambda c: tl.align(_crossing(c.sources()), **FAST),
        ValueError,
        r"across sections of adata.obs\['section'\]",
        id="align-graph-across-sections",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), neighbors_key="spatial_knn", **FAST),
        KeyError,
        r"spatial_knn_connectivities",
        id="align-wrong-neighbors-key",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), library_key="sample", **FAST),
        KeyError,
        r"library_key 'sample' is not a column",
        id="align-wrong-library-key",
    ),
    pytest.param(
        lambda c: tl.align(_with_nan(c.sources(), "section"), **FAST),
        ValueError,
        r"missing section names",
        id="align-library-key-nan",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), genes=[f"g{j}" for j in range(10)], **FAST),
        ValueError,
        rf"genes: 10 genes, {GENES}",
        id="align-10-genes",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), target_genes=["g0", "g1", "g2", "g3", "g4", "XIST"], **FAST),
        ValueError,
        rf"shared by the sources and target_genes: 5 genes, {GENES}",
        id="align-5-shared-target-genes",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), n_top_genes=10, **FAST),
        ValueError,
        rf"gene set: 10 genes, {GENES}",
        id="align-n_top_genes-10",
    ),
    pytest.param(
        lambda c: tl.align(_genes_subset(c.sources(), 30), **FAST),
        ValueError,
        rf"30 genes, {GENES}",
        id="align-30-gene-table",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), scaling="balanced", **FAST),
        ValueError,
        r"scaling must be one of .*'standard'.*got 'balanced'",
        id="align-scaling-balanced-removed",
    ),
    pytest.param(
        lambda c: tl.align(_nan_image(c.sources()), **FAST),
        ValueError,
        r"X_uni'\] has NaN/inf in 5 spots",
        id="align-nan-image-features",
    ),
    pytest.param(
        lambda c: tl.align(_image(c.sources(), np.zeros((N_SRC, 2, 2), np.float32) + 1), **FAST),
        ValueError,
        r"must be 2-d",
        id="align-image-features-3d",
    ),
    pytest.param(
        lambda c: tl.align(_counts(c.sources(), lambda X: np.where(X > 5, np.nan, X)), **FAST),
        ValueError,
        r"NaN or inf",
        id="align-nan-counts",
    ),
    pytest.param(
        lambda c: tl.align(_counts(c.sources(), np.log1p), **FAST),
        ValueError,
        r"non-integer values",
        id="align-normalised-counts",
    ),
    pytest.param(
        lambda c: tl.align(_counts(c.sources(), lambda X: X - 2), **FAST),
        ValueError,
        r"negative values",
        id="align-scaled-counts",
    ),
    pytest.param(
        lambda c: tl.align(_dup_genes(c.sources()), **FAST),
        ValueError,
        r"duplicated gene names",
        id="align-duplicated-genes",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), layer="counts", **FAST),
        KeyError,
        r"layer 'counts' not in adata.layers",
        id="align-wrong-layer",
    ),
    pytest.param(
        lambda c: tl.align(c.sources(), modality="image", **FAST),
        ValueError,
        r"image features",
        id="align-image-modality-without-image",
    ),
    # --- fit_vrbca: labels, graph, keys, size
    pytest.param(
        lambda c: tl.fit_vrbca(_as_text(c.sources(), "cancer"), c.aligned, **FAST),
        ValueError,
        NOT_BOOL + r".*text.*isin",
        id="fit-text-labels",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_as_category(c.sources(), "cancer"), c.aligned, **FAST),
        ValueError,
        NOT_BOOL + r".*categorical",
        id="fit-categorical-labels",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_with_nan(c.sources(), "cancer"), c.aligned, **FAST),
        ValueError,
        r"1 missing values",
        id="fit-nan-labels",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_obs(c.sources(), "cancer", np.arange(N_SRC) % 3), c.aligned, **FAST),
        ValueError,
        NOT_BOOL + r".*\[2\.0\]",
        id="fit-labels-0-1-2",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(c.sources(), c.aligned, label_key="tumour", **FAST),
        KeyError,
        r"label_key 'tumour' is not a column",
        id="fit-wrong-label-key",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_obs(c.sources(), "cancer", False), c.aligned, **FAST),
        ValueError,
        r"single class",
        id="fit-single-class",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_crossing(c.sources()), c.aligned, **FAST),
        ValueError,
        r"across sections",
        id="fit-graph-across-sections",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_edgeless(c.sources()), c.aligned, **FAST),
        ValueError,
        r"no edges",
        id="fit-edgeless-graph",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_one_spot(c.sources()), c.aligned, **FAST),
        ValueError,
        r"1 spot; training needs",
        id="fit-1spot",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(_image(c.sources(), np.ones((N_SRC, 3))), c.aligned, key_added="uni", **FAST),
        ValueError,
        r"adata.obsm\['X_uni'\] " + REFUSED,
        id="fit-key-added-user-obsm",
    ),
    pytest.param(
        lambda c: tl.fit_vrbca(c.sources(), c.aligned, overwrite="yes", **FAST),
        TypeError,
        r"overwrite must be True or False",
        id="fit-overwrite-not-bool",
    ),
    # --- cancer_score: model, thresholds, graph, genes, keys
    pytest.param(
        lambda c: tl.cancer_score(c.target(), c.aligned), ValueError, r"not trained", id="score-untrained-model"
    ),
    pytest.param(
        lambda c: _score_copy(c, threshold=float("nan")), ValueError, r"finite number", id="score-threshold-nan"
    ),
    pytest.param(lambda c: _score_copy(c, threshold=1.5), ValueError, r"outside \[0, 1\]", id="score-threshold-1.5"),
    pytest.param(
        lambda c: _score_copy(c, threshold=-0.1), ValueError, r"outside \[0, 1\]", id="score-threshold-negative"
    ),
    pytest.param(
        lambda c: _score_copy(c, threshold="otsu"),
        ValueError,
        r"threshold must be a number or one of",
        id="score-unknown-rule",
    ),
    pytest.param(
        lambda c: _score_copy(c, threshold=True), ValueError, r"threshold must be a number", id="score-threshold-bool"
    ),
    pytest.param(
        lambda c: _score_copy(c, _empty(c.target())),
        ValueError,
        r"0 spots; scoring \(a spot and a neighbour\) needs at least 2",
        id="score-empty",
    ),
    pytest.param(
        lambda c: _score_copy(c, _one_spot(c.target())),
        ValueError,
        r"1 spot; scoring \(a spot and a neighbour\) needs at least 2",
        id="score-1spot",
    ),
    pytest.param(
        lambda c: _regions(_one_spot(c.scored())),
        ValueError,
        r"1 spot; tumour_regions needs at least 2",
        id="regions-1spot",
    ),
    pytest.param(
        lambda c: _score_copy(c, _no_graph(c.target())),
        KeyError,
        r"spatial_connectivities.*missing",
        id="score-no-graph",
    ),
    pytest.param(lambda c: _score_copy(c, _edgeless(c.target())), ValueError, r"no edges", id="score-edgeless-graph"),
    pytest.param(
        lambda c: _score_copy(c, _crossing(c.target(), "slide"), library_key="slide"),
        ValueError,
        r"across sections of adata.obs\['slide'\]",
        id="score-graph-across-sections",
    ),
    pytest.param(
        lambda c: _score_copy(c, library_key="slide"),
        KeyError,
        r"library_key 'slide' is not a column",
        id="score-wrong-library-key",
    ),
    pytest.param(
        lambda c: _score_copy(c, _genes_subset(c.target(), 45)),
        ValueError,
        rf"Genes shared by the model \(60 genes\) and this section: \d\d genes, {GENES}",
        id="score-too-few-shared-genes",
    ),
    pytest.param(
        lambda c: _score_copy(c, _obs(c.target(), "mine_score", 1.0), key_added="mine"),
        ValueError,
        r"adata.obs\['mine_score'\] " + REFUSED,
        id="score-key-added-user-obs",
    ),
    pytest.param(
        lambda c: _score_copy(c, _obs(c.target(), "pathology_cancer", True), key_added="pathology"),
        ValueError,
        r"obs\['pathology_cancer'\]",
        id="score-key-added-user-call-column",
    ),
    pytest.param(
        lambda c: _score_copy(c, _image(c.target(), np.ones((N_TGT, 3))), key_added="uni"),
        ValueError,
        r"obsm\['X_uni'\] " + REFUSED,
        id="score-key-added-user-obsm",
    ),
    pytest.param(
        lambda c: _score_copy(c, _uns(c.target(), "mine", {"note": "mine"}), key_added="mine"),
        ValueError,
        r"adata.uns\['mine'\] " + REFUSED,
        id="score-key-added-user-uns",
    ),
    pytest.param(
        lambda c: _score_copy(c, layer="raw"), KeyError, r"layer 'raw' not in adata.layers", id="score-wrong-layer"
    ),
    pytest.param(
        lambda c: _score_copy(c, _dup_genes(c.target())),
        ValueError,
        r"duplicated gene names",
        id="score-duplicated-genes",
    ),
    # --- tumour_regions: calls, scores, thresholds, graph, coordinates, keys
    pytest.param(
        lambda c: _regions(_as_text(c.scored(), "spacrd_cancer")),
        ValueError,
        NOT_BOOL + r".*text",
        id="regions-text-calls",
    ),
    pytest.param(
        lambda c: _regions(_as_category(c.scored(), "spacrd_cancer")),
        ValueError,
        NOT_BOOL + r".*categorical",
        id="regions-categorical-calls",
    ),
    pytest.param(
        lambda c: _regions(_with_nan(c.scored(), "spacrd_cancer")),
        ValueError,
        r"missing values",
        id="regions-nan-calls",
    ),
    pytest.param(
        lambda c: _regions(_with_nan(c.scored(), "spacrd_score"), threshold=0.5),
        ValueError,
        r"1 NaN/inf scores",
        id="regions-nan-scores",
    ),
    pytest.param(
        lambda c: _regions(c.scored(), threshold=float("nan")), ValueError, r"finite number", id="regions-threshold-nan"
    ),
    pytest.param(
        lambda c: _regions(c.scored(), threshold=2), ValueError, r"outside \[0, 1\]", id="regions-threshold-2"
    ),
    pytest.param(
        lambda c: _regions(c.scored(), threshold="0.5"),
        ValueError,
        r"threshold must be a number",
        id="regions-threshold-text",
    ),
    pytest.param(
        lambda c: _regions(c.scored(), key_added="pathology"),
        ValueError,
        r"adata.obs\['pathology'\] " + REFUSED + r".*overwrite=True",
        id="regions-key-added-pathology",
    ),
    pytest.param(
        lambda c: _regions(_obs(c.scored(), "reg_id", 0), key_added="reg"),
        ValueError,
        r"obs\['reg_id'\]",
        id="regions-key-added-user-id-column",
    ),
    pytest.param(
        lambda c: _regions(_no_graph(c.scored())), KeyError, r"spatial_connectivities.*missing", id="regions-no-graph"
    ),
    pytest.param(lambda c: _regions(_edgeless(c.scored())), ValueError, r"no edges", id="regions-edgeless-graph"),
    pytest.param(
        lambda c: _regions(_crossing(c.scored(), "slide"), library_key="slide"),
        ValueError,
        r"across sections",
        id="regions-graph-across-sections",
    ),
    pytest.param(
        lambda c: _regions(c.scored(), library_key="slide"),
        KeyError,
        r"library_key 'slide' is not a column",
        id="regions-wrong-library-key",
    ),
    pytest.param(
        lambda c: _regions(_nan_xy(c.scored())),
        ValueError,
        r"NaN/inf coordinates for 1 spots",
        id="regions-nan-coordinates",
    ),
    pytest.param(
        lambda c: _regions(_xy(c.scored(), np.ones((N_TGT, 1)))),
        ValueError,
        r"must be \(n_spots, 2\) spot centres, got shape \(120, 1\)",
        id="regions-1-column-coordinates",
    ),
    pytest.param(
        lambda c: _regions(_xy(c.scored(), None)),
        KeyError,
        r"obsm\['spatial'\] \(spot centres\) is missing",
        id="regions-no-coordinates",
    ),
    pytest.param(lambda c: _regions(_empty(c.scored())), ValueError, r"0 spots", id="regions-empty"),
    pytest.param(lambda c: _regions(c.scored(), score_key="score"), KeyError, r"score", id="regions-wrong-score-key"),
    pytest.param(
        lambda c: _regions(c.scored(), call_key="called"),
        KeyError,
        r"adata.obs\['called'\] is missing",
        id="regions-wrong-call-key",
    ),
    pytest.param(
        lambda c: _regions(c.scored(), min_region_size=0), ValueError, r"must be >= 1", id="regions-min-size-0"
    ),
    pytest.param(
        lambda c: _regions(c.scored(), um_per_px=float("nan")),
        ValueError,
        r"um_per_px must be positive",
        id="regions-um-per-px-nan",
    ),
    # --- evaluate / evaluate_groups: labels, scores, calls, thresholds, sizes
    pytest.param(
        lambda c: tl.evaluate(c.scored(), groupby="pathology"),
        TypeError,
        r"evaluate\(\) does not split by groups.*sc_crd\.tl\.evaluate_groups",
        id="evaluate-groupby",
    ),
    pytest.param(
        lambda c: tl.evaluate(_as_text(c.scored(), "cancer")),
        ValueError,
        NOT_BOOL + r".*text",
        id="evaluate-text-labels",
    ),
    pytest.param(
        lambda c: tl.evaluate(_as_category(c.scored(), "cancer")),
        ValueError,
        NOT_BOOL + r".*categorical",
        id="evaluate-categorical-labels",
    ),
    pytest.param(
        lambda c: tl.evaluate(_with_nan(c.scored(), "spacrd_score")),
        ValueError,
        r"NaN/inf scores.*'not cancer'",
        id="evaluate-nan-scores",
    ),
    pytest.param(
        lambda c: tl.evaluate(_obs(c.scored(), "spacrd_score", "high")),
        ValueError,
        r"numeric scores",
        id="evaluate-text-scores",
    ),
    pytest.param(
        lambda c: tl.evaluate(c.scored(), score_key="score"),
        KeyError,
        r"score_key 'score' is not in adata.obs",
        id="evaluate-wrong-score-key",
    ),
    pytest.param(
        lambda c: tl.evaluate(c.scored(), label_key="tumour"),
        KeyError,
        r"label_key 'tumour'",
        id="evaluate-wrong-label-key",
    ),
    pytest.param(
        lambda c: tl.evaluate(_as_text(c.scored(), "spacrd_cancer")), ValueError, NOT_BOOL, id="evaluate-text-calls"
    ),
    pytest.param(
        lambda c: tl.evaluate(c.scored(), threshold=float("nan")),
        ValueError,
        r"finite number",
        id="evaluate-threshold-nan",
    ),
    pytest.param(
        lambda c: tl.evaluate(c.scored(), threshold=1.01),
        ValueError,
        r"outside \[0, 1\]",
        id="evaluate-threshold-above-1",
    ),
    pytest.param(lambda c: tl.evaluate(_one_spot(c.scored())), ValueError, r"1 spot; evaluate", id="evaluate-1spot"),
    pytest.param(lambda c: tl.evaluate(_empty(c.scored())), ValueError, r"0 spots", id="evaluate-empty"),
    pytest.param(
        lambda c: tl.evaluate(_obs(c.scored(), "cancer", True)), ValueError, r"single class", id="evaluate-single-class"
    ),
    pytest.param(
        lambda c: tl.evaluate(c.scored(), exclude_undetermined=True, pathology_key="path"),
        KeyError,
        r"'path'",
        id="evaluate-wrong-pathology-key",
    ),
    pytest.param(
        lambda c: tl.evaluate_groups(_as_text(c.scored(), "cancer")), ValueError, NOT_BOOL, id="groups-text-labels"
    ),
    pytest.param(
        lambda c: tl.evaluate_groups(_with_nan(c.scored(), "spacrd_score")),
        ValueError,
        r"NaN/inf scores",
        id="groups-nan-scores",
    ),
    pytest.param(
        lambda c: tl.evaluate_groups(c.scored(), "tissue"), KeyError, r"groupby \['tissue'\]", id="groups-wrong-groupby"
    ),
    pytest.param(
        lambda c: tl.evaluate_groups(_as_category(c.scored(), "spacrd_cancer")),
        ValueError,
        NOT_BOOL,
        id="groups-categorical-calls",
    ),
    pytest.param(
        lambda c: tl.evaluate_groups(c.scored(), threshold=float("inf")),
        ValueError,
        r"finite number",
        id="groups-threshold-inf",
    ),
    pytest.param(lambda c: tl.evaluate_groups(_empty(c.scored())), ValueError, r"0 spots", id="groups-empty"),
    # --- extract_uni: cheap checks before any image is read or backbone built
    pytest.param(
        lambda c: tl.extract_uni(_image(c.target(), np.ones((N_TGT, 3))), pretrained=False, backbone="resnet18"),
        ValueError,
        r"adata.obsm\['X_uni'\] " + REFUSED,
        id="extract-key-added-user-obsm",
    ),
    pytest.param(
        lambda c: tl.extract_uni(_empty(c.target()), pretrained=False, backbone="resnet18"),
        ValueError,
        r"0 spots; extract_uni",
        id="extract-empty",
    ),
    pytest.param(
        lambda c: tl.extract_uni(_nan_xy(c.target()), pretrained=False, backbone="resnet18"),
        ValueError,
        r"NaN/inf coordinates",
        id="extract-nan-coordinates",
    ),
    pytest.param(
        lambda c: tl.extract_uni(c.target(), pretrained=False, backbone="resnet18"),
        ValueError,
        r"image-less",
        id="extract-no-image",
    ),
    pytest.param(
        lambda c: tl.extract_uni(c.target(), batch_size=0, pretrained=False, backbone="resnet18"),
        ValueError,
        r"batch_size",
        id="extract-batch-size-0",
    ),
    pytest.param(
        lambda c: tl.extract_uni(c.target(), context=float("nan"), pretrained=False, backbone="resnet18"),
        ValueError,
        r"context",
        id="extract-context-nan",
    ),
    pytest.param(
        lambda c: tl.extract_uni(c.target(), backbone="vit_nonexistent"),
        (KeyError, ValueError),
        r"vit_nonexistent",
        id="extract-unknown-backbone",
    ),
]


@pytest.mark.parametrize(("call", "exc", "match"), RAISED)
def test_bad_input_is_refused(ctx: Ctx, call: Callable[[Ctx], Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call(ctx)


# --------------------------------------------------------------------------------- used, with a warning
def _rerun_score(c: Ctx) -> None:
    a = c.scored()  # scored once by the package: its keys are replaced with a warning
    _score_copy(c, a)


def _rerun_regions(c: Ctx) -> None:
    a = c.scored()
    _regions(a)
    _regions(a, min_region_size=1)


def _sparse_graph(a: ad.AnnData) -> ad.AnnData:
    del a.obsp["spatial_connectivities"]
    return with_graph(a, n_neighs=2)


def _her2st_model(c: Ctx) -> sc_crd.SpaCRD:
    import copy

    model = copy.deepcopy(c.model)
    model.training_params["her2st_model"] = {"sections": ["A1", "B1", "C1"]}
    return model


WARNED: list[Any] = [
    pytest.param(_rerun_score, r"Overwriting adata.obs\['spacrd_score'\]\.", id="score-rerun-own-keys"),
    pytest.param(
        lambda c: _score_copy(c, _obs(c.target(), "mine_score", 1.0), key_added="mine", overwrite=True),
        r"Overwriting adata.obs\['mine_score'\] \(not written by spacrd_sc; overwrite=True\)",
        id="score-overwrite-user-column",
    ),
    pytest.param(_rerun_regions, r"Overwriting adata.obs\['spacrd_region_id'\]\.", id="regions-rerun-own-keys"),
    pytest.param(
        lambda c: _regions(c.scored(), key_added="pathology", overwrite=True),
        r"Overwriting adata.obs\['pathology'\] \(not written by spacrd_sc; overwrite=True\)",
        id="regions-overwrite-pathology",
    ),
    pytest.param(
        lambda c: _score_copy(c, _sparse_graph(c.target())),
        r"median of 2 neighbours per spot but the model reads 6",
        id="score-graph-with-2-neighbours",
    ),
    pytest.param(
        lambda c: tl.cancer_score(_her2st_like(c.target(), "B1"), _her2st_model(c), threshold=0.5),
        r"Section\(s\) \['B1'\] were in the training data of this her2st model",
        id="score-her2st-training-section",
    ),
    pytest.param(
        lambda c: tl.align(
            c.sources(),
            target_genes=[*c.sources().var_names[:70], "XIST", "ESR1"],
            n_top_genes=60,
            **SMALL,
            **{**FAST, "epochs": 1},
        ),
        r"2 of 72 genes dropped \(target genes absent from the sources\), e.g. XIST, ESR1.*"
        r"10 of 70 genes dropped \(not among the 60 most variable\)",
        id="align-dropped-genes-logged",
    ),
]


@pytest.mark.parametrize(("call", "message"), WARNED)
def test_questionable_input_is_used_with_a_warning(
    ctx: Ctx, call: Callable[[Ctx], Any], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        call(ctx)
    assert caplog.records and __import__("re").search(message, caplog.text, flags=__import__("re").S), caplog.text


# ----------------------------------------------------------------------------------- what a refusal keeps
def test_refused_key_leaves_the_user_column_untouched(ctx: Ctx) -> None:
    """The issue's data loss: ``tumour_regions(key_added="pathology")`` replaced the pathologist's labels."""
    a = ctx.scored()
    before = a.obs["pathology"].copy()
    with pytest.raises(ValueError, match=r"adata.obs\['pathology'\]"):
        tl.tumour_regions(a, key_added="pathology", um_per_px=1.0)
    pd.testing.assert_series_equal(a.obs["pathology"], before)
    tl.tumour_regions(a, key_added="pathology", um_per_px=1.0, overwrite=True)
    assert list(a.obs["pathology"].cat.categories) == ["tumour", "boundary", "non-tumour"]


def test_written_keys_are_recorded_and_survive_h5ad(ctx: Ctx, tmp_path) -> None:
    """The record of written keys is what tells the package's keys from the user's; it survives a write."""
    a = ctx.scored()
    tl.tumour_regions(a, um_per_px=1.0)
    written = a.uns["spacrd_sc"]["written"]
    assert {"spacrd_score", "spacrd_cancer", "spacrd_region", "spacrd_region_id"} <= set(written["obs"])
    assert "X_spacrd" in written["obsm"] and {"spacrd", "spacrd_region"} <= set(written["uns"])
    a.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    tl.tumour_regions(back, um_per_px=1.0)  # its own keys, read back: replaced with a warning, no error
    tl.cancer_score(back, ctx.model, threshold=0.5)


def test_legacy_output_without_record_is_recognised(ctx: Ctx) -> None:
    """Tables scored before the record existed carry ``uns[key_added]["params"]``: still the package's keys."""
    a = ctx.scored()
    del a.uns["spacrd_sc"]
    tl.cancer_score(a, ctx.model, threshold=0.5)
    assert "spacrd_score" in a.uns["spacrd_sc"]["written"]["obs"]


def test_same_bad_graph_same_answer_everywhere(ctx: Ctx) -> None:
    """A graph linking sections is refused by every function that reads the graph, with the same message."""
    a = _crossing(ctx.scored(), "slide")
    messages = []
    for call in (
        lambda: tl.cancer_score(a, ctx.model, library_key="slide", threshold=0.5),
        lambda: tl.tumour_regions(a, library_key="slide", um_per_px=1.0),
    ):
        with pytest.raises(ValueError, match="across sections") as err:
            call()
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_text_false_is_not_read_as_true(ctx: Ctx) -> None:
    """``astype(bool)`` read the string "False" as True; every reader of a call column now refuses text."""
    a = ctx.scored()
    a.obs["spacrd_cancer"] = np.where(a.obs["spacrd_cancer"], "True", "False")
    for call in (
        lambda: tl.evaluate(a),
        lambda: tl.evaluate_groups(a),
        lambda: tl.tumour_regions(a, um_per_px=1.0),
    ):
        with pytest.raises(ValueError, match=NOT_BOOL):
            call()


def test_zero_one_labels_and_calls_are_accepted(ctx: Ctx) -> None:
    a = ctx.scored()
    ref = tl.evaluate(a)
    a.obs["cancer"] = a.obs["cancer"].astype(int)
    a.obs["spacrd_cancer"] = a.obs["spacrd_cancer"].astype(float)
    assert tl.evaluate(a) == ref


def test_min_genes_setting(ctx: Ctx) -> None:
    """``settings.min_genes`` lowers the minimum knowingly (toy panels); it is checked."""
    before = sc_crd.settings.min_genes
    assert before == MIN_GENES == 50
    with pytest.raises(ValueError, match="positive integer"):
        sc_crd.settings.min_genes = 0
    try:
        sc_crd.settings.min_genes = 10
        model = tl.align(ctx.sources(), n_top_genes=10, **SMALL, **{**FAST, "epochs": 1})
        assert len(model.genes) == 10
    finally:
        sc_crd.settings.min_genes = before


def test_her2st_sections_are_recognised(her2st_loader, caplog: pytest.LogCaptureFixture) -> None:
    """A table read by ``datasets.her2st`` names its section where the warning looks for it (real data)."""
    from types import SimpleNamespace

    from spacrd_sc import _validate

    b1 = her2st_loader("B1").tables["table"]
    b4 = her2st_loader("B4").tables["table"]
    model = SimpleNamespace(training_params={"her2st_model": {"sections": ["A1", "B1", "C1"]}})
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        assert _validate.her2st_training_sections(b1, model) == ["B1"]
        assert _validate.her2st_training_sections(b4, model) == []  # unlabelled, never trained on
    assert caplog.text.count("were in the training data") == 1
    both = ad.concat({"B1": b1, "B4": b4}, label="section", uns_merge="unique")
    assert _validate.her2st_training_sections(both, model, "section") == ["B1"]
    assert _validate.her2st_training_sections(b1, SimpleNamespace(training_params={})) == []
