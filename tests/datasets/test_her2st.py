"""Tests of ``datasets.her2st`` against the counts in ``her2st/README.md``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from spacrd_sc.datasets import _her2st, her2st

# section: (spots, invasive cancer, cancer in situ, cancer) — her2st/README.md
LABELLED_COUNTS = {
    "A1": (346, 282, 21, 303),
    "B1": (295, 63, 0, 63),
    "C1": (176, 127, 0, 127),
    "D1": (306, 139, 0, 139),
    "E1": (587, 340, 0, 340),
    "F1": (691, 577, 0, 577),
    "G2": (467, 140, 20, 160),
    "H1": (613, 90, 97, 187),
}


@pytest.mark.parametrize("section", list(LABELLED_COUNTS))
def test_labelled_sections(her2st_loader, section):
    n, ic, cis, cancer = LABELLED_COUNTS[section]
    sdata = her2st_loader(section)
    adata = sdata.tables["table"]
    assert adata.n_obs == n
    pathology = adata.obs["pathology"]
    assert list(pathology.cat.categories) == list(_her2st.PATHOLOGY_CATEGORIES)
    assert pathology.notna().all()  # every count-matrix spot has a label
    counts = pathology.value_counts()
    assert counts["invasive cancer"] == ic and counts["cancer in situ"] == cis
    assert adata.obs["cancer"].dtype == bool and int(adata.obs["cancer"].sum()) == cancer
    entry = adata.uns["spatial"][section]
    assert entry["metadata"]["dataset"] == "her2st" and entry["metadata"]["labelled"] is True
    if section == "A1":
        assert set(sdata.images) == {"he"} and "hires" in entry["images"]
        assert entry["metadata"]["image_scale"] == pytest.approx(2000 / 6954)
        assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(31.25, rel=1e-3)
    else:
        assert len(sdata.images) == 0 and "images" not in entry
        assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(145, rel=0.01)


def test_unlabelled_section_has_full_resolution_image(her2st_loader):
    sdata = her2st_loader("B4")
    adata = sdata.tables["table"]
    assert "pathology" not in adata.obs and "cancer" not in adata.obs
    assert sdata.images["he"]["scale0"]["image"].shape == (3, 9923, 9272)
    assert adata.uns["spatial"]["B4"]["metadata"]["labelled"] is False


def test_unknown_section():
    with pytest.raises(ValueError, match=r"Unknown her2st section 'Z9'; valid: labelled A1, B1.*C6"):
        her2st("Z9")


def test_local_folder_resolution(her2st_dir: Path, monkeypatch):
    a = her2st("c1", path=her2st_dir)  # the her2st folder itself; section names are case-insensitive
    monkeypatch.setenv("SPACRD_DATA_DIR", str(her2st_dir.parent))  # the folder holding her2st/
    b = her2st("C1")
    assert (a.tables["table"].X != b.tables["table"].X).nnz == 0


def test_missing_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No her2st data under"):
        her2st("A1", path=tmp_path)


def test_download_uses_pinned_registry(her2st_dir: Path, monkeypatch, tmp_path):
    """Without a local copy the files come from pooch at the pinned commit, with sha256 hashes."""
    import pooch

    calls = {}

    class FakePooch:
        def __init__(self, path, base_url, registry):
            calls.update(path=path, base_url=base_url, registry=registry)

        def fetch(self, rel):
            calls.setdefault("fetched", []).append(rel)
            return str(her2st_dir / rel)

    monkeypatch.setenv("SPACRD_DATA_DIR", str(tmp_path))  # no her2st/ there → download
    monkeypatch.setattr(pooch, "create", lambda **kw: FakePooch(**kw))
    sdata = her2st("C1")
    assert sdata.tables["table"].n_obs == 176
    assert calls["base_url"] == f"https://raw.githubusercontent.com/almaan/her2st/{_her2st.COMMIT}/"
    assert sorted(calls["fetched"]) == sorted(
        [
            "data/ST-cnts/C1.tsv.gz",
            "data/ST-spotfiles/C1_selection.tsv",
            "data/ST-pat/lbl/C1_labeled_coordinates.tsv",
        ]
    )
    assert all(v.startswith("sha256:") for v in calls["registry"].values())


def test_registry_hashes_match_files(her2st_dir: Path):
    for rel, sha in _her2st.REGISTRY.items():
        assert hashlib.sha256((her2st_dir / rel).read_bytes()).hexdigest() == sha, rel
    for section in _her2st.SECTIONS:
        assert set(_her2st._section_files(section).values()) <= set(_her2st.REGISTRY)


def test_labels_join_on_rounded_coordinates(her2st_loader, her2st_dir: Path):
    """The label of a spot comes from the label row whose rounded (x, y) is the spot id."""
    import pandas as pd

    adata = her2st_loader("G2").tables["table"]
    lbl = pd.read_csv(her2st_dir / "data/ST-pat/lbl/G2_labeled_coordinates.tsv", sep="\t").dropna(subset=["x", "y"])
    lbl.index = [f"{round(x)}x{round(y)}" for x, y in zip(lbl.x, lbl.y, strict=True)]
    np.testing.assert_array_equal(adata.obs["pathology"].astype(str), lbl.loc[adata.obs_names, "label"])
