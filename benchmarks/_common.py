"""Shared benchmark code: the her2st folds, SpaCRD as the README chains it, baselines and metrics.

Only the public API of ``spacrd_sc`` is used (``sc_crd.datasets``, ``sc_crd.tl``); the baselines use
scanpy, scikit-learn and LightGBM directly. Scripts run as ``python benchmarks/<script>.py`` from the
repository root find this module next to them (``import _common``).

No function here reads the held-out section's labels except :func:`metrics`, which reports them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

HERE = Path(__file__).parent
RESULTS = HERE / "results"
PAPER = json.loads((HERE / "paper_values.json").read_text())
#: The 8 pathologist-labelled her2st sections.
SECTIONS = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]
N_NEIGHS = 6
#: The package's default call: a 0.5 cut on the mean score of each spot and its graph neighbours. Applied to the
#: baselines' probabilities by :func:`half_smooth` so every method is called the same way.
CALL_RULE = "half_smooth"
#: Marker genes for the marker-score baseline: ERBB2 and its 17q12 amplicon neighbours (GRB7, PGAP3, STARD3) and
#: luminal epithelial markers (EPCAM, KRT8, KRT18, KRT19, CDH1).
MARKERS = ["ERBB2", "GRB7", "PGAP3", "STARD3", "EPCAM", "KRT8", "KRT18", "KRT19", "CDH1"]


def data_dir() -> Path:
    """``$SPACRD_DATA_DIR``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("SPACRD_DATA_DIR", HERE.parents[1] / "shared/data"))


def load_sections(sections: list[str] | None = None) -> dict[str, ad.AnnData]:
    """The labelled her2st tables (``sc_crd.datasets.her2st``)."""
    import spacrd_sc as sc_crd

    return {s: sc_crd.datasets.her2st(s).tables["table"] for s in sections or SECTIONS}


def split_fold(secs: dict[str, ad.AnnData], target: str) -> tuple[ad.AnnData, ad.AnnData]:
    """The other sections concatenated with ``obs["section"]`` and their squidpy graph (as the README
    quickstart), and a copy of the held-out section with its own graph."""
    import squidpy as sq

    sources = ad.concat({s: a for s, a in secs.items() if s != target}, label="section", join="inner", index_unique="-")
    sq.gr.spatial_neighbors_knn(sources, library_key="section", n_neighs=N_NEIGHS)
    t = secs[target].copy()
    sq.gr.spatial_neighbors_knn(t, n_neighs=N_NEIGHS)
    return sources, t


def spacrd(sources: ad.AnnData, target: ad.AnnData, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SpaCRD with the package defaults, chained as in the README quickstart; returns scores and calls."""
    import spacrd_sc as sc_crd

    model = sc_crd.tl.fit_vrbca(
        sources, sc_crd.tl.align(sources, seed=seed, progress_bar=False), seed=seed, progress_bar=False
    )
    sc_crd.tl.cancer_score(target, model)
    return target.obs["spacrd_score"].to_numpy(np.float64), target.obs["spacrd_cancer"].to_numpy(bool)


# --- baselines -------------------------------------------------------------------------------------------


def log_normalize(a: ad.AnnData) -> np.ndarray:
    """normalize_total(1e4) + log1p of the raw counts, dense float32."""
    import scanpy as sc

    b = ad.AnnData(a.X.copy(), obs=pd.DataFrame(index=a.obs_names), var=pd.DataFrame(index=a.var_names))
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    X = b.X.toarray() if sparse.issparse(b.X) else np.asarray(b.X)
    return X.astype(np.float32)


def select_genes(sources: ad.AnnData, target: ad.AnnData, n_top_genes: int = 3000) -> list[str]:
    """Batch-aware highly variable genes of the sources among the genes expressed in every source section and
    present in the target (the target's gene *names* only)."""
    import scanpy as sc

    X = log_normalize(sources)
    secs = sources.obs["section"].astype(str).to_numpy()
    ok = sources.var_names.isin(target.var_names)
    for s in np.unique(secs):
        ok &= (X[secs == s] > 0).any(axis=0)
    tmp = ad.AnnData(X[:, ok], obs=pd.DataFrame({"section": secs}, index=sources.obs_names))
    tmp.var_names = sources.var_names[ok]
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat", batch_key="section")
    return list(
        tmp.var.sort_values(["highly_variable_nbatches", "dispersions_norm"], ascending=False).index[:n_top_genes]
    )


def zscore_per_section(X: np.ndarray, sections: np.ndarray) -> np.ndarray:
    """Each gene centred and scaled within each section on that section's own spots."""
    X = X.copy()
    for s in np.unique(sections):
        i = sections == s
        mu, sd = X[i].mean(axis=0), X[i].std(axis=0)
        X[i] = (X[i] - mu) / np.where(sd > 0, sd, 1.0)
    return X


def smooth(a: ad.AnnData, X: np.ndarray) -> np.ndarray:
    """Mean of each spot and its squidpy-graph neighbours (rows of ``X``)."""
    C = (sparse.csr_matrix(a.obsp["spatial_connectivities"]) != 0).astype(np.float64)
    C = C + sparse.identity(a.n_obs, format="csr")
    out = sparse.diags(1 / np.asarray(C.sum(axis=1)).ravel()) @ C @ np.asarray(X, dtype=np.float64)
    return np.asarray(out, dtype=np.float32 if np.ndim(X) > 1 else np.float64)


def half_smooth(a: ad.AnnData, p: np.ndarray) -> np.ndarray:
    """The package's default call on any probability: smoothed over the graph, then ``>= 0.5``."""
    return smooth(a, p) >= 0.5


def smoothed_z(sources: ad.AnnData, target: ad.AnnData, genes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-section z-scores of log-normalised expression, averaged over each spot and its neighbours."""
    gs = sources.var_names.get_indexer(genes)
    gt = target.var_names.get_indexer(genes)
    Xs = zscore_per_section(log_normalize(sources)[:, gs], sources.obs["section"].astype(str).to_numpy())
    Xt = zscore_per_section(log_normalize(target)[:, gt], np.zeros(target.n_obs))
    return smooth(sources, Xs), smooth(target, Xt)


def _cv_choose(make, X, y, groups, grid):
    """Grid value with the best mean AUC over leave-one-source-section-out folds."""
    from sklearn.metrics import roc_auc_score

    best, best_auc = grid[0], -1.0
    for g in grid:
        aucs = [
            roc_auc_score(
                y[groups == s], make(g).fit(X[groups != s], y[groups != s]).predict_proba(X[groups == s])[:, 1]
            )
            for s in np.unique(groups)
            if len(np.unique(y[groups == s])) == 2
        ]
        if np.mean(aucs) > best_auc:
            best, best_auc = g, float(np.mean(aucs))
    return best


def logreg(Xs, ys, groups, Xt, *, seed: int = 0) -> tuple[np.ndarray, dict]:
    """L2 logistic regression, ``C`` chosen by leave-one-source-section-out CV."""
    from sklearn.linear_model import LogisticRegression

    make = lambda C: LogisticRegression(C=C, max_iter=3000, random_state=seed)  # noqa: E731
    C = _cv_choose(make, Xs, ys, groups, [0.001, 0.01, 0.1])
    return make(C).fit(Xs, ys).predict_proba(Xt)[:, 1], {"C": C}


def lightgbm(Xs, ys, groups, Xt, *, seed: int = 0, grid: tuple[int, ...] = (100, 300)) -> tuple[np.ndarray, dict]:
    """Gradient-boosted trees; the number of trees (``grid``) chosen by leave-one-source-section-out CV.

    One fit of ``max(grid)`` trees per inner fold, scored after each number of trees in ``grid`` (boosting adds
    trees in order, so its first 100 trees are the 100-tree model).
    """
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    def make(n):
        return lgb.LGBMClassifier(
            n_estimators=n,
            learning_rate=0.05,
            num_leaves=15,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.3,
            random_state=seed,
            n_jobs=1,
            verbose=-1,
        )

    aucs = {n: [] for n in grid}
    for s in np.unique(groups):
        tr, te = groups != s, groups == s
        if len(np.unique(ys[te])) < 2:
            continue
        m = make(max(grid)).fit(Xs[tr], ys[tr])
        for n in grid:
            aucs[n].append(roc_auc_score(ys[te], m.predict_proba(Xs[te], num_iteration=n)[:, 1]))
    n = max(grid, key=lambda k: (np.mean(aucs[k]), -k))
    return make(n).fit(Xs, ys).predict_proba(Xt)[:, 1], {"n_estimators": int(n)}


def erbb2(target: ad.AnnData) -> np.ndarray:
    """log-normalised ERBB2 expression (no training)."""
    return log_normalize(target)[:, target.var_names.get_loc("ERBB2")].astype(np.float64)


def marker_score(target: ad.AnnData, *, seed: int = 0) -> np.ndarray:
    """``scanpy.tl.score_genes`` on :data:`MARKERS` (no training)."""
    import scanpy as sc

    t = ad.AnnData(log_normalize(target), obs=pd.DataFrame(index=target.obs_names))
    t.var_names = target.var_names
    sc.tl.score_genes(t, [g for g in MARKERS if g in t.var_names], score_name="m", random_state=seed)
    return t.obs["m"].to_numpy(np.float64)


# --- metrics -----------------------------------------------------------------------------------------------


def metrics(target: ad.AnnData, scores: np.ndarray, calls: np.ndarray | None) -> dict[str, float]:
    """``tl.evaluate`` (AUC, AP, KS; F1 of ``calls``) and the called vs labelled cancer share.

    ``calls=None`` (scores that are not probabilities) leaves F1 and the called share empty.
    """
    import spacrd_sc as sc_crd

    t = ad.AnnData(obs=pd.DataFrame({"cancer": target.obs["cancer"].to_numpy(bool)}, index=target.obs_names))
    t.obs["s"] = np.asarray(scores, dtype=np.float64)
    t.obs["c"] = np.zeros(t.n_obs, bool) if calls is None else np.asarray(calls, bool)
    m = sc_crd.tl.evaluate(t, score_key="s", call_key="c")
    out = {k: float(m[k]) for k in ("auc", "ap", "f1", "ks")}
    out["labelled_share"] = float(t.obs["cancer"].mean())
    out["called_share"] = float(t.obs["c"].mean())
    if calls is None:
        out["f1"] = out["called_share"] = np.nan
    return out
