"""Label-free call rules (tl._threshold): each on a synthetic case whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import spacrd_sc as sc_crd
from spacrd_sc.tl._threshold import call_cancer, call_sections, prior_shift, smooth_scores, threshold_uns


def calibrated_posteriors(n: int, true_share: float, source_share: float, seed: int = 0):
    """Labels drawn with ``true_share`` cancer; posteriors exact for a classifier trained at ``source_share``.

    Feature ``x ~ N(+1, 1)`` for cancer, ``N(−1, 1)`` otherwise, so the likelihood ratio is ``exp(2x)``.
    """
    rng = np.random.default_rng(seed)
    y = rng.random(n) < true_share
    x = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    odds = source_share / (1 - source_share) * np.exp(2 * x)
    return y, odds / (1 + odds), x


def test_gmm_on_probabilities_cuts_between_modes():
    rng = np.random.default_rng(0)
    p = np.clip(np.r_[rng.normal(0.2, 0.05, 600), rng.normal(0.8, 0.05, 400)], 0, 1)
    calls, info = call_cancer(p, "gmm")
    assert 0.3 < info["threshold"] < 0.7
    assert calls.sum() == 400 and info["called_share"] == pytest.approx(0.4)
    assert info["rule"] == "gmm" and info["gmm"]["means"][0] < info["threshold"] < info["gmm"]["means"][1]


def test_only_the_documented_rules_remain():
    """The default, the paper's mixture, the prevalence-based rule, and a number; removed names say so."""
    from spacrd_sc.tl._threshold import DEFAULT_RULE, RULES

    assert RULES == ("half_smooth", "gmm", "prior") and DEFAULT_RULE == "half_smooth"
    for removed in ("half", "gmm3", "gmm_logit", "prior_smooth"):
        with pytest.raises(ValueError, match=f"{removed!r} was removed"):
            call_cancer(np.array([0.2, 0.7]), removed)
    calls, info = call_cancer(np.array([0.1, 0.49, 0.5, 0.9]), 0.5)  # what "half" was
    np.testing.assert_array_equal(calls, [False, False, True, True])


@pytest.mark.parametrize(("true_share", "source_share"), [(0.85, 0.4), (0.2, 0.5), (0.4, 0.4)])
def test_prior_em_recovers_the_target_cancer_share(true_share, source_share):
    y, p, x = calibrated_posteriors(20_000, true_share, source_share)
    q, adjusted, n_iter = prior_shift(p, source_share)
    assert q == pytest.approx(true_share, abs=0.02)
    assert n_iter > 1 or true_share == source_share
    # the adjusted posteriors are the exact posteriors under the recovered share
    odds = q / (1 - q) * np.exp(2 * x)
    np.testing.assert_allclose(adjusted, odds / (1 + odds), atol=1e-9)
    calls, info = call_cancer(p, "prior", source_share=source_share)
    assert info["cancer_share"] == pytest.approx(q) and info["source_share"] == source_share
    np.testing.assert_array_equal(calls, adjusted >= 0.5)
    # on a section with more cancer than the sources, the adjusted cut calls more spots than p ≥ 0.5
    if true_share > source_share:
        assert calls.mean() > (p >= 0.5).mean()
        assert abs(calls.mean() - y.mean()) < abs((p >= 0.5).mean() - y.mean())


def test_smooth_scores_is_the_neighbourhood_mean():
    # path graph 0 – 1 – 2
    C = sparse.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    np.testing.assert_allclose(smooth_scores(np.array([0.0, 0.6, 0.9]), C), [0.3, 0.5, 0.75])


def test_smoothing_removes_salt_and_pepper_errors():
    # a 30 × 30 grid whose left half is cancer; 15 % of the spots get the wrong side of 0.5
    n = 30
    idx = np.arange(n * n).reshape(n, n)
    edges = np.r_[np.c_[idx[:, :-1].ravel(), idx[:, 1:].ravel()], np.c_[idx[:-1].ravel(), idx[1:].ravel()]]
    C = sparse.coo_matrix((np.ones(len(edges)), edges.T), shape=(n * n, n * n))
    C = (C + C.T).tocsr()
    y = (idx % n < n // 2).ravel()
    rng = np.random.default_rng(0)
    p = np.where(y, 0.8, 0.2) + rng.normal(0, 0.05, n * n)
    flip = rng.random(n * n) < 0.15
    p[flip] = 1 - p[flip]
    raw, _ = call_cancer(p, 0.5)
    smoothed, info = call_cancer(p, "half_smooth", connectivities=C)
    assert (smoothed == y).mean() > (raw == y).mean() + 0.1
    assert info["rule"] == "half_smooth"


def test_fixed_threshold_and_bad_rules():
    calls, info = call_cancer(np.array([0.2, 0.7]), 0.6)
    assert info == {"rule": "fixed", "threshold": 0.6, "called_share": 0.5}
    np.testing.assert_array_equal(calls, [False, True])
    with pytest.raises(ValueError, match="threshold must be a number or one of .* got 'otsu'"):
        call_cancer(np.array([0.2, 0.7]), "otsu")
    with pytest.raises(ValueError, match="training cancer share"):
        call_cancer(np.array([0.2, 0.7]), "prior")
    with pytest.raises(ValueError, match="spatial graph"):
        call_cancer(np.array([0.2, 0.7]), "half_smooth")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        prior_shift(np.array([0.2, 0.7]), 1.0)
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        smooth_scores(np.array([0.2, 0.7]), sparse.identity(3))


def test_call_sections_runs_each_section_on_its_own():
    _, p1, _ = calibrated_posteriors(3000, 0.8, 0.4, seed=1)
    _, p2, _ = calibrated_posteriors(3000, 0.2, 0.4, seed=2)
    scores = np.r_[p1, p2]
    sections = np.repeat([0, 1], 3000)
    names = np.repeat(["A", "B"], 3000)
    calls, infos = call_sections(scores, sections, names, "prior", source_share=0.4)
    assert infos["A"]["cancer_share"] == pytest.approx(0.8, abs=0.03)
    assert infos["B"]["cancer_share"] == pytest.approx(0.2, abs=0.03)
    np.testing.assert_array_equal(calls[:3000], call_cancer(p1, "prior", source_share=0.4)[0])
    uns = threshold_uns(infos, per_section=True)
    assert set(uns) == {"threshold", "called_share", "cancer_share"} and set(uns["threshold"]) == {"A", "B"}
    single = threshold_uns({"all": infos["A"]}, per_section=False)
    assert single["cancer_share"] == infos["A"]["cancer_share"]


@pytest.mark.parametrize("rule", ["prior", "half_smooth", "gmm"])
def test_cancer_score_records_the_rule(sources, target, rule):
    fast = {"epochs": 2, "device": "cpu", "progress_bar": False}
    small = {"model_kwargs": {"hidden_dims": (64, 32, 32), "n_heads": 4, "latent_dim": 8}}
    model = sc_crd.tl.align(sources, n_top_genes=60, **small, **fast)
    sc_crd.tl.fit_vrbca(sources, model, **fast)
    sc_crd.tl.cancer_score(target, model, threshold=rule)
    uns = target.uns["spacrd"]
    assert uns["params"]["threshold"] == rule
    score = target.obs["spacrd_score"].to_numpy()
    if rule == "prior":
        assert 0 < uns["cancer_share"] < 1
        expected = score >= uns["threshold"]
    elif rule == "gmm":
        assert len(uns["gmm"]["means"]) == 2
        expected = score >= uns["threshold"]
    else:
        assert uns["threshold"] == 0.5
        conn = target.obsp["spatial_connectivities"]
        expected = smooth_scores(score, conn) >= uns["threshold"]
    np.testing.assert_array_equal(target.obs["spacrd_cancer"].to_numpy(), expected)
    assert uns["called_share"] == pytest.approx(expected.mean())
    with pytest.raises(ValueError, match="threshold must be a number or one of"):
        sc_crd.tl.cancer_score(target, model, threshold="median")
