"""The ``spacrd-sc`` command line, run as a user runs it: ``python -m spacrd_sc ...`` in a subprocess.

Synthetic Space Ranger folders (the 10x writer of ``tests/_helpers/tenx``) get a disc of 'tumour' spots with
up-regulated marker genes and a QuPath GeoJSON outlining the disc, so a model trained by ``train`` from the
GeoJSON must find the disc in a third folder. One model, trained once per module, serves the ``score`` tests.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers.tenx import write_10x_h5, write_visium
from scipy import sparse

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "src" / "spacrd_sc" / "_cli"
#: The synthetic tumour: a disc in the full-resolution pixels of the synthetic Visium grid (1200 x 1200 px).
CENTRE, RADIUS = np.array([450.0, 520.0]), 260.0
#: Quick training for tests (the API's defaults are 5 + 8 epochs and a 3-network ensemble).
QUICK = ["--epochs", "2", "--members", "1", "--device", "cpu"]
#: A small timm network for the H&E feature path (random weights: the features are meaningless).
TINY_BACKBONE = "mobilenetv3_small_050"


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m spacrd_sc ARGS`` with this checkout's sources first on the path; not a terminal (captured)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    full_env.update({"MPLBACKEND": "Agg", **(env or {})})
    cmd = [sys.executable, "-m", "spacrd_sc", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("spacrd-sc: error:")]


def _disc_geojson() -> dict:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    ring = np.round(CENTRE + RADIUS * np.c_[np.cos(t), np.sin(t)], 1).tolist()
    props = {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
        "properties": props,
    }
    return {"type": "FeatureCollection", "features": [feature]}


def write_run(root: Path, name: str, seed: int) -> np.ndarray:
    """A Space Ranger run folder ``root/name/outs`` whose disc spots up-regulate genes 0-9 (the others 10-19), and
    ``root/name.geojson`` outlining the disc; returns the truth (bool, in matrix order)."""
    fx = write_visium(root / name / "outs", n_genes=60, source="synthetic", seed=seed, library_id=name)
    pos = fx.positions.loc[fx.barcodes, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    inside = np.linalg.norm(pos - CENTRE, axis=1) < RADIUS
    rng = np.random.default_rng(100 + seed)
    x = fx.counts.toarray()
    x[np.ix_(inside, np.arange(10))] += rng.poisson(6, (inside.sum(), 10))
    x[np.ix_(~inside, np.arange(10, 20))] += rng.poisson(4, ((~inside).sum(), 10))
    write_10x_h5(
        fx.path / "filtered_feature_bc_matrix.h5", sparse.csr_matrix(x), fx.barcodes, fx.features, library_id=name
    )
    (root / f"{name}.geojson").write_text(json.dumps(_disc_geojson()))
    return inside


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for seed, name in enumerate(["runA", "runB", "runC"]):
        write_run(root, name, seed)
    return root


def section_zarr(runs: Path, name: str, path: Path) -> Path:
    """``name`` read with the public reader and written as a SpatialData zarr, with ``obs["cancer"]`` = the disc."""
    import spacrd_sc as sc_crd

    sdata = sc_crd.io.visium(runs / name / "outs", library_id=name)
    t = sdata.tables["table"]
    t.obs["cancer"] = np.linalg.norm(t.obsm["spatial"] - CENTRE, axis=1) < RADIUS
    sdata.write(path)
    return path


@pytest.fixture(scope="module")
def trained(runs: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """``train`` on a SpatialData zarr labelled by an obs column and a run folder labelled by a QuPath GeoJSON."""
    zarr = section_zarr(runs, "runA", runs / "runA.zarr")
    model = runs / "model"
    labels = ["--labels", "cancer", "--labels", runs / "runB.geojson", "--cancer-classes", "Tumor"]
    proc = run("train", zarr, runs / "runB", *labels, "--out", model, *QUICK)
    assert proc.returncode == 0, proc.stderr
    return model, proc


# ---------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", ["", "demo", "score", "train"])
def test_help(command: str) -> None:
    proc = run(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: spacrd-sc {command}".rstrip())
    if command:
        assert "examples:\n  spacrd-sc " + command in proc.stdout
        assert "--device" in proc.stdout and "--seed" in proc.stdout and "--overwrite" in proc.stdout


def test_usage_error_exit_code() -> None:
    proc = run("score", "somewhere")  # --model and --out missing
    assert proc.returncode == 2
    assert "the following arguments are required: --model, --out" in proc.stderr


# --------------------------------------------------------------------------------------------------- train
def test_train_from_a_label_column_and_a_geojson(trained: tuple[Path, subprocess.CompletedProcess]) -> None:
    model, proc = trained
    assert {"config.json", "manifest.json", "model.safetensors", "README.md"} <= {p.name for p in model.iterdir()}
    (line,) = proc.stdout.splitlines()
    assert line.startswith(f"model -> {model}: 60 genes, image-less, 1044 spots from 2 section(s) (2")
    card = (model / "README.md").read_text()
    assert "runA (labels: cancer), runB (labels: runB.geojson); 1044 spots, " in card and "classes: Tumor." in card
    assert "runA: reading" in proc.stderr and "(zarr)" in proc.stderr and "(visium)" in proc.stderr
    assert "150 of 522 spots lie inside an annotated polygon" in proc.stderr  # the GeoJSON was read for runB
    # not a terminal: plain, time-stamped log lines and no progress bars
    assert "spacrd-sc INFO " in proc.stderr and "\r" not in proc.stderr and "it/s" not in proc.stderr


def test_train_refusals_before_work(runs: Path, trained: tuple, tmp_path: Path) -> None:
    model, _ = trained
    stamp = (model / "model.safetensors").stat().st_mtime_ns
    again = run("train", runs / "runA.zarr", "--labels", "cancer", "--out", model)
    assert again.returncode == 1 and errors(again) == [
        f"spacrd-sc: error: FileExistsError: {model} exists; pass --overwrite to replace it."
    ]
    assert (model / "model.safetensors").stat().st_mtime_ns == stamp

    missing = run("train", runs / "runA.zarr", "--labels", "tumour", "--out", tmp_path / "m2", "--quiet")
    assert missing.returncode == 1
    assert errors(missing)[0].startswith("spacrd-sc: error: KeyError: runA: no label column 'tumour' in the table;")
    assert "INFO" not in missing.stderr  # --quiet
    no_classes = run("train", runs / "runB", "--labels", runs / "runB.geojson", "--out", tmp_path / "m3")
    assert no_classes.returncode == 1 and "pass --cancer-classes" in errors(no_classes)[0]
    inputs = [runs / "runA.zarr", runs / "runB", runs / "runC"]
    twice = run("train", *inputs, "--labels", "a", "--labels", "b", "--out", tmp_path / "m4")
    assert twice.returncode == 1 and "--labels is given 2 times for 3 inputs" in errors(twice)[0]
    assert not any((tmp_path / m).exists() for m in ("m2", "m3", "m4"))


# --------------------------------------------------------------------------------------------------- score
def test_score_visium_zarr_and_a_broken_input(runs: Path, trained: tuple, tmp_path: Path) -> None:
    import spatialdata
    from sklearn.metrics import roc_auc_score

    model, _ = trained
    zarr = section_zarr(runs, "runC", tmp_path / "sectionC.zarr")  # the same unseen section, as a zarr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "notes.txt").write_text("not a section")
    out = tmp_path / "scored"
    proc = run("score", runs / "runC", broken, zarr, "--model", model, "--out", out, "--threshold", "gmm")

    assert proc.returncode == 1  # one input failed ...
    (err,) = errors(proc)
    assert err.startswith(f"spacrd-sc: error: broken: ValueError: Cannot tell the platform of '{broken}'")
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()  # ... and the others were scored, one line each
    assert [line.split(":")[0] for line in lines] == ["runC", "sectionC"]
    assert lines[0].startswith("runC: 522 spots, ") and f"-> {out / 'runC.zarr'}" in lines[0]
    assert not list(out.glob("broken*"))

    for name in ["runC", "sectionC"]:
        sdata = spatialdata.read_zarr(out / f"{name}.zarr")
        t = sdata.tables["table"]
        truth = np.linalg.norm(t.obsm["spatial"] - CENTRE, axis=1) < RADIUS
        score = t.obs["spacrd_score"].to_numpy()
        assert ((score >= 0) & (score <= 1)).all()
        assert roc_auc_score(truth, score) > 0.9, name  # the disc learnt from the GeoJSON is found again
        assert t.obs["spacrd_cancer"].dtype == bool and 0 < t.obs["spacrd_cancer"].mean() < 1
        assert set(t.obs["spacrd_region"].cat.categories) == {"tumour", "boundary", "non-tumour"}
        assert "spacrd_regions" in sdata.shapes
        regions = json.loads((out / f"{name}_regions.geojson").read_text())
        classes = {f["properties"]["classification"]["name"] for f in regions["features"]}
        assert classes == {"tumour", "boundary"}
        assert (out / f"{name}_score.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # outputs are never replaced without --overwrite: refused before any work, files untouched
    png = out / "runC_score.png"
    stamp = png.stat().st_mtime_ns
    refused = run("score", runs / "runC", "--model", model, "--out", out)
    assert refused.returncode == 1 and refused.stdout == ""
    assert errors(refused) == [
        f"spacrd-sc: error: FileExistsError: {out / 'runC.zarr'} exists (and 2 more output(s)); pass --overwrite "
        "to replace it."
    ]
    assert png.stat().st_mtime_ns == stamp
    again = run("score", runs / "runC", "--model", model, "--out", out, "--overwrite", "--quiet")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("runC: 522 spots, ") and "INFO" not in again.stderr
    assert png.stat().st_mtime_ns != stamp
    assert spatialdata.read_zarr(out / "runC.zarr").tables["table"].n_obs == 522


def test_debug_shows_the_traceback(runs: Path, tmp_path: Path) -> None:
    absent = tmp_path / "no_model"
    plain = run("score", runs / "runC", "--model", absent, "--out", tmp_path / "x")
    debug = run("score", runs / "runC", "--model", absent, "--out", tmp_path / "x", "--debug")
    for proc in (plain, debug):
        assert proc.returncode == 1
        (err,) = errors(proc)
        assert err.startswith("spacrd-sc: error: FileNotFoundError:") and str(absent) in err
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr and debug.stderr.rstrip().endswith(err)


@pytest.mark.slow
def test_train_and_score_with_he_features(runs: Path, trained: tuple, tmp_path: Path) -> None:
    """``--backbone`` / ``--weights``: H&E patch features of a small timm network (random weights written to a
    local file) at training and at scoring; scoring that model without them is refused before any section."""
    import timm
    import torch

    weights = tmp_path / "tiny.pth"
    net = timm.create_model(TINY_BACKBONE, pretrained=False, num_classes=0)
    torch.save(net.state_dict(), weights)
    dim = int(net.eval()(torch.zeros(1, 3, 224, 224)).shape[1])  # the pooled feature size (1024 here)
    he = ["--backbone", TINY_BACKBONE, "--weights", weights]
    model = tmp_path / "he_model"
    proc = run("train", runs / "runA.zarr", "--labels", "cancer", "--out", model, *QUICK, *he)
    assert proc.returncode == 0, proc.stderr
    assert f"60 genes, {dim} H&E features ({TINY_BACKBONE})" in proc.stdout
    assert f"{TINY_BACKBONE} (tiny.pth)" in (model / "README.md").read_text()

    out = tmp_path / "o"
    refused = run("score", runs / "runC", "--model", model, "--out", out)
    assert refused.returncode == 1 and f"uses {dim} H&E features per spot: pass --backbone" in errors(refused)[0]
    assert not out.exists()
    scored = run("score", runs / "runC", "--model", model, "--out", out, *he)
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.startswith("runC: 522 spots, ") and "runC: H&E features with" in scored.stderr


@pytest.mark.realdata
def test_score_a_real_her2st_section(her2st_dir: Path, trained: tuple, tmp_path: Path) -> None:
    """A legacy ST folder (counts + spot file of her2st G2, as published) scored by the model trained above:
    its genes are real her2st symbols."""
    import spatialdata

    folder = tmp_path / "G2"
    folder.mkdir()
    shutil.copy(her2st_dir / "data" / "ST-cnts" / "G2.tsv.gz", folder)
    shutil.copy(her2st_dir / "data" / "ST-spotfiles" / "G2_selection.tsv", folder)
    model, _ = trained
    proc = run("score", folder, "--model", model, "--out", tmp_path / "out", "--threshold", "gmm")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("G2: 467 spots, ")
    assert "(legacy_st)" in proc.stderr
    t = spatialdata.read_zarr(tmp_path / "out" / "G2.zarr").tables["table"]
    assert t.n_obs == 467 and t.obs["spacrd_score"].between(0, 1).all()


@pytest.mark.realdata
@pytest.mark.slow
def test_score_with_the_ready_her2st_model(data_dir: Path, runs: Path, tmp_path: Path) -> None:
    """``--model her2st``: the ready model, trained for the folder's genes (2 epochs, into a fresh cache)."""
    env = {"SPACRD_DATA_DIR": str(data_dir), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run("score", runs / "runC", "--model", "her2st", "--epochs", "2", "--out", tmp_path / "o", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("runC: 522 spots, ")
    assert "Training the her2st model on 3481 spots" in proc.stderr


# ---------------------------------------------------------------------------------------------------- demo
@pytest.mark.realdata
@pytest.mark.slow
def test_demo(data_dir: Path, her2st_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run("demo", "--out", out, *QUICK, env={"SPACRD_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("G2 (held out; trained on B1 D1 E1 H1): AUC ")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 467 and metrics["auc"] > 0.75  # 0.92 with the default schedule
    assert f"AUC {metrics['auc']:.3f}" in proc.stdout
    assert (out / "G2_score.png").stat().st_size > 10_000
    header = (out / "G2_scores.csv").read_text().splitlines()[0]
    assert header == "spot,x,y,spacrd_score,spacrd_cancer,spacrd_region,pathology,cancer"
    assert (out / "model" / "README.md").is_file()


def test_demo_refuses_a_bad_section_before_work(tmp_path: Path) -> None:
    proc = run("demo", "--out", tmp_path / "d", "--target", "B1")
    assert proc.returncode == 1
    assert errors(proc) == [
        "spacrd-sc: error: ValueError: The held-out section B1 is also a training section (B1,D1,E1,H1)."
    ]


# ----------------------------------------------------------------------------------------------- the code
@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_cli_uses_only_the_public_api(path: Path) -> None:
    """The command line is built over ``spacrd_sc``'s public names only (it can do nothing the API does not)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:  # from .. import X (the package)
            assert node.module is None, ast.dump(node)
            assert all(not a.name.startswith("_") or a.name == "__version__" for a in node.names), ast.dump(node)
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("spacrd_sc"):
            raise AssertionError(f"{path.name}: import the package as `import spacrd_sc as sc_crd`")
        if isinstance(node, ast.Attribute):
            parts, root = [], node
            while isinstance(root, ast.Attribute):
                parts.append(root.attr)
                root = root.value
            if isinstance(root, ast.Name) and root.id == "sc_crd":
                assert not any(p.startswith("_") for p in parts), f"{path.name}: sc_crd.{'.'.join(reversed(parts))}"
