"""The fixed PCA projection in front of the gene encoder (``n_pcs``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _helpers.sections import SMALL
from sklearn.metrics import roc_auc_score

from spacrd_sc.model import SpaCRD
from spacrd_sc.model._modules import MLPEncoder, principal_axes


def test_principal_axes_match_exact_svd():
    rng = np.random.default_rng(0)
    # strong low-rank structure + noise, so the top axes are well separated
    x = rng.normal(size=(300, 5)) @ (rng.normal(size=(5, 40)) * np.array([[8], [6], [4], [3], [2]]))
    x = x + rng.normal(size=(300, 40)) + 5.0
    mean, basis, explained = principal_axes(x, 4, seed=0)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    # same axes up to sign
    np.testing.assert_allclose(np.abs(basis.T @ vt[:4].T), np.eye(4), atol=1e-4)
    assert explained == pytest.approx((s[:4] ** 2).sum() / (s**2).sum(), rel=1e-6)
    # sign convention: the largest-magnitude loading of every axis is positive
    assert (basis[np.abs(basis).argmax(axis=0), np.arange(4)] > 0).all()
    # seeded: same result twice
    np.testing.assert_array_equal(basis, principal_axes(x, 4, seed=0)[1])


def test_principal_axes_more_components_than_spots():
    x = np.random.default_rng(1).normal(size=(5, 30))
    _, basis, explained = principal_axes(x, 8, seed=0)
    assert basis.shape == (30, 8) and explained == pytest.approx(1.0)
    assert np.isfinite(basis).all()


def test_encoder_projects_before_the_mlp():
    enc = MLPEncoder(20, (16, 8), n_pcs=4)
    assert enc.net[0].in_features == 4 and {"pca_mean", "pca_basis"} <= set(dict(enc.named_buffers()))
    x = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
    explained = enc.fit_pca(x, seed=0)
    assert 0 < explained < 1
    enc.eval()
    ref = torch.nn.functional.normalize(enc.net((torch.from_numpy(x) - enc.pca_mean) @ enc.pca_basis), dim=-1)
    torch.testing.assert_close(enc(torch.from_numpy(x)), ref)
    # as many components as inputs (or more): no projection at all
    for enc in (MLPEncoder(20, (16, 8), n_pcs=20), MLPEncoder(20, (16, 8))):
        assert enc.n_pcs is None and "pca_basis" not in dict(enc.named_buffers())


@pytest.fixture(scope="module")
def fitted_pca(section, train):
    return train(section, image=False, n_pcs=8)


def test_pca_model_trains_records_and_scores(fitted_pca, target):
    m = fitted_pca
    assert m.config["n_pcs"] == 8 and m.net.gene_encoder.n_pcs == 8
    pca = m.training_params["pca"]
    assert pca["n_pcs"] == 8 and pca["n_spots"] == 256 and 0 < pca["variance_explained"] < 1
    assert "8 principal components" in m.mode_description
    # the projection was fitted (not left at its zero initialisation)
    assert m.net.gene_encoder.pca_basis.abs().sum() > 0
    p = m.predict_proba(target["x_gene"], None, target["neighbors"])
    assert roc_auc_score(target["y"], p) > 0.9


def test_pca_round_trip_and_models_saved_before_n_pcs(fitted_pca, target, tmp_path):
    args = (target["x_gene"], None, target["neighbors"])
    fitted_pca.save(tmp_path / "m")
    loaded = SpaCRD.load(tmp_path / "m", device="cpu")
    torch.testing.assert_close(loaded.net.gene_encoder.pca_basis, fitted_pca.net.gene_encoder.pca_basis)
    np.testing.assert_array_equal(loaded.predict_proba(*args), fitted_pca.predict_proba(*args))

    # a model written before n_pcs existed has no such config key and was fed genes directly
    old = SpaCRD(fitted_pca.genes, None, n_pcs=None, **SMALL)
    old.save(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    del cfg["config"]["n_pcs"]
    cfg["format_version"] = 1  # written before the manifest too
    (tmp_path / "old" / "manifest.json").unlink()
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert SpaCRD.load(tmp_path / "old", device="cpu").config["n_pcs"] is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_n_pcs(bad):
    with pytest.raises((ValueError, TypeError), match="n_pcs"):
        SpaCRD(["a", "b", "c"], None, n_pcs=bad)


def test_default_uses_256_pcs_only_when_there_are_more_genes():
    assert SpaCRD([f"g{i}" for i in range(300)], None).net.gene_encoder.n_pcs == 256
    assert SpaCRD([f"g{i}" for i in range(100)], None).net.gene_encoder.n_pcs is None
