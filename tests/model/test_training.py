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


def test_label_smoothing_bounds_the_scores(section):
    """Smoothed targets ε/2 and 1 − ε/2: the trained scores stay inside them (BCE's minimum is at the target),
    while hard targets push them further out; recorded in training_params; bad values fail before training."""
    sec = section
    spread = {}
    for eps in (0.0, 0.4):
        model = SpaCRD(sec["genes"], None, **SMALL)
        model.fit_alignment(sec["x_gene"], None, sec["neighbors"], epochs=2, **FAST)
        model.fit_fusion(
            sec["x_gene"],
            None,
            sec["neighbors"],
            sec["y"],
            epochs=20,
            lr=3e-3,
            batch_size=64,
            label_smoothing=eps,
            **FAST,
        )
        p = model.predict_proba(sec["x_gene"], None, sec["neighbors"])
        assert model.training_params["fusion"]["label_smoothing"] == eps
        assert roc_auc_score(sec["y"], p) > 0.9
        spread[eps] = (float(p.min()), float(p.max()))
    assert spread[0.4][0] > 0.1 and spread[0.4][1] < 0.9
    assert spread[0.0][0] < spread[0.4][0] and spread[0.0][1] > spread[0.4][1]
    model = SpaCRD(sec["genes"], None, **SMALL)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing"):
            model.fit_fusion(sec["x_gene"], None, sec["neighbors"], sec["y"], label_smoothing=bad, **FAST)
    assert not model.is_fitted


def _two_batches(sec: dict, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The section twice, as two 'sections' whose second copy carries a batch effect the per-section scaling
    left behind: half of the genes shifted by ``shift`` s.d., plus noise. Returns genes, neighbours, labels, sections.
    """
    n, g = sec["x_gene"].shape
    rng = np.random.default_rng(1)
    second = sec["x_gene"] + rng.normal(0, 0.3, (n, g)).astype(np.float32)
    second[:, g // 2 :] += shift
    x = np.concatenate([sec["x_gene"], second])
    nb = sec["neighbors"]
    neighbors = np.concatenate([nb, np.where(nb >= 0, nb + n, -1)])
    return x, neighbors, np.concatenate([sec["y"], sec["y"]]), np.repeat(["A", "B"], n)


def _section_probe_accuracy(h: np.ndarray, y: np.ndarray, sections: np.ndarray) -> float:
    """Cross-validated accuracy of a linear probe telling the sections apart from ``h``, within each class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    return float(
        np.mean(
            [
                cross_val_score(LogisticRegression(max_iter=2000), h[y == c], sections[y == c], cv=3).mean()
                for c in (0, 1)
            ]
        )
    )


def test_section_alignment_hides_the_section(section):
    """With ``section_alignment`` the fused representation tells the two 'sections' apart much less well (a linear
    probe within each class), while the classes stay separated; without it the batch effect is plain."""
    x, neighbors, y, sections = _two_batches(section)
    probe, auc = {}, {}
    for lam in (0.0, 1.0):
        model = SpaCRD(section["genes"], None, **SMALL)
        model.fit_alignment(x, None, neighbors, epochs=2, **FAST)
        model.fit_fusion(
            x, None, neighbors, y, epochs=20, lr=3e-3, batch_size=64, batching="random",
            sections=sections, section_alignment=lam, **FAST,
        )  # fmt: skip
        pred = model.predict(x, None, neighbors)
        probe[lam] = _section_probe_accuracy(pred.embedding, y, sections)
        auc[lam] = roc_auc_score(y, pred.proba)
        assert model.training_params["fusion"]["section_alignment"] == lam
        assert ("section_shift" in model.history) == (lam > 0)
    assert probe[0.0] > 0.75, probe
    assert probe[1.0] < probe[0.0] - 0.15, probe
    assert min(auc.values()) > 0.9, auc


def test_section_shift_loss():
    """Zero when every section has the same class means; grows with a shift; scale-free; needs two sections."""
    import torch

    from spacrd_sc.model._modules import section_shift

    rng = np.random.default_rng(0)
    h = torch.from_numpy(rng.normal(size=(40, 8)).astype(np.float32))
    y = torch.tensor([0, 1] * 20)
    sections = torch.tensor([0] * 20 + [1] * 20)
    same = torch.cat([h[:20], h[:20]])  # section 1 repeats section 0 spot for spot
    assert float(section_shift(same, y, sections)) < 1e-10
    shifted = same.clone()
    shifted[20:] += 1.0
    loss = float(section_shift(shifted, y, sections))
    assert loss > 0.1
    assert float(section_shift(3.0 * shifted, y, sections)) == pytest.approx(loss, rel=1e-5)
    assert float(section_shift(shifted, y, torch.zeros(40, dtype=torch.long))) == 0.0


def test_section_alignment_bad_inputs(section):
    sec = section
    model = SpaCRD(sec["genes"], None, **SMALL)
    args = (sec["x_gene"], None, sec["neighbors"], sec["y"])
    n = len(sec["y"])
    with pytest.raises(ValueError, match="section_alignment must be >= 0"):
        model.fit_fusion(*args, section_alignment=-1.0, sections=np.zeros(n), **FAST)
    with pytest.raises(ValueError, match="needs `sections`"):
        model.fit_fusion(*args, section_alignment=1.0, **FAST)
    with pytest.raises(ValueError, match="expected"):
        model.fit_fusion(*args, section_alignment=1.0, sections=np.zeros(n - 1), **FAST)
    with pytest.raises(ValueError, match="at least two sections"):
        model.fit_fusion(*args, section_alignment=1.0, sections=np.zeros(n), **FAST)
    assert not model.is_fitted


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


def test_gene_dropout_trains_differently_and_is_checked(section, target):
    """``gene_dropout`` changes training (same seed, other weights), still separates the classes, is recorded, and
    bad values (or an image-only model) fail before training."""
    sec = section
    scores = {}
    for p in (0.0, 0.5):
        model = SpaCRD(sec["genes"], None, **SMALL)
        model.fit_alignment(sec["x_gene"], None, sec["neighbors"], epochs=2, **FAST)
        args = (sec["x_gene"], None, sec["neighbors"], sec["y"])
        model.fit_fusion(*args, epochs=12, lr=2e-3, batch_size=64, gene_dropout=p, **FAST)
        assert model.training_params["fusion"]["gene_dropout"] == p
        scores[p] = model.predict_proba(target["x_gene"], None, target["neighbors"])
        assert roc_auc_score(target["y"], scores[p]) > 0.9
    assert not np.allclose(scores[0.0], scores[0.5], atol=1e-3)
    model = SpaCRD(sec["genes"], None, **SMALL)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="gene_dropout must be in"):
            model.fit_fusion(*args, gene_dropout=bad, **FAST)
    image_only = SpaCRD([], sec["x_image"].shape[1], modality="image", **SMALL)
    with pytest.raises(ValueError, match="gene_dropout drops gene inputs"):
        image_only.fit_fusion(None, sec["x_image"], sec["neighbors"], sec["y"], gene_dropout=0.2, **FAST)
    assert not model.is_fitted and not image_only.is_fitted
