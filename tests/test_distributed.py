"""Several processes and many sections through existing engines: torch.distributed (torchrun, gloo, 2 CPU
processes) and dask.distributed (a LocalCluster mapping ``tl.score_zarr`` over sections stored as zarr).

What a 2-process run shares with one process (checked below):

* extraction: the same features, row for row (each rank runs the same backbone on the same batches; only the
  number of CPU threads differs, hence a float tolerance);
* training: the same global batches, the same contrastive loss over each whole batch, gradients averaged by DDP;
  but **not** bit-identical weights, because (1) BatchNorm normalises each rank's half of a batch with that
  half's statistics (SyncBatchNorm needs CUDA) and its running statistics come from rank 0's halves, (2) the
  fusion losses are averaged per rank, then over ranks (halves differ by at most one spot), (3) each rank draws
  its dropout masks for its own half, and (4) gradients are summed in another order. So the test compares model
  quality (AUC on a held-out section), and checks that both ranks end with the same model and scores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
from _helpers import distributed as work
from _helpers.sections import make_section, with_graph
from sklearn.metrics import roc_auc_score

import spacrd_sc as sc_crd
from spacrd_sc import _distributed

TESTS = Path(__file__).resolve().parent
#: Largest AUC drop on the held-out section allowed for the 2-process model against the 1-process one.
AUC_TOLERANCE = 0.05
#: Threaded dask workers: worker processes score the same way, but starting them and importing torch in each took
#: about a minute on the shared 2-core test machine (61 s for this test, against 9 s with threads).
PROCESSES = False


# ------------------------------------------------------------------------------------------------ one process
def test_helpers_without_a_process_group():
    """Without an initialised group every helper leaves the single-process path unchanged."""
    assert not _distributed.is_distributed() and _distributed.world_size() == 1 and _distributed.is_main()
    assert _distributed.block(10) == range(10)
    b = np.arange(7)
    assert _distributed.rank_part(b) is b
    x = np.ones((3, 2), dtype=np.float32)
    assert _distributed.gather_rows(x) is x
    t = torch.ones(3, requires_grad=True)
    assert _distributed.gather_with_grad(t, 3) is t
    net = torch.nn.Linear(2, 2)
    assert _distributed.ddp(net, "cpu") is net


def test_blocks_cover_everything_once():
    assert _distributed.block_sizes(10, 3) == [4, 3, 3]
    blocks = [_distributed.block(10, rank_=r, world=3) for r in range(3)]
    assert blocks == [range(0, 4), range(4, 7), range(7, 10)]
    assert [_distributed.block(1, rank_=r, world=2) for r in range(2)] == [range(0, 1), range(1, 1)]


# ------------------------------------------------------------------------------------------------ torchrun
def _sections(folder: Path, tiny_legacy_st: dict) -> tuple[ad.AnnData, ad.AnnData]:
    """Write the worker's inputs: a legacy-ST section with an image (zarr), 2 training sections and a target."""
    section = sc_crd.io.legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], tiny_legacy_st["image"])
    section.write(folder / "section.zarr")
    secs = {f"S{i}": make_section(f"S{i}", seed=i, image_dim=16, depth=[1.0, 0.6][i]) for i in range(2)}
    train = with_graph(ad.concat(secs, label="section"), "section")
    target = with_graph(make_section("T", seed=11, image_dim=16, depth=0.8))
    train.write_h5ad(folder / "train.h5ad")
    target.write_h5ad(folder / "target.h5ad")
    return train, target


def _torchrun(folder: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=<nproc> _helpers/distributed.py <folder>`` (same interpreter)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(TESTS / "_helpers" / "distributed.py"),
        str(folder),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_torchrun_two_processes_match_one(tmp_path, tiny_legacy_st):
    import spatialdata as sd

    train, target = _sections(tmp_path, tiny_legacy_st)
    t0 = time.perf_counter()
    proc = _torchrun(tmp_path)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    res = np.load(tmp_path / "result.npz")
    assert int(res["world_size"]) == 2 and int(res["recorded_world_size"]) == 2
    assert bool(res["gather_gradient_ok"])  # the contrastive stage's gradient is the one-process gradient

    # extraction: the features of one process, within float tolerance (threads differ), and on both ranks
    torch.manual_seed(0)
    one = work.extract(sd.read_zarr(tmp_path / "section.zarr"))
    assert bool(res["same_feats"])
    assert res["feats"].shape == one.shape
    np.testing.assert_allclose(res["feats"], one, rtol=1e-4, atol=1e-5)

    # training: the same model and scores on both ranks; the quality of the one-process model
    assert bool(res["same_scores"]) and bool(res["same_history"])
    _, one_scores = work.train_and_score(train, target.copy())
    y = target.obs["cancer"].to_numpy()
    auc_one, auc_two = roc_auc_score(y, one_scores), roc_auc_score(y, res["scores"])
    print(
        f"torchrun 2 processes: {elapsed:.1f} s; held-out AUC 1 process {auc_one:.4f}, 2 processes {auc_two:.4f}; "
        f"max |score difference| {np.abs(one_scores - res['scores']).max():.3g}"
    )
    assert auc_one > 0.9
    assert auc_two >= auc_one - AUC_TOLERANCE

    # the folder rank 0 alone wrote (both ranks called save) holds that model: the same scores, up to float
    # rounding (torchrun runs each rank on one thread, this process on several: sums are ordered differently;
    # a different model would differ by ~1e-2, as the one-process model does)
    loaded = sc_crd.SpaCRD.load(tmp_path / "model", device="cpu")
    again = target.copy()
    sc_crd.tl.cancer_score(again, loaded)
    np.testing.assert_allclose(again.obs["spacrd_score"].to_numpy(), res["scores"], rtol=0, atol=1e-6)
    assert loaded.training_params["fusion"]["world_size"] == 2
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind by a second writer


# ------------------------------------------------------------------------------------------------ dask
def _small_model(folder: Path) -> Path:
    """A small expression-only model trained on 2 synthetic sections, saved in ``folder``."""
    secs = {f"S{i}": make_section(f"S{i}", seed=i, depth=[1.0, 0.6][i], nx=14, ny=10) for i in range(2)}
    train = with_graph(ad.concat(secs, label="section"), "section")
    kw = {"device": "cpu", "progress_bar": False, "batch_size": 128}
    model = sc_crd.tl.align(train, n_top_genes=60, epochs=1, model_kwargs=work.MODEL, amp=True, **kw)
    sc_crd.tl.fit_vrbca(train, model, epochs=3, fused_epochs=1, lr=5e-3, amp=True, **kw)  # amp: no-op on the CPU
    model.save(folder)
    return folder


def _section_zarr(path: Path, name: str, seed: int) -> ad.AnnData:
    """A synthetic section (with its squidpy graph) stored as SpatialData zarr with one table; returns the table."""
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    table = with_graph(make_section(name, seed=seed, nx=12, ny=10))
    SpatialData(tables={"table": TableModel.parse(table.copy())}).write(path)
    return table


@pytest.fixture
def zarr_sections(tmp_path):
    model = _small_model(tmp_path / "model")
    tables = {f"T{i}": _section_zarr(tmp_path / f"T{i}.zarr", f"T{i}", 20 + i) for i in range(2)}
    return model, tables, tmp_path


def test_dask_local_cluster_scores_two_sections(zarr_sections):
    """Two dask workers score two stores with ``client.map``; the tables read back hold the in-process scores."""
    import spatialdata as sd

    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    model_dir, tables, folder = zarr_sections
    paths = [str(folder / f"{name}.zarr") for name in tables]
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=PROCESSES, dashboard_address=None) as c,
        distributed.Client(c) as client,
    ):
        futures = client.map(sc_crd.tl.score_zarr, paths, model=str(model_dir), device="cpu", threshold="gmm")
        summaries = client.gather(futures)
        assert len(client.scheduler_info()["workers"]) == 2
    assert [s["path"] for s in summaries] == paths
    model = sc_crd.SpaCRD.load(model_dir, device="cpu")
    for (name, table), path, summary in zip(tables.items(), paths, summaries, strict=True):
        back = sd.read_zarr(path).tables["table"]
        sc_crd.tl.cancer_score(table, model, threshold="gmm")  # in this process, on the same section
        # equal up to float rounding (torch in a worker thread may split its sums differently)
        np.testing.assert_allclose(back.obs["spacrd_score"], table.obs["spacrd_score"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(back.obsm["X_spacrd"], table.obsm["X_spacrd"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(back.obs["spacrd_cancer"].to_numpy(), table.obs["spacrd_cancer"].to_numpy())
        assert 0 < back.obs["spacrd_cancer"].sum() < back.n_obs
        assert back.uns["spacrd"]["params"]["threshold"] == "gmm"
        np.testing.assert_array_equal(back.X.toarray(), table.X.toarray())  # the counts survived the rewrite
        assert summary["n_spots"] == table.n_obs and summary["n_called"] == int(table.obs["spacrd_cancer"].sum())
        assert summary["mean_score"] == pytest.approx(float(table.obs["spacrd_score"].mean()), rel=1e-5)
        assert roc_auc_score(table.obs["cancer"], back.obs["spacrd_score"]) > 0.8, name
        assert not (Path(path) / "tables" / "table_spacrd_backup").exists()  # the backup was removed


def test_score_zarr_in_process_and_bad_inputs(zarr_sections):
    model_dir, tables, folder = zarr_sections
    path = folder / "T0.zarr"
    model = sc_crd.SpaCRD.load(model_dir, device="cpu")
    assert model.training_config.amp is True  # tl.align / tl.fit_vrbca pass amp to the TrainingConfig
    summary = sc_crd.tl.score_zarr(path, model, key_added="again")
    assert summary["key_added"] == "again"
    import spatialdata as sd

    back = sd.read_zarr(path).tables["table"]
    assert "again_score" in back.obs and "X_again" in back.obsm
    with pytest.raises(FileNotFoundError, match="No SpatialData zarr store"):
        sc_crd.tl.score_zarr(folder / "absent.zarr", model)
    with pytest.raises(FileNotFoundError, match="No saved SpaCRD model"):
        sc_crd.tl.score_zarr(path, folder / "no_model")
    with pytest.raises(TypeError, match="SpaCRD or the folder"):
        sc_crd.tl.score_zarr(path, 3)
    with pytest.raises(KeyError, match="no table 'cells'"):
        sc_crd.tl.score_zarr(path, model, table_key="cells")
    with pytest.raises(TypeError, match="`copy` is not accepted"):
        sc_crd.tl.score_zarr(path, model, copy=True)
    (path / "tables" / "table_spacrd_backup").mkdir()
    with pytest.raises(ValueError, match="interrupted"):
        sc_crd.tl.score_zarr(path, model)


def test_extract_zarr_writes_the_features_back(tmp_path, tiny_legacy_st):
    import spatialdata as sd

    sdata = sc_crd.io.legacy_st(tiny_legacy_st["counts"], tiny_legacy_st["spots"], tiny_legacy_st["image"])
    path = tmp_path / "section.zarr"
    sdata.write(path)
    torch.manual_seed(0)
    summary = sc_crd.tl.extract_zarr(path, **work.EXTRACT)
    torch.manual_seed(0)
    here = work.extract(sdata)  # the same backbone weights, in memory
    back = sd.read_zarr(path)
    np.testing.assert_array_equal(back.tables["table"].obsm["X_uni"], here)
    np.testing.assert_array_equal(back.tables["table"].X.toarray(), sdata.tables["table"].X.toarray())
    assert back.tables["table"].uns["X_uni"]["params"]["backbone"] == "resnet18"
    assert set(back.images) == set(sdata.images) and set(back.shapes) == set(sdata.shapes)  # the rest untouched
    assert summary == {**summary, "n_spots": here.shape[0], "dim": here.shape[1], "key_added": "X_uni"}
    with pytest.raises(TypeError, match="`copy` is not accepted"):
        sc_crd.tl.extract_zarr(path, copy=True)


# ------------------------------------------------------------------------------------------------ one GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_training_on_cuda_as_good_as_fp32():
    """``amp=True`` (bf16 autocast) trains on CUDA to the quality of fp32."""
    secs = {f"S{i}": make_section(f"S{i}", seed=i, image_dim=16, depth=[1.0, 0.6][i]) for i in range(2)}
    train = with_graph(ad.concat(secs, label="section"), "section")
    target = with_graph(make_section("T", seed=11, image_dim=16, depth=0.8))
    kw = {"device": "cuda", "progress_bar": False, "batch_size": 64}
    aucs = {}
    for amp in (False, True):
        model = sc_crd.tl.align(train, n_top_genes=60, epochs=4, model_kwargs=work.MODEL, amp=amp, **kw)
        sc_crd.tl.fit_vrbca(train, model, epochs=6, amp=amp, **kw)
        scored = sc_crd.tl.cancer_score(target, model, copy=True)
        aucs[amp] = roc_auc_score(target.obs["cancer"], scored.obs["spacrd_score"])
    assert aucs[False] > 0.9 and aucs[True] >= aucs[False] - AUC_TOLERANCE, aucs
