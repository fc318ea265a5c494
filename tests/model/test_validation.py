"""Bad inputs are refused with a clear message before any training."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers.sections import FAST, SMALL

from spacrd_sc.model import NotFittedError, SpaCRD


@pytest.fixture
def model(section):
    return SpaCRD(section["genes"], section["x_image"].shape[1], **SMALL)


def _args(section, **over):
    args = {k: section[k] for k in ("x_gene", "x_image", "neighbors")}
    args.update(over)
    return args


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: {"x_gene": s["x_gene"][:, :-1]}, "x_gene has 59 columns but the model expects 60 genes"),
        (lambda s: {"x_image": s["x_image"][:, :5]}, "x_image has 5 columns but the model expects 24 image"),
        (lambda s: {"x_image": s["x_image"][:-1]}, "different numbers of spots"),
        (lambda s: {"x_image": None}, "x_image is None but this model"),
        (lambda s: {"x_gene": s["x_gene"][0]}, "x_gene must be 2-D"),
        (
            lambda s: {"x_gene": np.where(np.eye(256, 60, dtype=bool), np.nan, s["x_gene"])},
            "x_gene contains 60 NaN/inf",
        ),
        (lambda s: {"x_image": np.full_like(s["x_image"], np.inf)}, "x_image contains .* NaN/inf"),
        (
            lambda s: {"neighbors": s["neighbors"][:, :4]},
            "neighbors has 4 columns but the model uses n_neighbors=6",
        ),
        (lambda s: {"neighbors": s["neighbors"][:-1]}, "neighbors has 255 rows but the features have 256"),
        (lambda s: {"neighbors": s["neighbors"] + 1000}, r"must lie in \[0, 255\]"),
        (lambda s: {"neighbors": np.full_like(s["neighbors"], -2)}, r"must lie in \[0, 255\]"),
        (lambda s: {"neighbors": s["neighbors"] + 0.5}, "integer row indices"),
    ],
)
def test_bad_features_and_neighbors(model, section, change, match):
    with pytest.raises(ValueError, match=match):
        model.fit_alignment(**_args(section, **change(section)), **FAST)
    with pytest.raises(ValueError, match=match):
        model.fit_fusion(**_args(section, **change(section)), y=section["y"], **FAST)
    assert "align" not in model.history


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.full(256, 2), "y must be binary"),
        (np.zeros(256), "single class"),
        (np.ones(255), r"y must have shape \(256,\)"),
        (np.array(["a"] * 256), "numeric or boolean"),
        (np.r_[np.nan, np.ones(255)], "NaN labels"),
    ],
)
def test_bad_labels(model, section, y, match):
    with pytest.raises(ValueError, match=match):
        model.fit_fusion(**_args(section), y=y, **FAST)
    assert not model.is_fitted


def test_boolean_labels_accepted(section):
    model = SpaCRD(section["genes"], use_contrastive=False, **SMALL)
    model.fit_fusion(section["x_gene"], None, section["neighbors"], section["y"].astype(bool), epochs=2, **FAST)
    assert model.is_fitted


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": 1}, "batch_size must be an integer >= 2"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"epochs": 4, "fused_epochs": 4}, "leaves no classifier epoch"),
        ({"batching": "spatial"}, "batching must be"),
        ({"device": "tpu"}, "Unknown device"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_training_settings(model, section, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.fit_fusion(**_args(section), y=section["y"], **{**FAST, **kwargs})
    assert not model.is_fitted


def test_training_config_names_and_stages(model, section):
    """One TrainingConfig: ``epochs`` / ``lr`` name the stage's fields; unknown (or removed) options are refused
    before any work; a config can be passed whole."""
    from spacrd_sc.model import TrainingConfig

    cfg = TrainingConfig()
    assert cfg.for_stage("fusion", epochs=3, lr=0.1).fusion_epochs == 3
    assert cfg.for_stage("alignment", epochs=3).align_epochs == 3 and cfg.alignment_epochs("both") == 20
    assert cfg.alignment_epochs("expression") == 5 and cfg.fusion_epochs == 8
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ("gene_dropout", "label_smoothing", "align_epochs"):
        with pytest.raises(TypeError, match=bad):
            model.fit_fusion(**_args(section), y=section["y"], **{bad: 1}, **FAST)
    with pytest.raises(TypeError, match="TrainingConfig"):
        model.fit_fusion(**_args(section), y=section["y"], config={"fusion_epochs": 2}, **FAST)
    model.fit_fusion(**_args(section), y=section["y"], config=TrainingConfig(fusion_epochs=2, seed=3), **FAST)
    assert model.training_config.seed == 3 and model.training_params["fusion"]["member_seeds"][0] == 3
    assert len(model.history["cls"]) == 1


def test_predict_before_fit(model, section):
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict_proba(**_args(section))
    with pytest.raises(ValueError, match="not fitted"):
        model.embed(**_args(section))


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (("TP53",), {}, TypeError, "not a single string"),
        ([["a", "b", "a"]], {}, ValueError, "duplicates"),
        ([[]], {}, ValueError, "genes is empty"),
        ([["a"]], {"n_heads": 5}, ValueError, "must divide"),
        ([["a"]], {"modality": "rna"}, ValueError, "modality must be one of"),
        ([["a"]], {"modality": "image"}, ValueError, "needs n_image_features"),
        ([["a"], 0], {}, ValueError, "n_image_features must be a positive integer"),
        ([["a"]], {"preprocessing": {"f": object()}}, ValueError, "JSON"),
        ([["a"]], {"alpha": 2.0}, ValueError, "alpha must be in"),
    ],
)
def test_bad_constructor_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SpaCRD(*args, **kwargs)


def test_config_is_json_and_rebuilds(model):
    import json

    cfg = model.config
    json.dumps(cfg)
    assert cfg["genes"] == model.genes and cfg["n_image_features"] == 24
    again = SpaCRD(**cfg)
    assert again.config == cfg
    assert SpaCRD(["a", "b"]).mode == "expression"
