"""pp.annotate_spots keeps QuPath's class colours and maps classes to the boolean training label (synthetic)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from anndata import AnnData
from matplotlib.colors import to_hex

import spacrd_sc as sc_crd


def square(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def feature(geometry: dict, name: str, color=None) -> dict:
    cls = {"name": name} if color is None else {"name": name, "color": color}
    return {"type": "Feature", "geometry": geometry, "properties": {"objectType": "annotation", "classification": cls}}


def grid() -> AnnData:
    """100 spots on a 10 × 10 grid, centres at 5, 15, …, 95."""
    xy = np.array([[x, y] for x in range(10) for y in range(10)], dtype=float) * 10 + 5
    a = AnnData(np.ones((100, 3), dtype=np.float32))
    a.obs_names = [f"s{i}" for i in range(100)]
    a.obsm["spatial"] = xy
    return a


# Tumor: x < 40 (40 spots), blue as an [r, g, b] list; Stroma: 40 ≤ x < 70 (30 spots), QuPath's packed signed int
# for opaque orange (0xFFFF8000 as int32); Fat: 70 ≤ x < 90 (20 spots), no colour; the last column outside.
PACKED_ORANGE = 0xFFFF8000 - (1 << 32)
DOC = {
    "type": "FeatureCollection",
    "features": [
        feature(square(0, 0, 40, 100), "Tumor", [0, 0, 255]),
        feature(square(40, 0, 70, 100), "Stroma", PACKED_ORANGE),
        feature(square(70, 0, 90, 100), "Fat"),
    ],
}


def test_colours_kept_in_category_order() -> None:
    a = grid()
    sc_crd.pp.annotate_spots(a, DOC)
    assert list(a.obs["annotation"].cat.categories) == ["Tumor", "Stroma", "Fat", "unannotated"]
    tab20_first = to_hex(matplotlib.colormaps["tab20"](0))
    assert a.uns["annotation_colors"] == ["#0000ff", "#ff8000", tab20_first, "#bfbfbf"]
    assert a.obs["annotation"].value_counts().to_dict() == {"Tumor": 40, "Stroma": 30, "Fat": 20, "unannotated": 10}
    assert "cancer" not in a.obs  # no cancer_classes: no label column


def test_io_reads_the_colour_column() -> None:
    gdf = sc_crd.io.annotations(DOC)
    assert gdf["class_color"].tolist() == ["#0000ff", "#ff8000", None]
    # a GeoDataFrame read by io.annotations keeps its colours through annotate_spots too
    a = grid()
    sc_crd.pp.annotate_spots(a, gdf, key_added="drawn", outside=None)
    assert a.uns["drawn_colors"][:2] == ["#0000ff", "#ff8000"] and len(a.uns["drawn_colors"]) == 3


def test_palette_skips_drawn_colours() -> None:
    first = matplotlib.colormaps["tab20"](0)
    doc = {
        "type": "FeatureCollection",
        "features": [
            feature(square(0, 0, 50, 100), "A", [round(255 * c) for c in first[:3]]),  # A drawn in tab20's first
            feature(square(50, 0, 100, 100), "B"),
        ],
    }
    a = grid()
    sc_crd.pp.annotate_spots(a, doc)
    assert a.uns["annotation_colors"][:2] == [to_hex(first), to_hex(matplotlib.colormaps["tab20"](1))]


def test_cancer_classes_write_the_training_label() -> None:
    a = grid()
    sc_crd.pp.annotate_spots(a, DOC, cancer_classes=["Tumor", "Stroma"])
    lab = a.obs["cancer"]
    assert lab.dtype == bool
    np.testing.assert_array_equal(lab.to_numpy(), a.obsm["spatial"][:, 0] < 70)
    assert a.uns["annotation"]["params"]["cancer_classes"] == ["Tumor", "Stroma"]
    sc_crd.pp.annotate_spots(a, DOC, cancer_classes=["Tumor"], label_key="tumour", outside=None, key_added="t")
    np.testing.assert_array_equal(a.obs["tumour"].to_numpy(), a.obsm["spatial"][:, 0] < 40)
    # the label reads as the package's binary label (the same check tl.fit_vrbca makes): a perfect score
    a.obs["x_score"] = 1 - a.obsm["spatial"][:, 0] / 100
    metrics = sc_crd.tl.evaluate(a, score_key="x_score", label_key="tumour", threshold=0.6)
    assert metrics["auc"] == 1.0 and metrics["f1"] == 1.0 and metrics["n_cancer"] == 40


def test_colours_reach_squidpy() -> None:
    """squidpy's spatial_scatter paints each spot in its category's colour from uns[f"{key}_colors"]."""
    sq = pytest.importorskip("squidpy")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    a = grid()
    sc_crd.pp.annotate_spots(a, DOC)
    sq.pl.spatial_scatter(a, color="annotation", img=False, shape=None, size=20, return_ax=False)
    ax = plt.gcf().axes[0]
    coll = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets()) == a.n_obs]
    assert coll, "no spot scatter found"
    faces = {to_hex(f) for f in coll[0].get_facecolors()}
    assert faces == {"#0000ff", "#ff8000", to_hex(matplotlib.colormaps["tab20"](0)), "#bfbfbf"}
    # each spot's face colour is its class's colour
    offsets = coll[0].get_offsets()
    tumour = {to_hex(f) for f, (x, _) in zip(coll[0].get_facecolors(), offsets, strict=True) if x < 40}
    assert tumour == {"#0000ff"}
    plt.close("all")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"cancer_classes": ["Tumour", "Tumor", "DCIS"]},
            ValueError,
            r"cancer_classes \['Tumour', 'DCIS'\] are not classes of the annotations; classes found: "
            r"\['Tumor', 'Stroma', 'Fat'\]",
        ),
        ({"cancer_classes": "Tumor"}, TypeError, "cancer_classes must be a list of class names"),
        ({"cancer_classes": ["Tumor"], "label_key": "annotation"}, ValueError, "label_key and key_added must differ"),
    ],
)
def test_cancer_classes_bad_input(kwargs, error, match) -> None:
    a = grid()
    with pytest.raises(error, match=match):
        sc_crd.pp.annotate_spots(a, DOC, **kwargs)
    assert "annotation" not in a.obs  # refused before writing


def test_label_column_of_the_user_is_refused() -> None:
    a = grid()
    a.obs["cancer"] = np.zeros(a.n_obs, dtype=bool)  # e.g. the dataset's own label
    with pytest.raises(ValueError, match=r"adata.obs\['cancer'\]"):
        sc_crd.pp.annotate_spots(a, DOC, cancer_classes=["Tumor"])
    assert not a.obs["cancer"].any()
    sc_crd.pp.annotate_spots(a, DOC, cancer_classes=["Tumor"], overwrite=True)
    assert a.obs["cancer"].sum() == 40
