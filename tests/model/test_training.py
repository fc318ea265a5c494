"""Training behaviour of SpaCRD on synthetic sections: losses fall, classes separate, seeds repeat."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers.sections import FAST, SMALL, make_section, section_arrays
from sklearn.metrics import roc_auc_score

from spacrd_sc.model import SpaCRD


def test_outputs_shapes_and_dtypes(fitted_image, target):
    p = fitted_image.predict_proba(target["x_gene"], target["x_image"], target["neighbors"])
    assert p.shape == (len(target["y"]),) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    h = fitted_image.embed(target["x_gene"], target["x_image"], target["neighbors"], batch_size=50)
    assert h.shape == (len(target["y"]), SMALL["hidden_dims"][-1]) and h.dtype == np.float32
    assert fitted_image.is_aligned and fitted_image.is_fitted and not fitted_image.image_less
    assert set(fitted_image.history) >= {"align", "fused", "recon", "kl", "bce", "cls"}
    assert len(fitted_image.history["fused"]) == 12 and len(fitted_image.history["cls"]) == 6


def test_default_architecture_embeds_512():
    sec = section_arrays(make_section(nx=6, ny=6, n_genes=12, n_markers=3, image_dim=8, seed=3))
    model = SpaCRD(sec["genes"], 8)
    model.fit_alignment(sec["x_gene"], sec["x_image"], sec["neighbors"], epochs=1, **FAST)
    model.fit_fusion(sec["x_gene"], sec["x_image"], sec["neighbors"], sec["y"], epochs=2, **FAST)
    assert model.embed(sec["x_gene"], sec["x_image"], sec["neighbors"]).shape == (36, 512)


def test_contrastive_loss_falls():
    rng = np.random.default_rng(0)
    gene = rng.normal(size=(256, 40)).astype(np.float32)
    image = (gene @ rng.normal(size=(40, 16)) + 0.1 * rng.normal(size=(256, 16))).astype(np.float32)
    neighbors = np.full((256, 6), -1, dtype=np.int64)
    model = SpaCRD([f"g{i}" for i in range(40)], 16, **SMALL)
    model.fit_alignment(gene, image, neighbors, epochs=15, batch_size=64, **FAST)
    loss = model.history["align"]
    assert loss[-1] < 0.6 * loss[0]
    assert model.alignment == "image-gene InfoNCE"


@pytest.mark.parametrize("image", [True, False], ids=["with_image", "image_less"])
def test_classifier_separates_two_classes(request, image, target):
    model = request.getfixturevalue("fitted_image" if image else "fitted_expression")
    x_img = target["x_image"] if image else None
    p = model.predict_proba(target["x_gene"], x_img, target["neighbors"])
    assert roc_auc_score(target["y"], p) > 0.9


def test_image_less_mode_is_described(fitted_expression, section):
    m = fitted_expression
    assert m.image_less and m.mode == "expression" and m.n_image_features is None
    assert m.alignment == "neighbourhood InfoNCE"
    assert "expression only" in m.mode_description and "neighbourhood contrast" in m.mode_description
    # image features are ignored by an image-less model
    p1 = m.predict_proba(section["x_gene"], None, section["neighbors"])
    p2 = m.predict_proba(section["x_gene"], section["x_image"], section["neighbors"])
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize(
    ("kwargs", "image"),
    [
        ({"use_contrastive": False}, True),
        ({"use_cross_attention": False}, True),
        ({"use_vae": False}, True),
        ({"use_cross_attention": False, "use_vae": False}, False),
        ({"modality": "expression"}, True),
        ({"modality": "image"}, True),
    ],
    ids=["no_contrastive", "no_cross_attention", "no_vae", "imageless_minimal", "expression", "image"],
)
def test_ablations_train_and_predict(kwargs, image, section, train):
    model = train(section, image=image, **kwargs)
    x_img = section["x_image"] if image else None
    p = model.predict_proba(section["x_gene"], x_img, section["neighbors"])
    assert p.shape == (len(section["y"]),) and np.isfinite(p).all()
    if kwargs.get("use_contrastive") is False:
        assert not model.is_aligned and model.alignment.startswith("skipped") and "align" not in model.history
    if kwargs.get("use_vae") is False:
        assert "fused" not in model.history and len(model.history["cls"]) == 12
    if kwargs.get("modality") == "image":
        assert model.mode == "image" and model.net.gene_encoder is None
        p2 = model.predict_proba(None, x_img, section["neighbors"])
        np.testing.assert_array_equal(p, p2)
    if kwargs.get("modality") == "expression":
        assert model.image_less and model.net.image_encoder is None


def test_same_seed_same_scores_other_seed_differs(section, target, train, fitted_image):
    again = train(section, image=True, seed=0)
    other = train(section, image=True, seed=1)
    args = (target["x_gene"], target["x_image"], target["neighbors"])
    p0 = fitted_image.predict_proba(*args)
    np.testing.assert_array_equal(p0, again.predict_proba(*args))
    assert not np.allclose(p0, other.predict_proba(*args))


def test_fit_fusion_before_alignment_warns(section):
    model = SpaCRD(section["genes"], **SMALL)
    with pytest.warns(UserWarning, match="before fit_alignment"):
        model.fit_fusion(section["x_gene"], None, section["neighbors"], section["y"], epochs=2, **FAST)
    assert model.is_fitted and not model.is_aligned


def test_random_batching_and_continued_training(section):
    model = SpaCRD(section["genes"], use_contrastive=False, **SMALL)
    model.fit_fusion(section["x_gene"], None, section["neighbors"], section["y"], epochs=2, batching="random", **FAST)
    model.fit_fusion(section["x_gene"], None, section["neighbors"], section["y"], epochs=2, **FAST)
    assert len(model.history["fused"]) == 4
    assert model.training_params["fusion"]["batching"] == "local"


def test_default_alignment_epochs_by_mode():
    """5 epochs of neighbourhood contrast for the image-less model (chosen by nested CV on her2st), 20 of
    image-gene alignment (not re-measured); an explicit ``epochs`` wins."""
    sec = section_arrays(make_section(nx=6, ny=6, n_genes=12, n_markers=3, image_dim=8, seed=3))
    for n_image, expected in ((None, 5), (8, 20)):
        model = SpaCRD(sec["genes"], n_image, **SMALL)
        x_img = sec["x_image"] if n_image else None
        model.fit_alignment(sec["x_gene"], x_img, sec["neighbors"], **FAST)
        assert len(model.history["align"]) == expected
        assert model.training_params["alignment"]["epochs"] == expected
    model.fit_alignment(sec["x_gene"], sec["x_image"], sec["neighbors"], epochs=2, **FAST)
    assert model.training_params["alignment"]["epochs"] == 2
