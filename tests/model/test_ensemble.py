"""Seed ensembles inside one SpaCRD (``n_members``): members equal single models, scores average, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _helpers.sections import SMALL

from spacrd_sc.model import SpaCRD


@pytest.fixture(scope="module")
def members(section, train):
    """An image + expression ensemble of two (seed 3) and the two single models with seeds 3 and 4."""
    return train(section, image=True, seed=3, n_members=2), [train(section, image=True, seed=s) for s in (3, 4)]


def test_each_member_is_the_single_model_of_its_seed(members):
    ensemble, singles = members
    assert len(ensemble.nets) == 2 and ensemble.net is ensemble.nets[0]
    for net, single in zip(ensemble.nets, singles, strict=True):
        a, b = net.state_dict(), single.net.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert ensemble.training_params["fusion"]["member_seeds"] == [3, 4]
    w0, w1 = (next(net.discriminator.parameters()) for net in ensemble.nets)
    assert not torch.equal(w0, w1)  # different seeds, different networks


def test_scores_are_the_mean_of_the_members(members, target):
    ensemble, singles = members
    args = (target["x_gene"], target["x_image"], target["neighbors"])
    pred = ensemble.predict(*args)
    expected = np.mean([s.predict_proba(*args) for s in singles], axis=0)
    np.testing.assert_allclose(pred.proba, expected, rtol=0, atol=1e-6)
    assert pred.proba.dtype == np.float32
    np.testing.assert_array_equal(pred.embedding, singles[0].embed(*args))  # the first member's
    hist = np.mean([s.history["cls"] for s in singles], axis=0)
    np.testing.assert_allclose(ensemble.history["cls"], hist, rtol=1e-6)
    assert "an ensemble of 2 networks" in ensemble.mode_description


def test_ensemble_round_trip_identical_scores(members, target, tmp_path):
    ensemble, _ = members
    ensemble.save(tmp_path / "m")
    loaded = SpaCRD.load(tmp_path / "m", device="cpu")
    assert loaded.config["n_members"] == 2 and len(loaded.nets) == 2
    args = (target["x_gene"], target["x_image"], target["neighbors"])
    np.testing.assert_array_equal(loaded.predict_proba(*args), ensemble.predict_proba(*args))
    np.testing.assert_array_equal(loaded.embed(*args), ensemble.embed(*args))


def test_one_member_saves_the_single_network_names(fitted_expression, tmp_path):
    from safetensors.torch import load_file

    fitted_expression.save(tmp_path / "m")
    names = load_file(tmp_path / "m" / "model.safetensors").keys()
    assert not any(k.startswith("member") for k in names)
    assert set(names) == set(fitted_expression.net.state_dict())


def test_default_is_three_networks_and_models_saved_before_n_members_load_as_one(tmp_path):
    small = {k: v for k, v in SMALL.items() if k != "n_members"}
    model = SpaCRD([f"g{i}" for i in range(20)], None, **small)
    assert model.config["n_members"] == 3 and len(model.nets) == 3
    single = SpaCRD(model.genes, None, **SMALL)
    single.save(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    del cfg["config"]["n_members"]  # a model written before n_members existed
    cfg["format_version"] = 1  # written before the manifest too
    (tmp_path / "old" / "manifest.json").unlink()
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    loaded = SpaCRD.load(tmp_path / "old", device="cpu")
    assert loaded.config["n_members"] == 1 and len(loaded.nets) == 1


def test_progress_bars_name_each_network(section, capsys):
    model = SpaCRD(section["genes"], None, **{**SMALL, "n_members": 2})
    args = (section["x_gene"], None, section["neighbors"])
    model.fit_alignment(*args, epochs=1, progress_bar=True, device="cpu")
    model.fit_fusion(*args, section["y"], epochs=2, progress_bar=True, device="cpu")
    err = capsys.readouterr().err
    for stage in ("alignment", "fusion"):
        assert f"SpaCRD {stage}, network 1/2" in err and f"SpaCRD {stage}, network 2/2" in err


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_member_count(bad):
    with pytest.raises(ValueError, match="n_members"):
        SpaCRD(["a", "b"], n_members=bad)
