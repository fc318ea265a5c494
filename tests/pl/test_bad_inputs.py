"""Bad inputs of every public ``pl`` function and the named error each gets (#23); one row per case."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import spacrd_sc as sc_crd

pl = sc_crd.pl


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def scored(n: int = 40) -> AnnData:
    """``n`` spots in two pathology classes with scores, calls and a stored threshold."""
    rng = np.random.default_rng(0)
    groups = np.repeat(["invasive cancer", "connective tissue"], [n // 2, n - n // 2])
    scores = np.clip(np.where(groups == "invasive cancer", 0.8, 0.2) + rng.normal(0, 0.1, n), 0, 1)
    obs = pd.DataFrame(
        {"pathology": pd.Categorical(groups), "spacrd_score": scores, "spacrd_cancer": scores >= 0.5},
        index=[f"s{i}" for i in range(n)],
    )
    a = AnnData(np.zeros((n, 2), dtype=np.float32), obs=obs)
    a.uns["spacrd"] = {"threshold": 0.5, "params": {"threshold": "half"}}
    return a


def history_model() -> sc_crd.SpaCRD:
    model = sc_crd.SpaCRD([f"g{i}" for i in range(4)], None, hidden_dims=(8, 8, 8), n_heads=2, latent_dim=2)
    model.history["align"] = [3.0, 2.0, 1.5]
    model.history["cls"] = [0.7, 0.5]
    return model


def _obs(a: AnnData, key: str, values: Any) -> AnnData:
    a.obs[key] = values
    return a


def _nan_score(a: AnnData) -> AnnData:
    s = a.obs["spacrd_score"].to_numpy(dtype=float).copy()
    s[0] = np.nan
    a.obs["spacrd_score"] = s
    return a


def _sdata(a: AnnData) -> Any:
    from spatialdata import SpatialData

    return SpatialData(tables={"table": a})


def dist(a: AnnData, **kw: Any) -> Any:
    return pl.score_distribution(a, show=False, **kw)


def _grid(a: AnnData) -> AnnData:
    a.obsm["spatial"] = np.c_[np.arange(a.n_obs) % 8, np.arange(a.n_obs) // 8].astype(float) * 10
    return a


def smap(a: AnnData, **kw: Any) -> Any:
    return pl.score_map(a, show=False, **kw)


RAISED: list[Any] = [
    # score_distribution
    pytest.param(
        lambda: dist(scored(), score_key="score"),
        KeyError,
        r"score_key 'score' is not in adata.obs",
        id="dist-wrong-score-key",
    ),
    pytest.param(lambda: dist(_nan_score(scored())), ValueError, r"1 NaN/inf scores", id="dist-nan-scores"),
    pytest.param(
        lambda: dist(_obs(scored(), "spacrd_score", "high")), ValueError, r"numeric scores", id="dist-text-scores"
    ),
    pytest.param(
        lambda: dist(_obs(scored(), "spacrd_score", True)), ValueError, r"numeric scores", id="dist-bool-scores"
    ),
    pytest.param(lambda: dist(scored()[:0].copy()), ValueError, r"0 spots; score_distribution", id="dist-empty"),
    pytest.param(lambda: dist(scored(), threshold=float("nan")), ValueError, r"finite number", id="dist-threshold-nan"),
    pytest.param(lambda: dist(scored(), threshold=1.5), ValueError, r"outside \[0, 1\]", id="dist-threshold-1.5"),
    pytest.param(
        lambda: dist(scored(), threshold="0.5"), ValueError, r"threshold must be a number", id="dist-threshold-text"
    ),
    pytest.param(
        lambda: dist(scored(), groupby="tissue"), KeyError, r"groupby 'tissue' is not a column", id="dist-wrong-groupby"
    ),
    pytest.param(
        lambda: dist(scored(), kind="box"), ValueError, r"kind must be 'violin' or 'hist'", id="dist-unknown-kind"
    ),
    pytest.param(
        lambda: dist(scored(), order=["tumour"]), ValueError, r"order names categories not in", id="dist-unknown-order"
    ),
    pytest.param(
        lambda: dist(_sdata(scored()), table_key="cells"), KeyError, r"no table 'cells'", id="dist-wrong-table-key"
    ),
    pytest.param(lambda: dist(scored().obs), TypeError, r"Expected an AnnData or a SpatialData", id="dist-dataframe"),
    # score_map
    pytest.param(
        lambda: smap(_grid(scored()), score_key="score"), KeyError, r"score_key 'score' is not in", id="map-score-key"
    ),
    pytest.param(lambda: smap(_grid(_nan_score(scored()))), ValueError, r"1 NaN/inf scores", id="map-nan-scores"),
    pytest.param(
        lambda: smap(_grid(_obs(scored(), "logit", np.linspace(-3, 3, 40))), score_key="logit", call_key=None),
        ValueError,
        r"spans -3–3; score_map draws scores in \[0, 1\] on a fixed 0–1 scale",
        id="map-scores-outside-0-1",
    ),
    pytest.param(
        lambda: smap(_grid(_obs(scored(), "spacrd_cancer", np.arange(40) % 3))),
        ValueError,
        r"spacrd_cancer",
        id="map-calls-not-bool",
    ),
    pytest.param(lambda: smap(scored()), KeyError, r"spatial", id="map-no-coordinates"),
    pytest.param(
        lambda: smap(_grid(scored()), img=True), ValueError, r"img=True but the table has no image", id="map-no-image"
    ),
    pytest.param(
        lambda: smap(_grid(scored()), library_id="A1"), KeyError, r"library_id 'A1' is not in", id="map-unknown-lib"
    ),
    pytest.param(lambda: smap(scored().obs), TypeError, r"Expected an AnnData or a SpatialData", id="map-dataframe"),
    # training_history
    pytest.param(
        lambda: pl.training_history(scored(), show=False),
        TypeError,
        r"model must be a spacrd_sc.SpaCRD",
        id="history-not-a-model",
    ),
    pytest.param(
        lambda: pl.training_history(
            sc_crd.SpaCRD(["a", "b"], None, hidden_dims=(8, 8, 8), n_heads=2, latent_dim=2), show=False
        ),
        ValueError,
        r"no training history yet",
        id="history-untrained",
    ),
    pytest.param(
        lambda: pl.training_history(history_model(), keys=["bce"], show=False),
        KeyError,
        r"No history for \['bce'\]",
        id="history-unknown-key",
    ),
    pytest.param(
        lambda: pl.training_history(history_model(), keys="loss", show=False),
        KeyError,
        r"No history for \['loss'\]",
        id="history-unknown-key-as-text",
    ),
]


@pytest.mark.parametrize(("call", "exc", "match"), RAISED)
def test_bad_input_is_refused(call: Callable[[], Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_history_key_as_text_is_one_key() -> None:
    """``keys="align"`` draws that loss (it was read letter by letter: "No history for ['a', 'l', ...]")."""
    ax = pl.training_history(history_model(), keys="align", show=False)
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == ["align"]


def test_threshold_on_unscaled_scores_is_allowed() -> None:
    """Scores outside [0, 1] (e.g. a baseline's logits) may be cut anywhere: the [0, 1] rule is for probabilities."""
    a = _obs(scored(), "logit", np.linspace(-3, 3, 40))
    ax = dist(a, score_key="logit", threshold=1.5)
    assert any(np.allclose(line.get_ydata(), 1.5) for line in ax.get_lines())
