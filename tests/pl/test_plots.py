"""``sc_crd.pl``: image comparison against stored baselines, return values, saving, bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.testing.compare import compare_images

import spacrd_sc as sc_crd

# the Agg backend is selected in tests/conftest.py

BASELINE_DIR = Path(__file__).parent / "baseline"
DPI = 40
TOL = 2.0  # RMS over 0–255 pixel values; absorbs font/antialiasing differences between freetype builds
#: Set to 1 to (re)write the baselines instead of comparing (then inspect and commit the PNGs).
REGENERATE = os.environ.get("SPACRD_REGENERATE_BASELINES") == "1"

CATEGORIES = ["invasive cancer", "connective tissue", "adipose tissue"]


@pytest.fixture(autouse=True)
def _plot_style():
    """Fixed style, independent of the user's matplotlibrc; closes every figure afterwards."""
    with matplotlib.rc_context(
        {**matplotlib.rcParamsDefault, "font.family": "DejaVu Sans", "figure.dpi": DPI, "savefig.dpi": DPI}
    ):
        yield
    plt.close("all")


@pytest.fixture
def scored() -> AnnData:
    """60 spots in 3 pathology classes with fixed scores and a stored threshold."""
    rng = np.random.default_rng(0)
    centres = {"invasive cancer": 0.85, "connective tissue": 0.35, "adipose tissue": 0.1}
    groups = np.repeat(CATEGORIES, [25, 20, 15])
    scores = np.clip([rng.normal(centres[g], 0.08) for g in groups], 0, 1).astype(np.float32)
    obs = pd.DataFrame(
        {
            "pathology": pd.Categorical(groups, categories=CATEGORIES),
            "spacrd_score": scores,
            "spacrd_cancer": scores >= 0.5,
        },
        index=[f"s{i}" for i in range(groups.size)],
    )
    adata = AnnData(np.zeros((groups.size, 2), dtype=np.float32), obs=obs)
    adata.uns["spacrd"] = {"threshold": 0.5}
    return adata


@pytest.fixture
def mapped(scored: AnnData) -> AnnData:
    """The scored spots on a 10 × 6 grid (cancer on the left), scores 0.2–0.9, the calls from a 0.5 cut."""
    xy = np.array([[x, y] for x in range(10) for y in range(6)], dtype=float) * 10
    scored.obsm["spatial"] = xy
    scores = np.clip(0.9 - 0.07 * xy[:, 0] / 10 + 0.01 * xy[:, 1] / 10, 0, 1)
    scored.obs["spacrd_score"] = scores.astype(np.float32)
    scored.obs["spacrd_cancer"] = scores >= 0.5
    scored.uns["spacrd"] = {"threshold": 0.5, "called_share": 0.55, "params": {"threshold": "gmm"}}
    return scored


@pytest.fixture
def trained_like() -> sc_crd.SpaCRD:
    """A tiny untrained model whose history is set by hand (no training)."""
    model = sc_crd.SpaCRD([f"g{i}" for i in range(4)], None, hidden_dims=(8, 8, 8), n_heads=2, latent_dim=2)
    e = np.arange(1, 11, dtype=float)
    model.history["align"] = list(4.0 / e)
    model.history["fused"] = list(2.0 / e + 0.1)
    model.history["cls"] = list(0.7 * np.exp(-e / 4))
    return model


def _check_image(ax: Axes, name: str, tmp_path: Path) -> None:
    actual = tmp_path / name
    ax.figure.savefig(actual, dpi=DPI)
    expected = BASELINE_DIR / name
    if REGENERATE:
        BASELINE_DIR.mkdir(exist_ok=True)
        expected.write_bytes(actual.read_bytes())
        return
    assert expected.is_file(), f"baseline {expected} missing; run with SPACRD_REGENERATE_BASELINES=1"
    result = compare_images(str(expected), str(actual), tol=TOL)
    assert result is None, result


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("kind", ["violin", "hist"])
def test_score_distribution_image(scored: AnnData, kind: str, tmp_path: Path) -> None:
    # explicit order: the image must not depend on how the default category order is derived
    ax = sc_crd.pl.score_distribution(scored, kind=kind, order=CATEGORIES, show=False)
    _check_image(ax, f"score_distribution_{kind}.png", tmp_path)


def test_score_map_image(mapped: AnnData, tmp_path: Path) -> None:
    ax = sc_crd.pl.score_map(mapped, size=60, show=False)
    _check_image(ax, "score_map.png", tmp_path)


def test_training_history_image(trained_like: sc_crd.SpaCRD, tmp_path: Path) -> None:
    ax = sc_crd.pl.training_history(trained_like, show=False)
    _check_image(ax, "training_history.png", tmp_path)


# ------------------------------------------------------------------------------------------ behaviour
def test_score_distribution_returns_axes_and_threshold(scored: AnnData) -> None:
    ax = sc_crd.pl.score_distribution(scored, show=False)
    assert isinstance(ax, Axes)
    labels = {t.get_text() for t in ax.get_xticklabels()}
    assert labels == {"invasive cancer\n(n=25)", "connective tissue\n(n=20)", "adipose tissue\n(n=15)"}
    assert any("threshold 0.50" in t.get_text() for t in ax.get_legend().get_texts())


def test_score_distribution_says_when_the_rule_cuts_the_smoothed_score(scored: AnnData) -> None:
    scored.uns["spacrd"]["params"] = {"threshold": "half_smooth"}
    ax = sc_crd.pl.score_distribution(scored, show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["threshold 0.50 (on the neighbourhood mean)"]
    scored.uns["spacrd"]["params"] = {"threshold": "gmm"}
    ax = sc_crd.pl.score_distribution(scored, show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["threshold 0.50"]


def test_score_distribution_default_order_is_category_order(scored: AnnData) -> None:
    ax = sc_crd.pl.score_distribution(scored, show=False)
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == CATEGORIES


def test_score_distribution_explicit_threshold_order_and_ax(scored: AnnData) -> None:
    _, ax0 = plt.subplots()
    ax = sc_crd.pl.score_distribution(
        scored, order=["adipose tissue", "invasive cancer"], threshold=0.3, ax=ax0, show=False
    )
    assert ax is ax0
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert ticks == ["adipose tissue", "invasive cancer"]
    assert any("threshold 0.30" in t.get_text() for t in ax.get_legend().get_texts())


def test_score_distribution_groupby_none(scored: AnnData) -> None:
    ax = sc_crd.pl.score_distribution(scored, groupby=None, kind="hist", show=False)
    assert any("all spots (n=60)" in t.get_text() for t in ax.get_legend().get_texts())


def test_score_distribution_save(scored: AnnData, tmp_path: Path) -> None:
    out = tmp_path / "dist.png"
    ret = sc_crd.pl.score_distribution(scored, save=out)  # show defaults to False when saving
    assert isinstance(ret, Axes)
    assert out.is_file() and out.stat().st_size > 0


def test_training_history_returns_axes_and_keys(trained_like: sc_crd.SpaCRD, tmp_path: Path) -> None:
    ax = sc_crd.pl.training_history(trained_like, keys=["cls"], log_scale=True, show=False)
    assert isinstance(ax, Axes)
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == ["cls"]
    # classifier epochs are the last ones of the fusion stage, after the alignment epochs
    h = trained_like.history
    n_total = len(h.get("align", [])) + max(len(v) for k, v in h.items() if k != "align")
    assert lines[0].get_xdata()[-1] == n_total
    assert ax.get_yscale() == "log"
    out = tmp_path / "hist.pdf"
    sc_crd.pl.training_history(trained_like, save=out, show=False)
    assert out.is_file() and out.stat().st_size > 0


def test_show_true_calls_plt_show(scored: AnnData, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    assert sc_crd.pl.score_distribution(scored, show=True) is None
    assert calls == [1]


def test_score_distribution_axis_spans_0_to_1(scored: AnnData) -> None:
    ax = sc_crd.pl.score_distribution(scored, show=False)
    assert ax.get_ylim() == (0.0, 1.0)
    ax = sc_crd.pl.score_distribution(scored, kind="hist", bins=10, show=False)
    assert ax.get_xlim() == (0.0, 1.0)
    edges = sorted({round(float(x), 6) for p in ax.patches for x in p.get_path().vertices[:, 0]})
    assert edges[0] == 0.0 and edges[-1] == 1.0  # bins over 0–1, not the section's range
    scored.obs["spacrd_score"] = scored.obs["spacrd_score"] * 3  # not a likelihood: its own range
    assert sc_crd.pl.score_distribution(scored, show=False, threshold=0.5).get_ylim()[1] > 1


def test_score_map_fixed_scale_outline_and_title(mapped: AnnData) -> None:
    from matplotlib.colors import to_hex

    mapped.obs["spacrd_score"] = mapped.obs["spacrd_score"] * 0.3 + 0.35  # a narrow 0.35–0.62 range
    ax = sc_crd.pl.score_map(mapped, show=False)
    cbar = ax.figure.axes[-1]
    assert cbar.get_label() == "<colorbar>" and cbar.get_ylim() == (0.0, 1.0)  # fixed scale, not 0.35–0.62
    spots, outline = ax.collections[0], ax.collections[-1]
    assert spots.norm.vmin == 0.0 and spots.norm.vmax == 1.0
    called = mapped.obs["spacrd_cancer"].to_numpy()
    assert len(outline.get_offsets()) == called.sum()
    np.testing.assert_allclose(outline.get_offsets(), mapped.obsm["spatial"][called])  # on top of the called spots
    assert len(outline.get_facecolors()) == 0 and to_hex(outline.get_edgecolors()[0]) == to_hex("crimson")
    title = ax.get_title()
    assert "scale 0–1" in title and "rule gmm" in title and "threshold 0.50" in title and "55% of spots" in title
    # other calls: the share is counted from the column; no outline without calls
    mapped.obs["mine"] = np.arange(mapped.n_obs) < 6
    assert "mine" in (t := sc_crd.pl.score_map(mapped, call_key="mine", show=False).get_title()) and "10%" in t
    ax = sc_crd.pl.score_map(mapped, call_key=None, show=False)
    assert all(len(c.get_facecolors()) for c in ax.collections)  # no edge-only outline drawn
    assert ax.get_title() == "spacrd_score (scale 0–1)"


@pytest.mark.realdata
def test_score_map_on_her2st_over_the_he(data_dir) -> None:
    """A1 with its H&E: circles over the image, the outline on the called spots, the y axis as squidpy sets it."""
    sd = sc_crd.datasets.her2st("A1", path=data_dir)
    t = sd.tables["table"]
    t.obs["spacrd_score"] = np.where(t.obs["cancer"], 0.7, 0.3) + np.linspace(-0.05, 0.05, t.n_obs)
    t.obs["spacrd_cancer"] = t.obs["cancer"].to_numpy(dtype=bool)
    ax = sc_crd.pl.score_map(sd, show=False)
    assert ax.images, "the H&E is drawn"
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # image frame: y grows downwards, not flipped by the outline call
    assert len(ax.collections[-1].get_paths()) == int(t.obs["cancer"].sum())
    assert f"{t.obs['cancer'].mean():.0%} of spots" in ax.get_title()
    assert len(sc_crd.pl.score_map(sd, img=False, show=False).images) == 0


# ------------------------------------------------------------------------------------------ bad inputs
def test_score_map_bad_input(mapped: AnnData) -> None:
    mapped.obs["raw"] = mapped.obs["spacrd_score"] * 2
    with pytest.raises(ValueError, match=r"score_map draws scores in \[0, 1\] on a fixed 0–1 scale"):
        sc_crd.pl.score_map(mapped, score_key="raw", call_key=None, show=False)
    with pytest.raises(KeyError, match="score_key 'nope_score'"):
        sc_crd.pl.score_map(mapped, score_key="nope_score", show=False)
    with pytest.raises(KeyError, match="nope"):
        sc_crd.pl.score_map(mapped, call_key="nope", show=False)
    with pytest.raises(ValueError, match="img=True but the table has no image"):
        sc_crd.pl.score_map(mapped, img=True, show=False)
    with pytest.raises(KeyError, match=r"library_id 'B1' is not in adata.uns\['spatial'\]"):
        sc_crd.pl.score_map(mapped, library_id="B1", show=False)
    mapped.uns["spatial"] = {"A": {}, "B": {}}
    with pytest.raises(ValueError, match="several libraries"):
        sc_crd.pl.score_map(mapped, show=False)


def test_score_distribution_missing_score_key(scored: AnnData) -> None:
    with pytest.raises(KeyError, match="score_key 'nope_score' is not in adata.obs"):
        sc_crd.pl.score_distribution(scored, score_key="nope_score", show=False)


def test_score_distribution_unknown_groupby(scored: AnnData) -> None:
    with pytest.raises(KeyError, match="groupby 'tissue' is not a column of adata.obs"):
        sc_crd.pl.score_distribution(scored, groupby="tissue", show=False)


def test_score_distribution_unknown_order(scored: AnnData) -> None:
    msg = r"order names categories not in adata.obs\['pathology'\]: \['tumour'\]"
    with pytest.raises(ValueError, match=msg):
        sc_crd.pl.score_distribution(scored, order=["tumour"], show=False)


def test_score_distribution_bad_kind(scored: AnnData) -> None:
    with pytest.raises(ValueError, match="kind must be 'violin' or 'hist'"):
        sc_crd.pl.score_distribution(scored, kind="box", show=False)  # type: ignore[arg-type]


def test_training_history_empty() -> None:
    model = sc_crd.SpaCRD(["a", "b"], None, hidden_dims=(8, 8, 8), n_heads=2, latent_dim=2)
    with pytest.raises(ValueError, match="no training history yet"):
        sc_crd.pl.training_history(model, show=False)


def test_training_history_unknown_key(trained_like: sc_crd.SpaCRD) -> None:
    with pytest.raises(KeyError, match=r"No history for \['bce'\]"):
        sc_crd.pl.training_history(trained_like, keys=["bce"], show=False)
