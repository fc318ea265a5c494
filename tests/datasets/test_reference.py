"""``datasets.her2st_model``: trained on the 8 labelled her2st sections for a target's genes, cached on disk."""

from __future__ import annotations

import json
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


@pytest.mark.slow
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
    card = (folder / "README.md").read_text()  # the entry is a save_pretrained folder, with a model card
    assert "license_name: her2st-data" in card and "no LICENSE file" in card and "Metrics" in card

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


# ------------------------------------------------------------------------------ cache entries: verified, rebuilt
GENES = [f"g{i}" for i in range(60)]


@pytest.fixture(scope="module")
def tiny_model():
    """A real fitted image-less model (synthetic section, seconds to train) to stand in a cache entry."""
    import torch
    from _helpers.sections import FAST, SMALL, make_section, section_arrays

    torch.set_num_threads(1)
    sec = section_arrays(make_section(nx=8, ny=8, n_genes=60, n_markers=5, seed=0))
    model = sc_crd.SpaCRD(sec["genes"], None, **SMALL)
    model.fit_alignment(sec["x_gene"], None, sec["neighbors"], epochs=1, **FAST)
    model.fit_fusion(sec["x_gene"], None, sec["neighbors"], sec["y"], epochs=2, **FAST)
    model.training_params["her2st_model"] = {"seed": 0, "from_cache": False}
    return model


def _entry(cache_dir, genes=GENES, seed=0, epochs=2):
    from spacrd_sc import __version__
    from spacrd_sc.datasets import _reference

    return cache_dir / _reference._cache_key(genes, seed, __version__, epochs)


def _edit_json(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=1))


def test_cache_hit_is_verified_and_needs_no_data(tiny_model, tmp_path, caplog):
    folder = _entry(tmp_path)
    tiny_model.save(folder)
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        model = sc_crd.datasets.her2st_model(GENES, cache_dir=tmp_path, epochs=2, device="cpu", path=tmp_path / "none")
    assert "loaded from the cache" in caplog.text and "Training" not in caplog.text
    assert model.training_params["her2st_model"]["from_cache"] is True and model.genes == tiny_model.genes


#: Damage done to a saved cache entry, and the file the report must name.
DAMAGE = {
    "config-edited": (lambda f: _edit_json(f / "config.json", lambda m: m["config"]["genes"].reverse()), "config.json"),
    "config-bad-json": (lambda f: (f / "config.json").write_text("{broken"), "config.json"),
    "weights-truncated": (
        lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]),
        "model.safetensors",
    ),
    "weights-missing": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors"),
    "manifest-missing": (lambda f: (f / "manifest.json").unlink(), "manifest.json"),
    "manifest-bad-json": (lambda f: (f / "manifest.json").write_text("not json"), "manifest.json"),
    "file-added": (lambda f: (f / "stray.txt").write_text("x"), "stray.txt"),
    "emptied": (lambda f: [p.unlink() for p in f.iterdir()], "config.json"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_entry_detected(tiny_model, tmp_path, damage):
    from spacrd_sc.datasets import _reference

    folder = _entry(tmp_path)
    tiny_model.save(folder)
    assert _reference._load_cached(folder, "cpu")[0] is not None
    do, name = DAMAGE[damage]
    do(folder)
    model, why = _reference._load_cached(folder, "cpu")
    assert model is None and name in why


def test_damaged_entry_in_a_read_only_cache_names_the_fix(tiny_model, tmp_path, monkeypatch, caplog):
    """Where the entry cannot be rebuilt, the error (raised before any training) gives the command that fixes it."""
    from spacrd_sc.datasets import _reference

    folder = _entry(tmp_path)
    tiny_model.save(folder)
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(_reference.os, "access", lambda *a, **k: False)  # a cache folder of another user
    with caplog.at_level(logging.INFO, logger="spacrd_sc"), pytest.raises(PermissionError) as info:
        sc_crd.datasets.her2st_model(GENES, cache_dir=tmp_path, epochs=2, device="cpu")
    msg = str(info.value)
    assert "is damaged" in msg and "model.safetensors" in msg and f"rm -r '{folder}'" in msg
    assert "Training" not in caplog.text


def test_cache_dir_that_is_a_file_refused_before_training(tmp_path, caplog):
    (tmp_path / "afile").write_text("x")
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        with pytest.raises(NotADirectoryError, match="cache_dir .*afile.* cannot be used as a folder"):
            sc_crd.datasets.her2st_model(GENES, cache_dir=tmp_path / "afile", epochs=2, device="cpu")
    assert "Training" not in caplog.text


def test_cache_entry_saved_before_manifests_is_upgraded(tiny_model, tmp_path):
    folder = _entry(tmp_path)
    tiny_model.save(folder)
    (folder / "manifest.json").unlink()
    _edit_json(folder / "config.json", lambda m: m.update(format_version=1))  # as an earlier spacrd_sc wrote it
    model = sc_crd.datasets.her2st_model(GENES, cache_dir=tmp_path, epochs=2, device="cpu")
    assert model.training_params["her2st_model"]["from_cache"] is True
    assert (folder / "manifest.json").is_file()
    assert json.loads((folder / "config.json").read_text())["format_version"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


@pytest.mark.slow
def test_damaged_cache_entry_is_rebuilt(data_dir, her2st_loader, tiny_model, tmp_path, caplog):
    """End to end: a truncated cache entry is trained again on her2st (with a warning) and replaced."""
    genes = list(her2st_loader("H1").tables["table"].var_names[:200])
    folder = _entry(tmp_path, genes)
    tiny_model.save(folder)  # an entry for these genes (a stand-in), then damaged
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:1000])
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        model = sc_crd.datasets.her2st_model(
            genes, cache_dir=tmp_path, path=data_dir, epochs=2, device="cpu", progress_bar=False
        )
    assert "is damaged" in caplog.text and "model.safetensors" in caplog.text and "Training the her2st" in caplog.text
    assert model.is_fitted and model.training_params["her2st_model"]["from_cache"] is False
    assert set(model.genes) <= set(genes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # replaced in place; nothing left beside it
    again = sc_crd.SpaCRD.load(folder, device="cpu")  # the new entry is complete and verified
    assert again.genes == model.genes
