"""The work of tests/test_distributed.py, run once in the test process and once under ``torchrun`` (2 processes).

``python -m torch.distributed.run --standalone --nproc_per_node=2 distributed.py <folder>`` (what ``torchrun`` runs)
starts two processes that join a gloo group, then

1. extract backbone features from ``<folder>/section.zarr`` (a random-init resnet18; rank 1 seeds its own
   random weights differently, so only the package's weight broadcast makes the ranks agree);
2. train a small SpaCRD model on ``<folder>/train.h5ad`` (DDP), score ``<folder>/target.h5ad`` on every rank and
   save the model (``model.save`` on every rank: rank 0 alone writes);
3. check :func:`spacrd_sc._distributed.gather_with_grad`'s gradient on a known batch;
4. rank 0 writes ``<folder>/result.npz``: the features, the target scores, the world size the model recorded, and
   whether every rank got the same features, scores and loss history and the expected gradient.

The test runs :func:`extract` and :func:`train_and_score` in one process on the same inputs and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: Extraction settings (a tiny CNN on small patches; batches of 4 → several batches per rank).
EXTRACT = {"backbone": "resnet18", "pretrained": False, "size": 32, "batch_size": 4, "device": "cpu"}
#: Training settings: the small network of the tl tests, one member, batches of 64 spots (several per epoch).
MODEL = {"hidden_dims": (64, 32, 32), "n_heads": 4, "latent_dim": 8, "n_members": 1}
TRAIN = {"batch_size": 64, "device": "cpu", "seed": 0, "progress_bar": False}
ALIGN_EPOCHS, FUSION_EPOCHS = 4, 6


def extract(sdata) -> np.ndarray:
    """Backbone features of every spot of ``sdata`` (``obsm['X_uni']`` of its table)."""
    import spacrd_sc as sc_crd

    sc_crd.tl.extract_uni(sdata, progress_bar=False, **EXTRACT)
    return np.asarray(sdata.tables["table"].obsm["X_uni"])


def train_and_score(train, target):
    """Align + fit on ``train`` (sections in ``obs['section']``, image features in ``obsm['X_uni']``) and score
    ``target``; returns the model and the target's scores."""
    import spacrd_sc as sc_crd

    model = sc_crd.tl.align(train, n_top_genes=60, epochs=ALIGN_EPOCHS, model_kwargs=MODEL, **TRAIN)
    sc_crd.tl.fit_vrbca(train, model, epochs=FUSION_EPOCHS, **TRAIN)
    sc_crd.tl.cancer_score(target, model)
    return model, target.obs["spacrd_score"].to_numpy()


def _same_on_all_ranks(x: np.ndarray) -> bool:
    import torch.distributed as dist

    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, np.asarray(x))
    return all(np.array_equal(every[0], e) for e in every)


def _gather_gradient_ok() -> bool:
    """``gather_with_grad`` on this rank's rows of a known (5, 2) batch: the gathered rows are the batch, and the
    gradient of ``sum(w * rows)`` reaching this rank's rows is ``world_size × w`` of them (DDP's averaging then
    gives the one-process gradient)."""
    import torch
    import torch.distributed as dist

    from spacrd_sc import _distributed

    full = torch.arange(10.0).view(5, 2)
    weights = torch.linspace(-1.0, 1.0, 10).view(5, 2)
    part = _distributed.block(5)
    x = full[part.start : part.stop].clone().requires_grad_()
    rows = _distributed.gather_with_grad(x, 5)
    (rows * weights).sum().backward()
    expected = dist.get_world_size() * weights[part.start : part.stop]
    return bool(torch.equal(rows.detach(), full) and torch.allclose(x.grad, expected))


def main(folder: str) -> None:
    import anndata as ad
    import spatialdata as sd
    import torch
    import torch.distributed as dist

    out = Path(folder)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0 if rank == 0 else 1234)  # different random backbones before the package's broadcast
    feats = extract(sd.read_zarr(out / "section.zarr"))
    model, scores = train_and_score(ad.read_h5ad(out / "train.h5ad"), ad.read_h5ad(out / "target.h5ad"))
    model.save(out / "model")  # every rank calls it, as a user's script would
    history = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in sorted(model.history.items())])
    same = {k: _same_on_all_ranks(v) for k, v in {"feats": feats, "scores": scores, "history": history}.items()}
    grads_ok = [None] * dist.get_world_size()
    dist.all_gather_object(grads_ok, _gather_gradient_ok())
    if rank == 0:
        np.savez(
            out / "result.npz",
            feats=feats,
            scores=scores,
            world_size=dist.get_world_size(),
            recorded_world_size=model.training_params["fusion"].get("world_size", 1),
            gather_gradient_ok=all(grads_ok),
            **{f"same_{k}": v for k, v in same.items()},
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
