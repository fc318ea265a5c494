"""``datasets.her2st_model``: trained on the 8 labelled her2st sections for a target's genes, cached on disk."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
import squidpy as sq

import spacrd_sc as sc_crd


@pytest.fixture(scope="module")
def panel_target(her2st_loader) -> ad.AnnData:
    """A her2st section with a few hundred genes (a stand-in for a Xenium panel) plus 5 genes her2st lacks."""
    t = her2st_loader("H1").tables["table"]
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(t.n_vars, 300, replace=False))
    target = ad.AnnData(t.X[:, keep], obs=t.obs[["cancer"]].copy(), obsm={"spatial": t.obsm["spatial"]})
    target.var_names = list(t.var_names[keep])
    extra = ad.AnnData(np.zeros((t.n_obs, 5), np.float32), obs=target.obs[[]])
    extra.var_names = [f"NOT_IN_HER2ST_{i}" for i in range(5)]
    target = ad.concat([target, extra], axis=1, merge="first")
    sq.gr.spatial_neighbors_knn(target, n_neighs=6)
    return target


def test_her2st_model_restricted_and_cached(data_dir, panel_target, tmp_path, caplog):
    genes = list(panel_target.var_names)
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        model = sc_crd.datasets.her2st_model(
            genes, cache_dir=tmp_path, path=data_dir, epochs=2, device="cpu", progress_bar=False
        )
    assert model.is_fitted and model.image_less
    assert set(model.genes) <= set(genes[:300]) and len(model.genes) > 200  # shared genes only, none invented
    assert "Training the her2st model" in caplog.text
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert model.training_params["her2st_model"]["cache_dir"] == str(folder)
    mtime = (folder / "model.safetensors").stat().st_mtime_ns

    first = panel_target.copy()
    sc_crd.tl.cancer_score(first, model, device="cpu")

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        again = sc_crd.datasets.her2st_model(
            list(reversed(genes)) + genes[:3],  # same gene set: order and duplicates do not matter
            cache_dir=tmp_path,
            path=data_dir,
            epochs=2,
            device="cpu",
            progress_bar=False,
        )
    assert "loaded from the cache" in caplog.text and "Training" not in caplog.text
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # not retrained
    assert again.training_params["her2st_model"]["from_cache"] is True
    second = panel_target.copy()
    sc_crd.tl.cancer_score(second, again, device="cpu")
    np.testing.assert_array_equal(first.obs["spacrd_score"].to_numpy(), second.obs["spacrd_score"].to_numpy())
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # one cache entry, no temporary left


def test_her2st_model_bad_genes(tmp_path):
    with pytest.raises(TypeError, match="single string"):
        sc_crd.datasets.her2st_model("ERBB2", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="genes is empty"):
        sc_crd.datasets.her2st_model([], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs must be an integer"):
        sc_crd.datasets.her2st_model(["ERBB2"], cache_dir=tmp_path, epochs=0)
