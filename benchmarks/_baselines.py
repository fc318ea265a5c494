"""Baselines a bioinformatician would use instead of SpaCRD, on the same folds and features.

Each baseline takes source and target AnnData (raw counts, squidpy graph, obs["section"] on the sources)
and returns one score per target spot. None of them sees target labels. Hyperparameters are chosen by
leave-one-source-section-out cross-validation inside the sources.
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from spacrd_sc.tl import _inputs

#: Marker genes for the marker-score baseline. ERBB2 and its 17q12 amplicon neighbours GRB7, PGAP3, STARD3
#: (co-amplified in HER2+ breast cancer; e.g. Staaf et al., Breast Cancer Res 2010), and luminal epithelial
#: markers (EPCAM, KRT8, KRT18, KRT19, CDH1) that mark carcinoma cells against stroma, fat and immune cells.
MARKERS = ["ERBB2", "GRB7", "PGAP3", "STARD3", "EPCAM", "KRT8", "KRT18", "KRT19", "CDH1"]


def features(
    a: AnnData, genes: list[str], *, library_key: str | None, scaling: str, weights: np.ndarray | None = None
) -> np.ndarray:
    sections = _inputs.section_codes(a, library_key)
    return _inputs.gene_matrix(a, genes, layer=None, sections=sections, scaling=scaling, weights=weights)[0]


def feature_pair(sources: AnnData, target: AnnData, genes: list[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Source and target features of one kind: ``"raw"`` (log-normalised), ``"z"`` (per-section z-scores) or
    ``"smooth"`` (z-scores averaged over each spot and its graph neighbours)."""
    scaling = "none" if kind == "raw" else "standard"
    Xs = features(sources, genes, library_key="section", scaling=scaling)
    Xt = features(target, genes, library_key=None, scaling=scaling)
    if kind == "smooth":
        Xs, Xt = smooth(sources, Xs), smooth(target, Xt)
    return Xs, Xt


def smooth(a: AnnData, X: np.ndarray) -> np.ndarray:
    """Mean of each spot and its squidpy-graph neighbours."""
    C = sparse.csr_matrix(a.obsp["spatial_connectivities"], dtype=np.float32)
    C = (C > 0).astype(np.float32) + sparse.identity(a.n_obs, dtype=np.float32, format="csr")
    deg = np.asarray(C.sum(axis=1)).ravel()
    return np.asarray(sparse.diags(1 / deg) @ C @ X, dtype=np.float32)


def _cv_choose(make, X: np.ndarray, y: np.ndarray, sections: np.ndarray, grid: list) -> object:
    """Grid value with the best mean AUC over leave-one-source-section-out folds."""
    best, best_auc = grid[0], -1.0
    for g in grid:
        aucs = []
        for s in np.unique(sections):
            tr, te = sections != s, sections == s
            if len(np.unique(y[te])) < 2:
                continue
            m = make(g).fit(X[tr], y[tr])
            aucs.append(roc_auc_score(y[te], m.predict_proba(X[te])[:, 1]))
        if np.mean(aucs) > best_auc:
            best, best_auc = g, float(np.mean(aucs))
    return best


def fit_logreg(Xs, ys, secs, *, seed: int = 0) -> tuple[LogisticRegression, dict]:
    make = lambda C: LogisticRegression(C=C, max_iter=3000, random_state=seed)  # noqa: E731
    C = _cv_choose(make, Xs, ys, secs, [0.001, 0.01, 0.1])
    return make(C).fit(Xs, ys), {"C": C}


def fit_lightgbm(Xs, ys, secs, *, seed: int = 0) -> tuple[object, dict]:
    import lightgbm as lgb

    make = lambda n: lgb.LGBMClassifier(  # noqa: E731
        n_estimators=n,
        learning_rate=0.05,
        num_leaves=15,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.3,
        random_state=seed,
        n_jobs=2,
        verbose=-1,
    )
    n = _cv_choose(make, Xs, ys, secs, [100, 300])
    return make(n).fit(Xs, ys), {"n_estimators": n}


def logreg(Xs, ys, secs, Xt, *, seed: int = 0) -> tuple[np.ndarray, dict]:
    model, info = fit_logreg(Xs, ys, secs, seed=seed)
    return model.predict_proba(Xt)[:, 1], info


def lightgbm(Xs, ys, secs, Xt, *, seed: int = 0) -> tuple[np.ndarray, dict]:
    model, info = fit_lightgbm(Xs, ys, secs, seed=seed)
    return model.predict_proba(Xt)[:, 1], info


def balanced_smooth(fit, sources: AnnData, ys: np.ndarray, targets: list[AnnData], genes: list[str], *, seed: int = 0):
    """``fit`` (:func:`fit_logreg`, :func:`fit_lightgbm`) on smoothed z-scores with the package's ``"balanced"``
    scaling: source sections centred on the mean of their two class means (their labels), each target re-centred
    on its class means as the fitted model's scores see them until the scores settle (``tl._inputs.rebalance``,
    the same loop as ``cancer_score``). Returns one score array per target and the fit's info (with the mean
    number of re-centring rounds)."""
    codes = _inputs.section_codes(sources, "section")
    weights = _inputs.balanced_weights(codes, ys)
    Xs = smooth(sources, features(sources, genes, library_key="section", scaling="balanced", weights=weights))
    model, info = fit(Xs, ys, codes, seed=seed)
    out, rounds = [], []
    for t in targets:
        raw = features(t, genes, library_key=None, scaling="none")
        one = np.zeros(t.n_obs, dtype=np.int64)

        def score(w, t=t, raw=raw, one=one):
            X = _inputs._scale_per_section(raw.copy(), one, "balanced", w)
            return model.predict_proba(smooth(t, X))[:, 1]

        p, n = _inputs.rebalance(score, lambda p: p, score(None), one)
        out.append(p)
        rounds.append(n)
    return out, {**info, "rounds": float(np.mean(rounds))}


def marker_score(target: AnnData, *, seed: int = 0) -> tuple[np.ndarray, dict]:
    import scanpy as sc

    t = target.copy()
    sc.pp.normalize_total(t, target_sum=1e4)
    sc.pp.log1p(t)
    genes = [g for g in MARKERS if g in t.var_names]
    sc.tl.score_genes(t, genes, score_name="_marker", random_state=seed)
    return t.obs["_marker"].to_numpy(dtype=np.float64), {"genes": genes}
