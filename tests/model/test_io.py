"""save → load round trips; atomic saves; a manifest that catches missing, extra, truncated or edited files;
clear errors for tampered files; folders saved before the manifest (format 1) still load."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from spacrd_sc.model import SpaCRD, _io

#: Tolerances for float32 results compared with files stored in the repository (written on another machine:
#: other CPUs and BLAS builds round float32 sums differently, by a few 1e-7). Within one process, exact.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture
def saved(fitted_image, tmp_path):
    path = tmp_path / "model"
    fitted_image.save(path)
    return path


def _scores(model, sec):
    return model.predict_proba(sec["x_gene"], sec["x_image"] if not model.image_less else None, sec["neighbors"])


def _siblings(path: Path) -> list[str]:
    """Names beside ``path`` other than ``path`` itself (temporary or backup folders left by a save)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def _remanifest(path: Path) -> None:
    """Rewrite the manifest after a change: the folder is then consistent, so the deeper checks are reached."""
    (path / _io.MANIFEST_FILE).unlink()
    _io.write_manifest(path)


def _edit_config(path: Path, edit) -> None:
    meta = json.loads((path / "config.json").read_text())
    edit(meta)
    (path / "config.json").write_text(json.dumps(meta, indent=1))


# ------------------------------------------------------------------------------------------------ round trips
def test_round_trip_identical_scores(fitted_image, saved, target):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    loaded = SpaCRD.load(saved, device="cpu")
    args = (target["x_gene"], target["x_image"], target["neighbors"])
    np.testing.assert_array_equal(fitted_image.predict_proba(*args), loaded.predict_proba(*args))  # same process
    np.testing.assert_array_equal(fitted_image.embed(*args), loaded.embed(*args))
    assert loaded.genes == fitted_image.genes and loaded.config == fitted_image.config
    assert loaded.history == fitted_image.history and loaded.is_fitted and loaded.is_aligned
    assert loaded.device == "cpu"
    meta = json.loads((saved / "config.json").read_text())
    assert meta["format_version"] == 2 and "package_version" in meta and meta["mode"] == "both"


def test_manifest_lists_every_file(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["algorithm"] == "sha256"
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    for name, record in manifest["files"].items():
        data = (saved / name).read_bytes()
        assert record == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


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


def test_symlink_and_relative_paths(fitted_expression, tmp_path, monkeypatch, section):
    monkeypatch.chdir(tmp_path)
    fitted_expression.save("rel/m")  # parents created
    (tmp_path / "link").symlink_to(tmp_path / "rel" / "m")
    fitted_expression.save(tmp_path / "link", overwrite=True)  # replaces the folder the link points to
    assert (tmp_path / "link").is_symlink() and (tmp_path / "rel" / "m" / "manifest.json").is_file()
    np.testing.assert_array_equal(_scores(SpaCRD.load("link"), section), _scores(fitted_expression, section))


# ----------------------------------------------------------------------------------------- overwrite rules
def test_overwrite_refused_then_allowed(fitted_image, fitted_expression, saved, section):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted_image.save(saved)
    fitted_expression.save(saved, overwrite=True)
    assert SpaCRD.load(saved).image_less  # the new model replaced the old one
    assert _siblings(saved) == []  # no temporary or backup folder left
    (saved.parent / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        fitted_image.save(saved.parent / "afile", overwrite=True)


def test_overwrite_refuses_a_folder_holding_other_files(fitted_image, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"holds 'notes.txt', which are not part of a saved SpaCRD model"):
        fitted_image.save(folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "my notes" and _siblings(folder) == []


def test_empty_existing_directory_is_fine(fitted_image, tmp_path):
    (tmp_path / "empty").mkdir()
    fitted_image.save(tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    assert _siblings(tmp_path / "empty") == []


# ---------------------------------------------------------------------------------------------- atomic saves
class DiskFull(OSError):
    pass


@pytest.mark.parametrize("error", [DiskFull(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_overwrite_keeps_the_old_model(fitted_image, fitted_expression, saved, target, monkeypatch, error):
    """A save that dies while writing the weights (half a file written) leaves the old folder as it was."""
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def half_then_fail(tensors, path):
        path.write_bytes(b"\0" * 1000)
        raise error

    monkeypatch.setattr(_io, "write_weights", half_then_fail)
    with pytest.raises(type(error)):
        fitted_expression.save(saved, overwrite=True)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert _siblings(saved) == []
    np.testing.assert_array_equal(_scores(SpaCRD.load(saved), target), _scores(fitted_image, target))


def test_failed_first_save_leaves_nothing(fitted_image, tmp_path, monkeypatch):
    def fail(tensors, path):
        raise DiskFull(28, "No space left on device")

    monkeypatch.setattr(_io, "write_weights", fail)
    with pytest.raises(DiskFull):
        fitted_image.save(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_failed_swap_restores_the_old_folder(fitted_image, fitted_expression, saved, target, monkeypatch):
    """The new folder is complete but cannot be renamed into place: the old folder is put back."""
    real_rename = os.rename

    def rename(src, dst):
        if str(src).endswith(".saving"):
            raise DiskFull(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(_io.os, "rename", rename)
    with pytest.raises(DiskFull):
        fitted_expression.save(saved, overwrite=True)
    monkeypatch.undo()
    assert _siblings(saved) == []
    np.testing.assert_array_equal(_scores(SpaCRD.load(saved), target), _scores(fitted_image, target))


def test_unserialisable_record_refused_before_writing(fitted_image, saved):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    fitted_image.training_params["note"] = {"when": object()}
    try:
        with pytest.raises(ValueError, match="'training_params' cannot be saved as JSON.*nothing was written"):
            fitted_image.save(saved, overwrite=True)
    finally:
        del fitted_image.training_params["note"]
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before and _siblings(saved) == []


# -------------------------------------------------------------------------------------- verified on loading
@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m["config"]["genes"].insert(0, m["config"]["genes"].pop(1)), id="two-genes-swapped"),
        pytest.param(lambda m: m["preprocessing"].update(scaling="minmax"), id="preprocessing"),
        pytest.param(lambda m: m["preprocessing"].update(target_sum=1e6), id="target-sum"),
        pytest.param(lambda m: m["config"].update(alpha=0.6), id="same-size-edit"),
    ],
)
def test_hand_edited_config_refused(fitted_image, saved, edit):
    fitted_image.preprocessing = {"target_sum": 1e4, "log1p": True, "scaling": "standard"}
    fitted_image.save(saved, overwrite=True)
    _edit_config(saved, edit)
    with pytest.raises(ValueError, match=r"config\.json in .* does not match .*manifest\.json.*changed after saving"):
        SpaCRD.load(saved)


def test_truncated_or_flipped_weights_refused(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors in .* bytes, \d+ when saved \(truncated"):
        SpaCRD.load(saved)
    (saved / "model.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit, same size
    with pytest.raises(ValueError, match=r"model\.safetensors in .* does not match the sha256 recorded in manifest"):
        SpaCRD.load(saved)


def test_modified_weights_detected(saved):
    tensors = load_file(saved / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors in .* does not match manifest\.json"):
        SpaCRD.load(saved)
    _remanifest(saved)  # behind a consistent manifest, config.json's own checksum still catches it
    with pytest.raises(ValueError, match="does not match the checksum"):
        SpaCRD.load(saved)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "manifest.json"])
def test_missing_file(saved, missing):
    (saved / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {missing}"):
        SpaCRD.load(saved)


@pytest.mark.parametrize("extra", ["notes.txt", ".ipynb_checkpoints"])
def test_extra_file_refused(saved, extra):
    if extra.startswith("."):
        (saved / extra).mkdir()
    else:
        (saved / extra).write_text("x")
    with pytest.raises(ValueError, match=f"holds {extra}, not listed in its manifest.json"):
        SpaCRD.load(saved)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{broken", r"manifest\.json' is not valid JSON"),
        ('{"format": "other"}', r"manifest\.json' is not a spacrd_sc.SpaCRD manifest"),
        ('{"format": "spacrd_sc.SpaCRD manifest", "algorithm": "sha256", "files": {}}', "does not list config.json"),
    ],
)
def test_bad_manifest(saved, text, match):
    (saved / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        SpaCRD.load(saved)


def test_corrupt_weights_file(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    _edit_config(saved, lambda m: m.update(weights_sha256=hashlib.sha256(b"not a safetensors file").hexdigest()))
    _remanifest(saved)
    with pytest.raises(ValueError, match="could not be read as safetensors"):
        SpaCRD.load(saved)


def test_config_gene_list_tampered(saved):
    _edit_config(saved, lambda m: m["config"].update(genes=m["config"]["genes"][:-3]))
    with pytest.raises(ValueError, match=r"config\.json in .* does not match"):
        SpaCRD.load(saved)
    _remanifest(saved)
    with pytest.raises(ValueError, match=r"shape mismatches 1 \(gene_encoder\.net\.0\.weight: saved"):
        SpaCRD.load(saved)


def test_config_not_json_or_wrong_format(saved):
    (saved / "config.json").write_text("{broken")
    _remanifest(saved)
    with pytest.raises(ValueError, match="not valid JSON"):
        SpaCRD.load(saved)
    (saved / "config.json").write_text(json.dumps({"format": "other"}))
    _remanifest(saved)
    with pytest.raises(ValueError, match="does not describe a spacrd_sc.SpaCRD model"):
        SpaCRD.load(saved)


def test_newer_format_version_refused(saved):
    _edit_config(saved, lambda m: m.update(format_version=99))
    _remanifest(saved)  # as a newer spacrd_sc would write it
    with pytest.raises(ValueError, match="format_version 99; this spacrd_sc reads 1 to 2"):
        SpaCRD.load(saved)


def test_format_2_without_manifest_refused(saved):
    """Deleting the manifest does not turn a new folder into an unverified old one."""
    (saved / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing manifest\.json \(format_version 2"):
        SpaCRD.load(saved)


def test_path_that_is_a_file_or_missing(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory but a file; pass the folder"):
        SpaCRD.load(saved / "config.json")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        SpaCRD.load(tmp_path / "nope")


# ----------------------------------------------------------------------------------- format 1 (no manifest)
LEGACY = Path(__file__).parents[1] / "data" / "legacy_models"


def _assert_calls_match(calls, expected_calls, scores, threshold) -> None:
    """Calls agree except, at most, for spots whose score lies within float32 tolerance of the threshold."""
    differ = np.asarray(calls) != np.asarray(expected_calls)
    near = np.abs(np.asarray(scores) - threshold) <= ATOL + RTOL * abs(threshold)
    assert not (differ & ~near).any(), f"{int((differ & ~near).sum())} calls differ away from the threshold"


@pytest.mark.parametrize("name", ["imageless", "image"])
def test_legacy_model_folders_load(name, caplog, monkeypatch):
    """Folders saved by spacrd_sc before the ModelConfig/_io refactor (format 1, no manifest) load and score as
    they did, within float32 tolerance: the stored scores were computed on another machine."""
    import anndata as ad

    import spacrd_sc as sc_crd

    monkeypatch.setattr(sc_crd.settings, "min_genes", 30)  # toy models of 30 genes, below MIN_GENES
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        model = sc_crd.SpaCRD.load(LEGACY / name, device="cpu")
    assert "format_version 1" in caplog.text and "Save it again" in caplog.text
    assert model.is_fitted and model.image_less == (name == "imageless")
    target = ad.read_h5ad(LEGACY / f"{name}_target.h5ad")
    sc_crd.tl.cancer_score(target, model, device="cpu", threshold="gmm")  # the rule the stored calls were made with
    expected = np.load(LEGACY / f"{name}_scores.npz")
    scores = target.obs["spacrd_score"].to_numpy()
    np.testing.assert_allclose(scores, expected["score"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(target.obsm["X_spacrd"], expected["embedding"], rtol=RTOL, atol=ATOL)
    threshold = target.uns["spacrd"]["threshold"]
    assert np.isscalar(threshold)
    _assert_calls_match(target.obs["spacrd_cancer"].to_numpy(), expected["cancer"], expected["score"], threshold)


@pytest.mark.parametrize("name", ["imageless", "image"])
def test_legacy_folder_saved_again_gets_a_manifest(name, tmp_path, caplog, monkeypatch):
    import anndata as ad

    import spacrd_sc as sc_crd

    monkeypatch.setattr(sc_crd.settings, "min_genes", 30)  # toy models of 30 genes, below MIN_GENES

    folder = tmp_path / name
    shutil.copytree(LEGACY / name, folder)
    old = sc_crd.SpaCRD.load(folder, device="cpu")
    old.save(folder, overwrite=True)
    assert (folder / "manifest.json").is_file()
    assert json.loads((folder / "config.json").read_text())["format_version"] == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        new = sc_crd.SpaCRD.load(folder, device="cpu")
    assert "format_version 1" not in caplog.text
    target = ad.read_h5ad(LEGACY / f"{name}_target.h5ad")
    a, b = target.copy(), target.copy()
    sc_crd.tl.cancer_score(a, old, device="cpu", threshold="gmm")
    sc_crd.tl.cancer_score(b, new, device="cpu", threshold="gmm")
    np.testing.assert_array_equal(a.obs["spacrd_score"].to_numpy(), b.obs["spacrd_score"].to_numpy())  # one process


def test_legacy_folder_weights_still_verified(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(LEGACY / "imageless", folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the checksum recorded in config.json"):
        SpaCRD.load(folder)


def test_training_config_saved_and_old_folders_get_the_defaults(fitted_image, saved):
    from spacrd_sc.model import TrainingConfig

    loaded = SpaCRD.load(saved, device="cpu")
    assert loaded.training_config == fitted_image.training_config
    assert loaded.training_config.fusion_epochs == 12 and loaded.training_config.batch_size == 64
    meta = json.loads((saved / "config.json").read_text())
    assert meta["training_config"] == fitted_image.training_config.to_dict()
    del meta["training_config"]  # as written before the entry existed
    (saved / "config.json").write_text(json.dumps(meta))
    _remanifest(saved)
    assert SpaCRD.load(saved, device="cpu").training_config == TrainingConfig()


@pytest.mark.parametrize(
    ("entry", "option", "value"),
    [("config", "linear_skip", True), ("training_config", "gene_dropout", 0.2), ("training_config", "lr", 1e-3)],
)
def test_removed_or_unknown_options_in_a_saved_model(saved, entry, option, value):
    """A folder that used an option removed from spacrd_sc is refused with an error naming it; the same option
    switched off (as every model of the versions that had it recorded) loads."""
    meta = json.loads((saved / "config.json").read_text())
    meta[entry][option] = value
    (saved / "config.json").write_text(json.dumps(meta))
    _remanifest(saved)
    with pytest.raises(ValueError, match=option):
        SpaCRD.load(saved, device="cpu")
    if option != "lr":
        meta[entry][option] = False if option == "linear_skip" else 0.0
        (saved / "config.json").write_text(json.dumps(meta))
        _remanifest(saved)
        assert SpaCRD.load(saved, device="cpu").is_fitted
