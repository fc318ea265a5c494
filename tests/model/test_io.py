"""save → load round trips; refused overwrites; clear errors for missing or tampered files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from spacrd_sc.model import SpaCRD


@pytest.fixture
def saved(fitted_image, tmp_path):
    path = tmp_path / "model"
    fitted_image.save(path)
    return path


def test_round_trip_identical_scores(fitted_image, saved, target):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    loaded = SpaCRD.load(saved, device="cpu")
    args = (target["x_gene"], target["x_image"], target["neighbors"])
    np.testing.assert_array_equal(fitted_image.predict_proba(*args), loaded.predict_proba(*args))
    np.testing.assert_array_equal(fitted_image.embed(*args), loaded.embed(*args))
    assert loaded.genes == fitted_image.genes and loaded.config == fitted_image.config
    assert loaded.history == fitted_image.history and loaded.is_fitted and loaded.is_aligned
    assert loaded.device == "cpu"
    meta = json.loads((saved / "config.json").read_text())
    assert meta["format_version"] == 1 and "package_version" in meta and meta["mode"] == "both"


def test_round_trip_image_less_with_preprocessing(fitted_expression, tmp_path, section):
    fitted_expression.preprocessing = {
        "normalize_total": 1e4,
        "scaling": "minmax",
        "genes_from": ["A1", "B1"],
    }
    fitted_expression.save(tmp_path / "m")
    loaded = SpaCRD.load(tmp_path / "m", device="cpu")
    assert loaded.preprocessing == fitted_expression.preprocessing and loaded.image_less
    args = (section["x_gene"], None, section["neighbors"])
    np.testing.assert_array_equal(fitted_expression.predict_proba(*args), loaded.predict_proba(*args))


def test_overwrite_refused_then_allowed(fitted_image, saved):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted_image.save(saved)
    fitted_image.save(saved, overwrite=True)
    (saved.parent / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        fitted_image.save(saved.parent / "afile", overwrite=True)


def test_empty_existing_directory_is_fine(fitted_image, tmp_path):
    (tmp_path / "empty").mkdir()
    fitted_image.save(tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_missing_file(saved, missing):
    (saved / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {missing}"):
        SpaCRD.load(saved)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        SpaCRD.load(tmp_path / "nope")


def test_modified_weights_detected(saved):
    tensors = load_file(saved / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(ValueError, match="does not match the checksum"):
        SpaCRD.load(saved)


def test_corrupt_weights_file(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    meta = json.loads((saved / "config.json").read_text())
    import hashlib

    meta["weights_sha256"] = hashlib.sha256(b"not a safetensors file").hexdigest()
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="could not be read as safetensors"):
        SpaCRD.load(saved)


def test_config_gene_list_tampered(saved):
    meta = json.loads((saved / "config.json").read_text())
    meta["config"]["genes"] = meta["config"]["genes"][:-3]
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shape mismatches 1 \(gene_encoder\.net\.0\.weight: saved"):
        SpaCRD.load(saved)


def test_config_not_json_or_wrong_format(saved):
    (saved / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        SpaCRD.load(saved)
    (saved / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="does not describe a spacrd_sc.SpaCRD model"):
        SpaCRD.load(saved)


def test_newer_format_version_refused(saved):
    meta = json.loads((saved / "config.json").read_text())
    meta["format_version"] = 99
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version 99"):
        SpaCRD.load(saved)


LEGACY = Path(__file__).parents[1] / "data" / "legacy_models"


@pytest.mark.parametrize("name", ["imageless", "image"])
def test_legacy_model_folders_load(name, monkeypatch):
    """Folders saved by spacrd_sc before the ModelConfig/_io refactor load and score exactly as they did."""
    import anndata as ad

    import spacrd_sc as sc_crd

    monkeypatch.setattr(sc_crd.settings, "min_genes", 30)  # toy models of 30 genes, below MIN_GENES

    model = sc_crd.SpaCRD.load(LEGACY / name, device="cpu")
    assert model.is_fitted and model.image_less == (name == "imageless")
    target = ad.read_h5ad(LEGACY / f"{name}_target.h5ad")
    sc_crd.tl.cancer_score(target, model, device="cpu", threshold="gmm")  # the rule the stored calls were made with
    expected = np.load(LEGACY / f"{name}_scores.npz")
    np.testing.assert_array_equal(target.obs["spacrd_score"].to_numpy(), expected["score"])
    np.testing.assert_array_equal(target.obsm["X_spacrd"], expected["embedding"])
    np.testing.assert_array_equal(target.obs["spacrd_cancer"].to_numpy(), expected["cancer"])
