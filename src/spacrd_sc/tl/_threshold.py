"""Label-free call rules: turn one section's cancer probabilities into cancer / not-cancer calls.

Every rule sees only the section's own scores (and, for ``"prior"``, the cancer share of the training spots;
for the ``*_smooth`` rules, the section's spatial graph). None reads a label.

``"gmm"``
    Two-component Gaussian mixture on the probabilities; cut where the weighted components cross.
``"gmm_logit"``
    The same mixture on ``logit(p)`` (cut mapped back to a probability).
``"half"``
    The model's own cut, ``p ≥ 0.5``.
``"prior"``
    Re-estimate the section's cancer share ``q`` by EM from the posteriors (Saerens, Latinne & Decaestecker,
    Neural Computation 2002), adjust every posterior from the training share ``π`` to ``q`` and cut the
    adjusted posteriors at 0.5 (equivalently ``p`` at ``r / (1 + r)``, ``r = (1 − q) π / (q (1 − π))``).
``"gmm3"``
    Three-component Gaussian mixture on the probabilities; spots the lowest-mean component does not claim are
    called cancer (cut where that component stops being the most probable one). Non-cancer tissue forms the
    low mode; cancer may spread over two (mixed spots, heterogeneous tumour), which a 2-component fit splits.
``"<rule>_smooth"``
    Any of the above applied to the spatially smoothed score (mean over each spot and its graph neighbours).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from .._logging import logger

BASE_RULES = ("gmm", "gmm_logit", "half", "prior", "gmm3")
#: Every named rule :func:`call_cancer` accepts.
RULES = BASE_RULES + tuple(f"{r}_smooth" for r in BASE_RULES)
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


def gmm3_threshold(scores: np.ndarray, *, seed: int = 0, grid: int = 4001) -> tuple[float, dict[str, Any]]:
    """Fit a 3-component Gaussian mixture to ``scores``; return the lowest score above the lowest component's
    mean at which another component's weighted density exceeds it (on a grid of ``grid`` points up to the
    largest score), and the fit (``means``, ``sds``, ``weights``, low component first).

    Where the lowest component is the most probable everywhere above its mean, the midpoint of the two lowest
    means is used and a warning is logged (``crossing`` is then False).
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 6 or np.unique(x).size < 3:
        raise ValueError("The 3-component GMM threshold needs at least 6 finite scores with 3 distinct values.")
    m, s, w, info = _mixture(x, 3, seed)
    g = np.linspace(m[0], x.max(), grid)
    logd = np.log(w) - np.log(s) - (g[:, None] - m) ** 2 / (2 * s**2)
    beyond = np.flatnonzero(logd.argmax(axis=1) != 0)
    info["crossing"] = bool(beyond.size)
    if beyond.size:
        return float(g[beyond[0]]), info
    t = float((m[0] + m[1]) / 2)
    logger.warning("The lowest of 3 GMM components dominates all higher scores; using the midpoint %.3f.", t)
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
        Cancer share of the training spots (``"prior"`` rules only).
    connectivities
        ``(n, n)`` spatial graph of the section (``*_smooth`` rules only).
    seed
        Random seed of the GMM fit.

    Returns
    -------
    Boolean calls and a dict: ``rule``; ``threshold`` (on the probability, after smoothing for ``*_smooth``);
    ``called_share``; ``gmm`` (mixture fit) for the GMM rules; ``cancer_share`` (EM estimate) and
    ``source_share`` for ``"prior"``.
    """
    if not isinstance(rule, str):
        t = float(rule)
        calls = np.asarray(scores) >= t
        return calls, {"rule": "fixed", "threshold": t, "called_share": float(calls.mean())}
    if rule not in RULES:
        raise ValueError(f"Unknown threshold rule {rule!r}; use a number or one of {list(RULES)}.")
    base = rule.removesuffix("_smooth")
    x = np.asarray(scores, dtype=np.float64)
    if rule.endswith("_smooth"):
        if connectivities is None:
            raise ValueError(f"Threshold rule {rule!r} needs the section's spatial graph (connectivities).")
        x = smooth_scores(x, connectivities)
    info: dict[str, Any] = {"rule": rule}
    if base == "gmm":
        t, info["gmm"] = gmm_threshold(x, seed=seed)
    elif base == "gmm_logit":
        z = np.clip(x, _EPS, 1 - _EPS)
        tz, info["gmm"] = gmm_threshold(np.log(z / (1 - z)), seed=seed)
        t = float(1 / (1 + np.exp(-tz)))
    elif base == "gmm3":
        t, info["gmm"] = gmm3_threshold(x, seed=seed)
    elif base == "half":
        t = 0.5
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
    """Raise a ``ValueError`` unless ``rule`` is a number or one of :data:`RULES`."""
    if isinstance(rule, bool) or not (isinstance(rule, int | float) or rule in RULES):
        raise ValueError(f"threshold must be a number or one of {list(RULES)}, got {rule!r}.")
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
