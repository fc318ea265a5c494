"""Label-free call rules: turn one section's cancer probabilities into cancer / not-cancer calls.

Every rule sees only the section's own scores (``"half_smooth"`` also its spatial graph, ``"prior"`` also the
cancer share of the training spots). None reads a label. Three named rules and a number, each for a reason:

``"half_smooth"`` (the default)
    A spot is cancer when the mean score of the spot and its graph neighbours is ≥ 0.5: the model's own cut on
    a score that, like the tissue, varies smoothly in space. Chosen for the shipped model by nested
    leave-one-section-out CV on her2st (the best mean inner F1 of the rules compared there).
``"gmm"``
    Two-component Gaussian mixture on the scores, cut where the weighted components cross: the SpaCRD paper's
    label-free rule, kept to reproduce the method and for scores that are not calibrated probabilities.
``"prior"``
    The prevalence-based rule: re-estimate the section's cancer share ``q`` by EM from the posteriors (Saerens,
    Latinne & Decaestecker, Neural Computation 2002), adjust every posterior from the training share ``π`` to
    ``q`` and cut the adjusted posteriors at 0.5 (equivalently ``p`` at ``r / (1 + r)``,
    ``r = (1 − q) π / (q (1 − π))``). For a section whose tumour share differs much from the training sections'.
a number
    A fixed threshold on the score (e.g. one chosen on a labelled section of the same kind).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from .._logging import logger

#: Every named rule :func:`call_cancer` accepts (see the module docstring); the first is the default.
RULES = ("half_smooth", "gmm", "prior")
DEFAULT_RULE = RULES[0]
#: Rules of earlier versions, not adopted by the nested comparison on her2st; named in the error message.
REMOVED_RULES = ("gmm_logit", "gmm3", "half", "gmm_smooth", "gmm_logit_smooth", "prior_smooth", "gmm3_smooth")
_EPS = 1e-6


def _mixture(x: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A 1-d Gaussian mixture of ``x``: means, sds and weights sorted by mean, and the same as a JSON-able dict."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(n_components=n_components, n_init=5, random_state=seed, reg_covar=1e-6).fit(x[:, None])
    order = np.argsort(gm.means_.ravel())
    m = gm.means_.ravel()[order]
    s = np.sqrt(gm.covariances_.ravel()[order])
    w = gm.weights_.ravel()[order]
    info: dict[str, Any] = {
        "means": [float(v) for v in m],
        "sds": [float(v) for v in s],
        "weights": [float(v) for v in w],
    }
    return m, s, w, info


def gmm_threshold(scores: np.ndarray, *, seed: int = 0) -> tuple[float, dict[str, float]]:
    """Fit a 2-component Gaussian mixture to ``scores`` and return the crossing point between its means.

    The threshold ``t`` solves ``w1·N(t; m1, s1) = w2·N(t; m2, s2)`` with ``m1 < t < m2``. Where the
    weighted densities do not cross between the means (one component swamps the other), the midpoint
    of the means is used and a warning is logged.

    Returns
    -------
    The threshold and a dict with the fitted ``means``, ``sds`` and ``weights`` (low component first).
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 4 or np.ptp(x) == 0:
        raise ValueError("The GMM threshold needs at least 4 finite, not all equal scores.")
    m, s, w, info = _mixture(x, 2, seed)
    # log(w1) - log(s1) - (t-m1)^2/(2 s1^2) = log(w2) - log(s2) - (t-m2)^2/(2 s2^2)  →  a t^2 + b t + c = 0
    a = 1 / (2 * s[1] ** 2) - 1 / (2 * s[0] ** 2)
    b = m[0] / s[0] ** 2 - m[1] / s[1] ** 2
    c = (m[1] ** 2 / (2 * s[1] ** 2) - m[0] ** 2 / (2 * s[0] ** 2)) + np.log((w[0] * s[1]) / (w[1] * s[0]))
    roots = np.array([-c / b]) if abs(a) < 1e-12 else np.roots([a, b, c])
    roots = np.real(roots[np.isreal(roots)])
    between = roots[(roots > m[0]) & (roots < m[1])]
    if between.size:
        t = float(between[0])
        info["crossing"] = True
    else:
        t = float((m[0] + m[1]) / 2)
        info["crossing"] = False
        logger.warning(
            "The two GMM components do not cross between their means (%.3f, %.3f); using their midpoint %.3f.",
            m[0],
            m[1],
            t,
        )
    return t, info


def prior_shift(
    proba: np.ndarray, source_share: float, *, max_iter: int = 1000, tol: float = 1e-8
) -> tuple[float, np.ndarray, int]:
    """EM estimate of a section's cancer share from posteriors calibrated for the training share.

    Iterates ``q ← mean(a_i)`` with ``a_i = (q/π) p_i / ((q/π) p_i + ((1 − q)/(1 − π)) (1 − p_i))``, starting
    from ``q = π`` (Saerens, Latinne & Decaestecker 2002).

    Returns
    -------
    The estimated share ``q``, the adjusted posteriors ``a`` and the number of EM iterations.
    """
    if not 0 < source_share < 1:
        raise ValueError(f"source_share must lie strictly between 0 and 1, got {source_share!r}.")
    p = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    pi = float(source_share)
    q, n_iter = pi, 0
    while n_iter < max_iter:
        n_iter += 1
        pos = (q / pi) * p
        q_new = float(np.clip((pos / (pos + ((1 - q) / (1 - pi)) * (1 - p))).mean(), _EPS, 1 - _EPS))
        converged = abs(q_new - q) < tol
        q = q_new
        if converged:
            break
    pos = (q / pi) * p
    return q, pos / (pos + ((1 - q) / (1 - pi)) * (1 - p)), n_iter


def smooth_scores(scores: np.ndarray, connectivities: sparse.spmatrix | np.ndarray) -> np.ndarray:
    """Mean of each spot's score and its graph neighbours' (any non-zero entry of ``connectivities``)."""
    C = sparse.csr_matrix(connectivities)
    if C.shape != (len(scores), len(scores)):
        raise ValueError(f"connectivities has shape {C.shape}; expected ({len(scores)}, {len(scores)}).")
    C = (C != 0).astype(np.float64) + sparse.identity(C.shape[0], format="csr")
    return np.asarray(C @ np.asarray(scores, dtype=np.float64)).ravel() / np.asarray(C.sum(axis=1)).ravel()


def call_cancer(
    scores: np.ndarray,
    rule: str | float,
    *,
    source_share: float | None = None,
    connectivities: sparse.spmatrix | np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cancer calls of one section by a label-free rule (see the module docstring) or a fixed threshold.

    Parameters
    ----------
    scores
        Cancer probabilities of the section's spots.
    rule
        One of :data:`RULES`, or a number (fixed threshold on the score).
    source_share
        Cancer share of the training spots (``"prior"`` only).
    connectivities
        ``(n, n)`` spatial graph of the section (``"half_smooth"`` only).
    seed
        Random seed of the GMM fit.

    Returns
    -------
    Boolean calls and a dict: ``rule``; ``threshold`` (on the probability, after smoothing for ``"half_smooth"``);
    ``called_share``; ``gmm`` (mixture fit) for ``"gmm"``; ``cancer_share`` (EM estimate) and ``source_share``
    for ``"prior"``.
    """
    if not isinstance(rule, str):
        t = float(rule)
        calls = np.asarray(scores) >= t
        return calls, {"rule": "fixed", "threshold": t, "called_share": float(calls.mean())}
    check_rule(rule)
    x = np.asarray(scores, dtype=np.float64)
    info: dict[str, Any] = {"rule": rule}
    if rule == "half_smooth":
        if connectivities is None:
            raise ValueError(f"Threshold rule {rule!r} needs the section's spatial graph (connectivities).")
        x = smooth_scores(x, connectivities)
        t = 0.5
    elif rule == "gmm":
        t, info["gmm"] = gmm_threshold(x, seed=seed)
    else:
        if source_share is None:
            raise ValueError("Threshold rule 'prior' needs the training cancer share (source_share).")
        q, _, n_iter = prior_shift(x, source_share)
        r = (1 - q) * source_share / (q * (1 - source_share))
        t = float(r / (1 + r))
        info.update(cancer_share=q, source_share=float(source_share), em_iterations=n_iter)
    calls = x >= t
    info.update(threshold=float(t), called_share=float(calls.mean()))
    return calls, info


def check_rule(rule: str | float) -> None:
    """Raise a ``ValueError`` unless ``rule`` is a number or one of :data:`RULES` (naming a removed rule)."""
    if isinstance(rule, bool) or not (isinstance(rule, int | float) or rule in RULES):
        removed = (
            f" {rule!r} was removed (not adopted); a number gives a fixed cut (e.g. 0.5 for 'half')."
            if rule in REMOVED_RULES
            else ""
        )
        raise ValueError(f"threshold must be a number or one of {list(RULES)}, got {rule!r}.{removed}")
    if not isinstance(rule, str):
        from .. import _validate

        _validate.threshold(rule)  # finite, in [0, 1]: a NaN threshold would call no spot


def source_share_of(model: Any) -> float | None:
    """Cancer share of a trained model's training spots (``None`` when the model did not record it)."""
    fusion = getattr(model, "training_params", {}).get("fusion", {})
    if not fusion.get("n_spots"):
        return None
    return fusion["n_cancer"] / fusion["n_spots"]


def call_sections(
    scores: np.ndarray,
    sections: np.ndarray,
    names: np.ndarray,
    rule: str | float,
    *,
    source_share: float | None = None,
    connectivities: sparse.spmatrix | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """:func:`call_cancer` on each section (integer codes ``sections``, display ``names``) of a table.

    Returns
    -------
    Boolean calls for every spot and, per section name, the ``info`` dict of :func:`call_cancer`.
    """
    calls = np.zeros(len(scores), dtype=bool)
    infos: dict[str, dict[str, Any]] = {}
    C = None if connectivities is None else sparse.csr_matrix(connectivities)
    for s in np.unique(sections):
        m = sections == s
        conn = None if C is None else C[m][:, m]
        calls[m], infos[str(names[m][0])] = call_cancer(
            scores[m], rule, source_share=source_share, connectivities=conn, seed=seed
        )
    return calls, infos


def threshold_uns(infos: dict[str, dict[str, Any]], *, per_section: bool) -> dict[str, Any]:
    """``uns`` entries of :func:`call_sections`' infos: ``threshold``, ``called_share`` and, where the rule
    gives them, ``gmm`` and ``cancer_share`` (one value, or a dict per section when ``per_section``)."""
    out: dict[str, Any] = {}
    for key in ("threshold", "called_share", "gmm", "cancer_share"):
        vals = {name: info[key] for name, info in infos.items() if key in info}
        if vals:
            out[key] = vals if per_section else next(iter(vals.values()))
    return out
