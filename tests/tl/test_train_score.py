"""align → fit_vrbca → cancer_score → evaluate on synthetic sections (few epochs, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

import spacrd_sc as sc_crd
from spacrd_sc.tl._threshold import smooth_scores

FAST = {"epochs": 4, "device": "cpu", "progress_bar": False}
#: A small network keeps these tests fast; the default sizes are covered by tests/model.
SMALL = {"model_kwargs": {"hidden_dims": (64, 32, 32), "n_heads": 4, "latent_dim": 8}}
D = 32


@pytest.fixture
def trained(sources):
    model = sc_crd.tl.align(sources, n_top_genes=60, **SMALL, **FAST)
    return sc_crd.tl.fit_vrbca(sources, model, **FAST)


def test_pipeline_outputs(sources, target, trained):
    model = trained
    assert model.image_less and model.is_fitted and len(model.genes) == 60
    assert sources.obsm["X_spacrd"].shape == (sources.n_obs, D)
    assert sources.obsm["X_spacrd"].dtype == np.float32
    assert sc_crd.tl.cancer_score(target, model) is None
    s = target.obs["spacrd_score"]
    assert s.dtype == np.float32 and s.between(0, 1).all()
    assert target.obs["spacrd_cancer"].dtype == bool
    assert target.obsm["X_spacrd"].shape == (target.n_obs, D)
    uns = target.uns["spacrd"]
    assert uns["params"]["image_less"] is True
    assert uns["params"]["n_model_genes"] == 60 and uns["params"]["n_genes_absent"] == 0
    assert uns["params"]["mode"] == model.mode_description and "neighbour" in uns["params"]["mode"]
    assert uns["params"]["spacrd_sc_version"] == sc_crd.__version__
    # the default rule: the mean score of each spot and its graph neighbours, cut at 0.5
    assert uns["params"]["threshold"] == "half_smooth" and uns["threshold"] == 0.5
    smoothed = smooth_scores(s.to_numpy(), target.obsp["spatial_connectivities"])
    np.testing.assert_array_equal(target.obs["spacrd_cancer"], smoothed >= 0.5)
    res = sc_crd.tl.evaluate(target)
    assert res["auc"] > 0.8, res  # a clear synthetic signal, learned on other "sections"


def test_evaluate_equals_sklearn(target):
    rng = np.random.default_rng(0)
    y = target.obs["cancer"].to_numpy()
    s = np.clip(y * 0.4 + rng.uniform(0, 0.6, y.size), 0, 1)
    target.obs["spacrd_score"] = s
    target.obs["spacrd_cancer"] = s >= 0.5
    res = sc_crd.tl.evaluate(target)
    assert res["auc"] == pytest.approx(roc_auc_score(y, s))
    assert res["ap"] == pytest.approx(average_precision_score(y, s))
    assert res["f1"] == pytest.approx(f1_score(y, s >= 0.5))
    from scipy.stats import ks_2samp

    assert res["ks"] == pytest.approx(ks_2samp(s[y], s[~y]).statistic)
    assert sc_crd.tl.evaluate(target, threshold=0.7)["f1"] == pytest.approx(f1_score(y, s >= 0.7))
    target.obs["pathology"] = target.obs["pathology"].cat.add_categories("undetermined")
    target.obs.iloc[:10, target.obs.columns.get_loc("pathology")] = "undetermined"
    assert sc_crd.tl.evaluate(target, exclude_undetermined=True)["n"] == target.n_obs - 10
    with pytest.raises(KeyError, match="cancer_score"):
        sc_crd.tl.evaluate(target, score_key="nope_score")


def test_fixed_threshold_and_copy(target, trained):
    out = sc_crd.tl.cancer_score(target, trained, threshold=0.5, copy=True)
    assert "spacrd_score" not in target.obs
    assert out.uns["spacrd"]["threshold"] == 0.5
    np.testing.assert_array_equal(out.obs["spacrd_cancer"], out.obs["spacrd_score"] >= 0.5)


def test_save_load_identical_scores(tmp_path, target, trained):
    sc_crd.tl.cancer_score(target, trained)
    trained.save(tmp_path / "m")
    loaded = sc_crd.SpaCRD.load(tmp_path / "m", device="cpu")
    t2 = target.copy()
    sc_crd.tl.cancer_score(t2, loaded)
    np.testing.assert_array_equal(t2.obs["spacrd_score"].to_numpy(), target.obs["spacrd_score"].to_numpy())
    assert loaded.preprocessing == trained.preprocessing and loaded.genes == trained.genes


def test_same_seed_same_scores(sources, target):
    def run(seed):
        m = sc_crd.tl.align(sources, n_top_genes=50, seed=seed, **SMALL, **FAST)
        m = sc_crd.tl.fit_vrbca(sources, m, seed=seed, **FAST)
        return sc_crd.tl.cancer_score(target, m, copy=True).obs["spacrd_score"].to_numpy()

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_absent_genes_filled_and_low_overlap_refused(target, trained, caplog):
    drop = trained.genes[:5]
    t = target[:, ~target.var_names.isin(drop)].copy()
    sc_crd.tl.cancer_score(t, trained)
    assert t.uns["spacrd"]["params"]["n_genes_absent"] == 5
    assert "absent from this section" in caplog.text
    t = target[:, ~target.var_names.isin(trained.genes[:40])].copy()
    with pytest.raises(ValueError, match="Only 20 of the model's 60 genes"):
        sc_crd.tl.cancer_score(t, trained)


#: Each ablation: the switch, what the network must then hold (encoders, fusion blocks, VAE), what the mode
#: description must say, and which loss histories fitting must leave.
ABLATIONS = {
    "full": ({}, ("image", "gene"), 2, True, "image/gene InfoNCE", {"align", "fused", "recon", "kl", "bce", "cls"}),
    "-contrastive": ({"use_contrastive": False}, ("image", "gene"), 2, True, "no alignment", {"fused", "cls"}),
    "-cross-attention": (
        {"use_cross_attention": False},
        ("image", "gene"),
        0,
        True,
        "no cross-attention",
        {"align", "fused", "cls"},
    ),
    "-VAE": ({"use_vae": False}, ("image", "gene"), 2, False, "no VAE", {"align", "bce", "cls"}),
    "expression": ({"modality": "expression"}, ("gene",), 1, True, "expression only", {"align", "fused", "cls"}),
    "image": ({"modality": "image"}, ("image",), 1, True, "image only", {"align", "fused", "cls"}),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_image_mode_and_ablations(name, sources_img):
    """Each switch really changes the network and the training, and every variant still learns the signal."""
    kw, encoders, n_blocks, vae, described, losses = ABLATIONS[name]
    m = sc_crd.tl.align(sources_img, n_top_genes=50, **kw, **SMALL, **FAST)
    net = m.net
    assert (net.image_encoder is not None, net.gene_encoder is not None) == ("image" in encoders, "gene" in encoders)
    assert len(getattr(net.fusion, "blocks", [])) == n_blocks
    assert (net.vae is not None) == vae
    assert described in m.mode_description
    assert m.is_aligned == kw.get("use_contrastive", True)
    assert m.image_less == (kw.get("modality") == "expression")
    if m.image_less:
        assert m.preprocessing["image_key"] is None
    else:
        assert m.n_image_features == 32 and m.preprocessing["image_key"] == "X_uni"
    sc_crd.tl.fit_vrbca(sources_img, m, batch_size=64, lr=2e-3, **FAST)  # enough steps to learn in 4 epochs
    assert m.is_fitted
    assert losses <= set(m.history) and all(np.isfinite(v).all() for v in m.history.values())
    if not vae:
        assert not {"fused", "recon", "kl"} & set(m.history)
    if not kw.get("use_contrastive", True):
        assert "align" not in m.history
    # learns the planted signal on its training sections (chance: AUC 0.5)
    p = m.predict_proba(*_arrays(sources_img, m))
    assert roc_auc_score(sources_img.obs["cancer"], p) > 0.8, name


def _arrays(adata, model):
    from spacrd_sc.tl._inputs import FeatureSpec, model_arrays

    a = model_arrays(adata, FeatureSpec.of(model))
    return a.x_gene, a.x_image, a.neighbors


def test_bad_inputs(sources, target, trained):
    with pytest.raises(KeyError, match="label_key 'tumour'"):
        sc_crd.tl.fit_vrbca(sources, trained, label_key="tumour", **FAST)
    s1 = sources.copy()
    s1.obs["cancer"] = False
    with pytest.raises(ValueError, match="single class"):
        sc_crd.tl.fit_vrbca(s1, trained, **FAST)
    with pytest.raises(ValueError, match="fused_epochs must be a non-negative integer"):
        sc_crd.tl.fit_vrbca(sources, trained, fused_epochs=-1, **FAST)
    with pytest.raises(ValueError, match="lr must be > 0"):
        sc_crd.tl.align(sources, lr=0.0, **FAST)
    s2 = sources.copy()
    del s2.obsp["spatial_connectivities"]
    with pytest.raises(KeyError, match="squidpy.gr.spatial_neighbors"):
        sc_crd.tl.align(s2, **FAST)
    with pytest.raises(KeyError, match="library_key 'batch'"):
        sc_crd.tl.align(sources, library_key="batch", **FAST)
    t = target.copy()
    t.var_names = [f"other{i}" for i in range(t.n_vars)]
    with pytest.raises(ValueError, match="Only 0 of the model's"):
        sc_crd.tl.cancer_score(t, trained)
    with pytest.raises(ValueError, match="image features"):
        sc_crd.tl.align(sources, modality="image", **FAST)
    untrained = sc_crd.tl.align(sources, n_top_genes=50, **SMALL, **FAST)
    with pytest.raises(ValueError, match="not trained"):
        sc_crd.tl.cancer_score(target, untrained)


def test_gene_sets_and_key_added(sources, target):
    """``target_genes`` restricts the genes (absent ones and duplicates tolerated); bad gene lists fail early;
    ``key_added`` names the embedding in fit_vrbca as in cancer_score.
    """
    panel = [f"g{j}" for j in range(0, 120, 2)] + ["NOT_IN_SOURCES", "g0"]
    m = sc_crd.tl.align(sources, target_genes=panel, n_top_genes=50, **SMALL, **{**FAST, "epochs": 1})
    assert len(m.genes) == 50 and set(m.genes) <= set(panel[:60])
    sc_crd.tl.fit_vrbca(sources, m, key_added="run1", **{**FAST, "epochs": 2})
    assert sources.obsm["X_run1"].shape == (sources.n_obs, D) and "X_spacrd" not in sources.obsm
    # one TrainingConfig records both stages' settings as given to align and fit_vrbca
    assert (m.training_config.align_epochs, m.training_config.fusion_epochs) == (1, 2)
    sc_crd.tl.cancer_score(target, m, key_added="run1")
    assert {"run1_score", "run1_cancer"} <= set(target.obs) and "X_run1" in target.obsm and "run1" in target.uns
    with pytest.raises(ValueError, match="match up to letter case"):
        sc_crd.tl.align(sources, target_genes=["G1", "G2"], **FAST)
    with pytest.raises(ValueError, match=r"duplicates: \['g1'\]"):
        sc_crd.tl.align(sources, genes=["g1", "g1"], **FAST)
    with pytest.raises(ValueError, match="not in the source adata.var_names, e.g. \\['XIST'\\]"):
        sc_crd.tl.align(sources, genes=["g1", "XIST"], **FAST)
    with pytest.raises(ValueError, match="not in target_genes"):
        sc_crd.tl.align(sources, genes=["g1", "g2"], target_genes=["g1"], **FAST)
