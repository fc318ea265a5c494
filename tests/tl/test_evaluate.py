"""tl.evaluate_groups (per-class calls and scores) and evaluate's call column derived with Key."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest

import spacrd_sc as sc_crd


def scored() -> ad.AnnData:
    cls = ["invasive cancer"] * 4 + ["breast glands"] * 3 + ["adipose tissue"] * 3
    a = ad.AnnData(obs=pd.DataFrame({"pathology": pd.Categorical(cls)}, index=[f"s{i}" for i in range(10)]))
    a.obs["cancer"] = a.obs["pathology"] == "invasive cancer"
    a.obs["m_score"] = [0.9, 0.8, 0.7, 0.2, 0.6, 0.7, 0.1, 0.0, 0.1, 0.2]
    a.obs["m_cancer"] = a.obs["m_score"] >= 0.5
    a.obs["section"] = ["A"] * 5 + ["B"] * 5
    return a


def test_evaluate_groups_known_table():
    t = sc_crd.tl.evaluate_groups(scored(), "pathology", score_key="m_score")
    assert list(t.columns) == ["n_spots", "mean_score", "median_score", "called_fraction", "label_fraction"]
    assert t.loc["invasive cancer", "called_fraction"] == pytest.approx(0.75)
    assert t.loc["breast glands", "called_fraction"] == pytest.approx(2 / 3)  # over-called glands
    assert t.loc["adipose tissue", "called_fraction"] == 0.0
    assert t.loc["breast glands", "mean_score"] == pytest.approx(1.4 / 3)
    assert t.loc["invasive cancer", "median_score"] == pytest.approx(0.75)
    assert t["n_spots"].tolist() == [3, 3, 4] and t["n_spots"].dtype.kind == "i"
    assert t.loc["invasive cancer", "label_fraction"] == 1.0


def test_evaluate_groups_threshold_several_keys_no_label():
    a = scored()
    t = sc_crd.tl.evaluate_groups(a, ["section", "pathology"], score_key="m_score", threshold=0.65, label_key=None)
    assert "label_fraction" not in t
    assert t.loc[("B", "breast glands"), "called_fraction"] == pytest.approx(0.5)  # s5 0.7 ≥ 0.65, s6 0.1
    assert t.loc[("A", "breast glands"), "called_fraction"] == 0.0  # s4 = 0.6 < 0.65
    assert t["n_spots"].sum() == a.n_obs


def test_evaluate_uses_key_call_column():
    a = scored()
    res = sc_crd.tl.evaluate(a, score_key="m_score")  # calls from obs["m_cancer"] = Key.call(Key.prefix(...))
    calls = a.obs["m_cancer"].to_numpy()
    y = a.obs["cancer"].to_numpy()
    tp = (calls & y).sum()
    assert res["f1"] == pytest.approx(2 * tp / (calls.sum() + y.sum()))
    a.obs["spacrd_score"] = a.obs["m_score"]
    with pytest.raises(KeyError, match="spacrd_cancer"):
        sc_crd.tl.evaluate(a)


def test_evaluate_groups_bad_input():
    a = scored()
    with pytest.raises(KeyError, match="tissue"):
        sc_crd.tl.evaluate_groups(a, "tissue", score_key="m_score")
    with pytest.raises(KeyError, match="nope_score"):
        sc_crd.tl.evaluate_groups(a, score_key="nope_score")
    a.obs["m2"] = a.obs["m_score"]
    with pytest.raises(KeyError, match="No cancer calls"):
        sc_crd.tl.evaluate_groups(a, score_key="m2")  # no '_score' suffix: no call column to derive
    assert list(a.obs.columns) == ["pathology", "cancer", "m_score", "m_cancer", "section", "m2"]  # nothing written


@pytest.mark.parametrize("groupby", ["pathology", ["section", "pathology"]])
def test_evaluate_groupby_points_to_evaluate_groups(groupby):
    """``evaluate(..., groupby=)`` is refused with a TypeError naming the sibling (its return type differs)."""
    with pytest.raises(TypeError, match=r"use sc_crd\.tl\.evaluate_groups\(data, .*pathology"):
        sc_crd.tl.evaluate(scored(), score_key="m_score", groupby=groupby)
    # the sibling answers what was asked; evaluate without groupby still works
    assert "called_fraction" in sc_crd.tl.evaluate_groups(scored(), groupby, score_key="m_score")
    assert set(sc_crd.tl.evaluate(scored(), score_key="m_score")) >= {"auc", "ap", "f1", "ks"}
