"""End to end per platform: each reader's output through pp, tl and squidpy, as a user chains them.

Every 10x chain runs on a realistic 10x-format folder written by ``_helpers.tenx`` (real her2st gene symbols,
a stained tissue on white glass); the legacy ST chain runs on the real her2st section B4 and its H&E. All are
scored with a small model trained on labelled her2st sections restricted to the genes the folders carry. No
step may emit a user-visible warning.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest
import squidpy as sq
import tifffile
from _helpers import tenx
from _helpers.images import BACKGROUND, write_pyramid
from _helpers.user_warnings import no_user_warnings

import spacrd_sc as sc_crd
from spacrd_sc._images import _image_levels

#: Genes every test folder carries (the writers' default feature tables share their first 25 symbols).
N_SHARED = 25
#: Labelled her2st sections the reference model is trained on (never the scored sections).
TRAIN_SECTIONS = ("B1", "C1", "D1")
FAST = {"device": "cpu", "progress_bar": False}
SMALL_MODEL = {"hidden_dims": (64, 32, 32), "n_heads": 4, "latent_dim": 8}
#: A tiny CNN with random weights stands in for UNI (no download); the chain is the same.
BACKBONE = {"backbone": "resnet18", "pretrained": False, "size": 32, "batch_size": 32}


@pytest.fixture(scope="module", autouse=True)
def _toy_panel():
    """The folders carry a toy panel (24 distinct genes), below ``MIN_GENES``: lowered knowingly for this module."""
    before = sc_crd.settings.min_genes
    sc_crd.settings.min_genes = 20
    yield
    sc_crd.settings.min_genes = before


@pytest.fixture(scope="module")
def her2st_model(her2st_loader, _toy_panel):
    """A small expression-only SpaCRD trained on labelled her2st sections, on the genes of the test folders."""
    genes = sorted(set(tenx.gene_table(N_SHARED)["name"]))
    tables = {}
    for name in TRAIN_SECTIONS:
        t = her2st_loader(name).tables["table"]
        tables[name] = ad.AnnData(t.X.copy(), obs=t.obs[["cancer"]].copy(), var=t.var[[]].copy())
        tables[name].obsm["spatial"] = np.asarray(t.obsm["spatial"], float)
    src = ad.concat(tables, label="section", index_unique="-")
    sq.gr.spatial_neighbors_knn(src, n_neighs=6, library_key="section")
    model = sc_crd.tl.align(
        src, image_key=None, genes=genes, library_key="section", epochs=3, model_kwargs=SMALL_MODEL, **FAST
    )
    model = sc_crd.tl.fit_vrbca(src, model, library_key="section", epochs=3, **FAST)
    assert sorted(model.genes) == genes
    return model


def _points(ax) -> int:
    """Spots drawn on ``ax``: circles of a PatchCollection, or points of a scatter."""
    return sum(max(len(c.get_paths()), len(c.get_offsets())) for c in ax.collections)


def _check_patches(patches: np.ndarray, n: int, image_glass: float) -> None:
    """Patches land on the stained tissue, not on the glass around it.

    Spots at the tissue edge are partly glass (a pseudo-spot with a few bins in a corner), so the check is on
    the distribution: most patches are mostly tissue, and far less glass is cut than the image holds.
    """
    assert patches.shape == (n, 32, 32, 3) and patches.dtype == np.uint8
    glass = (patches == BACKGROUND).all(-1).mean(axis=(1, 2))
    assert np.median(glass) < 0.1 and (glass < 0.5).mean() > 0.8, np.round(np.quantile(glass, [0.5, 0.8, 1]), 2)
    assert glass.mean() < image_glass / 2
    tissue = patches[(patches != BACKGROUND).any(-1)]
    assert tissue.mean(0)[1] < 170  # the stain's green is 120 ± 40 (glass is 255)


def _chain(sdata, model) -> np.ndarray:
    """reader output → patches → extract_uni → graph → cancer_score → squidpy plot over the image; checks what
    every platform shares and returns the patches for the platform's own checks."""
    target = sdata.tables["table"]
    with no_user_warnings():
        patches = sc_crd.pp.spot_patches(sdata, size=32)
        sc_crd.tl.extract_uni(sdata, **BACKBONE, **FAST)
        sq.gr.spatial_neighbors_knn(target, n_neighs=6)
        sc_crd.tl.cancer_score(target, model)
        sq.pl.spatial_scatter(target, color="spacrd_score")
    assert target.obsm["X_uni"].shape == (target.n_obs, 512) and np.isfinite(target.obsm["X_uni"]).all()
    score = target.obs["spacrd_score"].to_numpy()
    assert np.isfinite(score).all() and ((score >= 0) & (score <= 1)).all()
    assert target.uns["spacrd"]["params"]["n_genes_absent"] == 0
    fig = plt.gcf()
    ax = next(a for a in fig.axes if a.collections)
    assert ax.images, "the H&E is not drawn under the spots"
    assert _points(ax) == target.n_obs
    plt.close(fig)
    return patches


def _chain_10x(sdata, model, image_prefix: str) -> None:
    """:func:`_chain` on a test folder: the recorded image is used and the patches land on the painted tissue."""
    patches = _chain(sdata, model)
    target = sdata.tables["table"]
    key = target.uns["X_uni"]["params"]["image_key"]
    assert key.startswith(image_prefix)
    # the image read has glass around the tissue (so landing on tissue means something)
    image_glass = float((np.asarray(_image_levels(sdata.images[key])[0].data) == BACKGROUND).all(0).mean())
    assert image_glass > 0.1
    _check_patches(patches, target.n_obs, image_glass)


def _chain_imageless(sdata, model) -> None:
    target = sdata.tables["table"]
    with pytest.raises(ValueError, match="image-less"):
        sc_crd.pp.spot_patches(sdata)
    with no_user_warnings():
        sq.gr.spatial_neighbors_knn(target, n_neighs=6)
        sc_crd.tl.cancer_score(target, model)
        sq.pl.spatial_scatter(target, color="spacrd_score", img=False)
    assert np.isfinite(target.obs["spacrd_score"].to_numpy()).all()
    fig = plt.gcf()
    ax = next(a for a in fig.axes if a.collections)
    assert not ax.images and _points(ax) == target.n_obs
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ Visium
def test_visium_chain(tmp_path: Path, her2st_model) -> None:
    fx = tenx.write_visium(tmp_path / "outs", source="synthetic", fullres=True, n_genes=40)
    with no_user_warnings():
        sdata = sc_crd.io.visium(fx.path, fullres_image_file=fx.fullres_file)
    _chain_10x(sdata, her2st_model, f"{fx.library_id}_full_image")


def test_visium_pyramid_chain(tmp_path: Path, her2st_model) -> None:
    """The microscope image as a JPEG-tiled pyramidal OME-TIFF: its stored levels are read tile by tile."""
    fx = tenx.write_visium(tmp_path / "outs", source="synthetic", fullres=True, n_genes=40)
    file = fx.path / fx.fullres_file
    write_pyramid(file, tifffile.imread(file), n_levels=3)
    with no_user_warnings():
        sdata = sc_crd.io.visium(fx.path, fullres_image_file=fx.fullres_file)
    key = f"{fx.library_id}_full_image"
    assert len(_image_levels(sdata.images[key])) == 3
    _chain_10x(sdata, her2st_model, key)


def test_visium_imageless(tmp_path: Path, her2st_model) -> None:
    fx = tenx.write_visium(tmp_path / "outs", source="synthetic", n_genes=40)
    for png in (fx.path / "spatial").glob("*.png"):
        png.unlink()
    with no_user_warnings():
        sdata = sc_crd.io.visium(fx.path)
    assert not sdata.images
    _chain_imageless(sdata, her2st_model)


# ------------------------------------------------------------------------------------------------ Visium HD
def test_visium_hd_chain(tmp_path: Path, her2st_model) -> None:
    fx = tenx.write_visium_hd(tmp_path / "outs", fullres=True, n_genes=30)
    with no_user_warnings():
        sdata = sc_crd.io.visium_hd(fx.path, bin_size_um=16)
    _chain_10x(sdata, her2st_model, f"{fx.dataset_id}_full_image")


def test_visium_hd_imageless(tmp_path: Path, her2st_model) -> None:
    fx = tenx.write_visium_hd(tmp_path / "outs", n_genes=30)
    for png in (fx.path / "spatial").glob("*.png"):
        png.unlink()
    with no_user_warnings():
        sdata = sc_crd.io.visium_hd(fx.path, bin_size_um=16)
    assert not sdata.images
    _chain_imageless(sdata, her2st_model)


# ------------------------------------------------------------------------------------------------ Xenium
def test_xenium_chain(tmp_path: Path, her2st_model) -> None:
    fx = tenx.write_xenium(tmp_path / "xe", n_genes=N_SHARED, extent_um=(600.0, 450.0), n_cells=900)
    with no_user_warnings():
        sdata = sc_crd.io.xenium(fx.path, he_image=fx.he_file, he_alignment=fx.alignment_file, bin_size_um=40)
    _chain_10x(sdata, her2st_model, "he_image")


def test_xenium_transcripts_chain(tmp_path: Path, her2st_model) -> None:
    """Pseudo-spots from the streamed transcripts.parquet, through the same chain."""
    fx = tenx.write_xenium(
        tmp_path / "xe", n_genes=N_SHARED, extent_um=(600.0, 450.0), n_cells=900, with_transcripts=True
    )
    with no_user_warnings():
        sdata = sc_crd.io.xenium(
            fx.path, he_image=fx.he_file, he_alignment=fx.alignment_file, bin_size_um=40, source="transcripts"
        )
    meta = next(iter(sdata.tables["table"].uns["spatial"].values()))["metadata"]
    assert meta["source"] == "transcripts" and meta["n_transcripts"] > 0
    _chain_10x(sdata, her2st_model, "he_image")


def test_xenium_imageless(tmp_path: Path, her2st_model) -> None:
    fx = tenx.write_xenium(tmp_path / "xe", n_genes=N_SHARED, with_he=False, n_cells=900)
    with no_user_warnings():
        sdata = sc_crd.io.xenium(fx.path, bin_size_um=40)
    _chain_imageless(sdata, her2st_model)


# ------------------------------------------------------------------------------------------------ legacy ST
def test_legacy_st_chain(her2st_dir: Path, her2st_model) -> None:
    """The real her2st section B4 (unlabelled, never trained on) read from its files with its H&E photograph."""
    root = her2st_dir / "data"
    image = next((root / "ST-imgs" / "B" / "B4").glob("*.jpg"))
    with no_user_warnings():
        sdata = sc_crd.io.legacy_st(root / "ST-cnts" / "B4.tsv.gz", root / "ST-spotfiles" / "B4_selection.tsv", image)
    table = sdata.tables["table"]
    sdata.tables["table"] = target = table[:: max(1, table.n_obs // 120)].copy()  # ~120 spots keep it quick
    patches = _chain(sdata, her2st_model)
    assert patches.shape == (target.n_obs, 32, 32, 3) and patches.dtype == np.uint8
    # spots sit on eosin-stained tissue: pink (red above green), darker than the photograph's bright glass
    assert patches[..., 0].mean() > patches[..., 1].mean() + 10
    assert target.uns["X_uni"]["params"]["image_key"] == target.uns["spatial"]["B4"]["metadata"]["image_key"]
    assert 100 < target.uns["X_uni"]["params"]["diameter_px"] < 200  # a 100 µm spot in the full-resolution photo
