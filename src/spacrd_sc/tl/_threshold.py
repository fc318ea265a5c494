"""Label-free decision threshold: where the two weighted components of a 1-d GMM cross."""

from __future__ import annotations

import numpy as np

from .._logging import logger


def gmm_threshold(scores: np.ndarray, *, seed: int = 0) -> tuple[float, dict[str, float]]:
    """Fit a 2-component Gaussian mixture to ``scores`` and return the crossing point between its means.

    The threshold ``t`` solves ``w1·N(t; m1, s1) = w2·N(t; m2, s2)`` with ``m1 < t < m2``. Where the
    weighted densities do not cross between the means (one component swamps the other), the midpoint
    of the means is used and a warning is logged.

    Returns
    -------
    The threshold and a dict with the fitted ``means``, ``sds`` and ``weights`` (low component first).
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 4 or np.ptp(x) == 0:
        raise ValueError("The GMM threshold needs at least 4 finite, not all equal scores.")
    gm = GaussianMixture(n_components=2, n_init=5, random_state=seed, reg_covar=1e-6).fit(x[:, None])
    order = np.argsort(gm.means_.ravel())
    m = gm.means_.ravel()[order]
    s = np.sqrt(gm.covariances_.ravel()[order])
    w = gm.weights_.ravel()[order]
    info = {
        "means": [float(v) for v in m],
        "sds": [float(v) for v in s],
        "weights": [float(v) for v in w],
    }
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
