"""Training and inference loops of SpaCRD (no validation here: callers check inputs).

The loops take arrays, networks and a :class:`~spacrd_sc.model._config.TrainingConfig` and return networks,
history and the parameters to record (:class:`Trained`); none of them touches a :class:`~spacrd_sc.SpaCRD`,
which alone sets its own attributes (this module does not import it).

Inside an initialised ``torch.distributed`` process group (``torchrun``) the training loops run data-parallel:
every rank draws the same global batches and trains on its own contiguous part of each, through
:class:`~torch.nn.parallel.DistributedDataParallel` (``spacrd_sc/_distributed.py`` says what is and is not the same
as one process). Inference (:func:`infer`) is not split: every rank scores all spots.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _distributed
from .._logging import logger
from .._utils import _progress
from ._config import ModelConfig, TrainingConfig
from ._data import epoch_batches, local_clusters, neighbourhood_mean, neighbourhood_tokens
from ._modules import SpaCRDNet, info_nce

#: Spots per compact neighbourhood group when ``batching="local"``.
GROUP_SIZE = 16


@contextlib.contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Seed torch for a block, with deterministic kernels, and restore the caller's RNG and settings afterwards.

    Deterministic kernels matter on the CPU too: the backward pass of the neighbour gather accumulates into
    repeated rows, which multi-threaded kernels otherwise sum in a varying order (differences of ~1e-8
    that grow over epochs). ``warn_only`` keeps ops without a deterministic variant usable.
    """
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def autocast(device: str, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    if amp and device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _bar(epochs: int, desc: str, progress_bar: bool):
    return _progress(range(epochs), desc=desc, disable=not progress_bar, leave=False)


def _bar_desc(stage: str, member: int, k: int) -> str:
    """Progress-bar label of one member's training: ``stage``, plus ``network i/k`` in an ensemble of ``k``."""
    return f"{stage}, network {member + 1}/{k}" if k > 1 else stage


# ---------------------------------------------------------------------- several processes (torch.distributed)
# With an initialised process group every rank draws the same global batches (same seed) and trains on its own
# contiguous part of each; DDP averages the gradients. In one process the same code runs on whole batches.
def _global_batches(
    n: int, batch_size: int, rng: np.random.Generator, groups: list[np.ndarray] | None = None
) -> list[np.ndarray]:
    """:func:`epoch_batches`, with a trailing batch too small to leave 2 spots to every rank (BatchNorm) merged
    into the one before (the same batches as :func:`epoch_batches` in one process)."""
    batches = epoch_batches(n, batch_size, rng, groups)
    if len(batches) > 1 and len(batches[-1]) < _distributed.min_global_batch():
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return batches


def _check_world(batch_size: int, n: int) -> None:
    """Refuse a schedule that cannot give every rank at least 2 spots per batch."""
    least = _distributed.min_global_batch()
    if min(batch_size, n) < least:
        raise ValueError(
            f"Training on {_distributed.world_size()} processes needs at least {least} spots per batch (2 per "
            f"process, for BatchNorm); got batch_size={batch_size} and {n} spots."
        )


class _AlignStep(nn.Module):
    """Stage-1 forward of a batch (DDP needs one module whose ``forward`` runs every trained weight): the two
    views' embeddings. With one encoder both views pass it together, so BatchNorm sees both."""

    def __init__(self, encoders: list[nn.Module], views: list[torch.Tensor]) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.views = views  # plain attributes, not buffers: DDP would broadcast buffers at every step

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.views[0][idx], self.views[1][idx]
        if len(self.encoders) == 2:
            return self.encoders[0](a), self.encoders[1](b)
        z = self.encoders[0](torch.cat([a, b]))
        return z[: len(idx)], z[len(idx) :]


class _FusionStep(nn.Module):
    """Stages 2 + 3 losses of a batch of centre spots, as one module for DDP (the VAE loss reads the class prior
    means, parameters that DDP must see used inside ``forward``): ``recon``, ``kl`` and ``fused`` with the VAE,
    ``bce`` and ``cls`` when ``classify``."""

    def __init__(
        self,
        net: SpaCRDNet,
        data: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor],
        loss_weights: tuple[float, float],
        amp: bool,
    ) -> None:
        super().__init__()
        self.net = net
        self.feats, self.neighbors, self.y = data  # plain attributes, as in _AlignStep
        self.loss_weights, self.amp = loss_weights, amp

    def forward(self, idx: torch.Tensor, classify: bool) -> dict[str, torch.Tensor]:
        beta, gamma = self.loss_weights
        yb = self.y[idx]
        with autocast(idx.device.type, self.amp):
            h, logit, recon, mu, logvar = _forward_batch(self.net, self.feats, idx, self.neighbors)
        parts: dict[str, torch.Tensor] = {}
        if self.net.vae is not None:
            parts["recon"], parts["kl"] = self.net.vae.loss(h, recon.float(), mu.float(), logvar.float(), yb)
            parts["fused"] = parts["recon"] + beta * parts["kl"]
        if classify:
            parts["bce"] = F.binary_cross_entropy_with_logits(logit.float(), yb.float())
            parts["cls"] = parts["bce"] + gamma * parts["fused"] if "fused" in parts else parts["bce"]
        return parts


def train_alignment(
    net: SpaCRDNet,
    views: list[torch.Tensor],
    *,
    schedule: TrainingConfig,
    loss_weights: tuple[float, float],
    rng: np.random.Generator,
    device: str,
    progress_bar: bool,
    desc: str = "SpaCRD alignment",
) -> list[float]:
    """Stage 1: InfoNCE between two paired views of the same spots, ``schedule.align_epochs`` epochs (resolved, an
    integer) of Adam at ``schedule.align_lr``; ``loss_weights`` are ``(τ, α)``.

    ``views`` are two ``(n, d)`` tensors. With two encoders (image, gene) view 0 goes through the image
    encoder and view 1 through the gene encoder; with one encoder both views (a spot and the mean of its
    neighbours) go through it in a single pass, so BatchNorm sees both. Returns the per-epoch mean loss.
    """
    temperature, alpha = loss_weights
    epochs, amp = schedule.align_epochs, schedule.amp
    batch_size = int(min(schedule.batch_size, views[0].shape[0]))
    encoders = net.encoders()
    params = [p for e in encoders for p in e.parameters()]
    opt = torch.optim.Adam(params, lr=schedule.align_lr)
    for e in encoders:
        e.train()
    n = views[0].shape[0]
    _check_world(batch_size, n)
    step = _distributed.ddp(_AlignStep(encoders, views), device)
    history: list[float] = []
    bar = _bar(epochs, desc, progress_bar)
    for _ in bar:
        total, seen = 0.0, 0
        for b in _global_batches(n, batch_size, rng):
            idx = torch.from_numpy(_distributed.rank_part(b)).to(device)
            with autocast(device, amp):
                za, zb = step(idx)
                # the loss of the whole global batch on every rank: in-batch negatives as in one process
                za, zb = (_distributed.gather_with_grad(z.float(), len(b)) for z in (za, zb))
                loss = info_nce(za, zb, temperature, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            seen += len(b)
        history.append(total / seen)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    _distributed.sync_module(net)
    return history


def _forward_batch(net: SpaCRDNet, feats: list[torch.Tensor], idx: torch.Tensor, neighbors: torch.Tensor):
    """``net``'s outputs ``(h*, logit, ĥ, μ, log σ²)`` for a batch of centre spots ``idx``, encoding each distinct
    row the batch needs once."""
    unique, inverse, mask = neighbourhood_tokens(idx, neighbors)
    tokens = [enc(x[unique]) for enc, x in zip(net.encoders(), feats, strict=True)]
    return net(tokens, inverse, mask)


def train_fusion(
    net: SpaCRDNet,
    feats: list[torch.Tensor],
    neighbors: tuple[torch.Tensor, np.ndarray],
    y: torch.Tensor,
    *,
    schedule: TrainingConfig,
    loss_weights: tuple[float, float],
    rng: np.random.Generator,
    device: str,
    progress_bar: bool,
    desc: str = "SpaCRD fusion",
) -> dict[str, list[float]]:
    """Stages 2 + 3: ``schedule.fused_epochs`` of ``L_fused``, then ``L_cls = BCE + γ·L_fused``; all weights train.

    ``neighbors`` is the neighbour table on the device and as a numpy array (for the local batches);
    ``loss_weights`` are ``(β, γ)``; ``schedule.fused_epochs`` must be resolved (an integer).

    Returns per-epoch means: ``fused``, ``recon``, ``kl`` (every epoch, with the VAE), ``bce`` and ``cls``
    (classifier epochs).
    """
    nbr_t, nbr_np = neighbors
    opt = torch.optim.Adam(net.parameters(), lr=schedule.fusion_lr)
    net.train()
    n = nbr_t.shape[0]
    groups = local_clusters(nbr_np, GROUP_SIZE, rng) if schedule.batching == "local" else None
    batch_size = int(min(schedule.batch_size, n))
    _check_world(batch_size, n)
    step = _FusionStep(net, (feats, nbr_t, y), loss_weights, schedule.amp)
    # unused parameters: the discriminator takes no part in the L_fused-only epochs
    step = _distributed.ddp(step, device, find_unused_parameters=True)
    history: dict[str, list[float]] = defaultdict(list)
    bar = _bar(schedule.fusion_epochs, desc, progress_bar)
    for epoch in bar:
        classify = net.vae is None or epoch >= schedule.fused_epochs
        sums: dict[str, float] = defaultdict(float)
        seen = 0
        for b in _global_batches(n, batch_size, rng, groups):
            idx = torch.from_numpy(_distributed.rank_part(b)).to(device)
            parts = step(idx, classify)
            loss = parts["cls"] if classify else parts["fused"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in parts.items():
                sums[k] += float(v.detach()) * len(idx)
            seen += len(idx)
        keys = list(sums)  # the same keys, in the same order, on every rank
        totals = _distributed.all_reduce_sum(np.array([*(sums[k] for k in keys), seen], dtype=np.float64))
        for k, v in zip(keys, totals[:-1], strict=True):
            history[k].append(float(v / totals[-1]))
        shown = "cls" if classify else "fused"
        bar.set_postfix({shown: f"{history[shown][-1]:.4f}"})
    _distributed.sync_module(net)
    return dict(history)


@torch.inference_mode()
def infer(
    net: SpaCRDNet,
    feats: list[torch.Tensor],
    neighbors: torch.Tensor,
    *,
    batch_size: int,
    device: str,
    amp: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One eval-mode pass over all spots: ``(proba, embedding)``, the cancer probability ``(n,)`` and ``h*``
    ``(n, d)``, both float32.

    Every row is encoded once; each batch projects attention keys and values once per distinct spot and
    gathers the neighbourhood sequences from those. The VAE uses ``z = μ`` and the discriminator reads
    ``[μ, log σ²]``: no label is involved.
    """
    net.eval()
    n = neighbors.shape[0]
    probas, embeddings = [], []
    with autocast(device, amp):
        tokens = [
            torch.cat([enc(x[i : i + batch_size]).float() for i in range(0, n, batch_size)])
            for enc, x in zip(net.encoders(), feats, strict=True)
        ]
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(i + batch_size, n), device=device)
            unique, inverse, mask = neighbourhood_tokens(idx, neighbors)
            h, logit, *_ = net([z[unique] for z in tokens], inverse, mask)
            embeddings.append(h)
            probas.append(torch.sigmoid(logit.float()))

    def _np(parts: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(parts).cpu().numpy().astype(np.float32, copy=False)

    return _np(probas), _np(embeddings)


# ---------------------------------------------------------------------- fitting the members of a model
class Trained(NamedTuple):
    """What a training run returns; :class:`~spacrd_sc.SpaCRD` stores it."""

    #: The trained networks (one per ensemble member), on the training device.
    nets: list[SpaCRDNet]
    #: Per-epoch losses, averaged over the members.
    history: dict[str, list[float]]
    #: Entries for ``SpaCRD.training_params`` (``"alignment"`` or ``"fusion"``, and ``"pca"`` when a gene PCA was
    #: fitted).
    params: dict[str, dict[str, Any]]


def build_net(cfg: ModelConfig, seed: int) -> SpaCRDNet:
    """A freshly initialised network (on the CPU) for configuration ``cfg``, weights drawn from ``seed``."""
    with seeded(seed, "cpu"):
        return SpaCRDNet(
            len(cfg.genes) if cfg.mode != "image" else None,
            cfg.n_image_features if cfg.mode in ("both", "image") else None,
            hidden_dims=cfg.hidden_dims,
            dropout=cfg.dropout,
            n_heads=cfg.n_heads,
            latent_dim=cfg.latent_dim,
            use_cross_attention=cfg.use_cross_attention,
            use_vae=cfg.use_vae,
            n_pcs=cfg.n_pcs,
        )


def _fit_pca(net: SpaCRDNet, feats: list[np.ndarray], seed: int) -> dict[str, Any] | None:
    """Fit ``net``'s gene-encoder PCA projection (if any) on the gene features of the training spots; the record."""
    enc = net.gene_encoder
    if enc is None or enc.n_pcs is None:
        return None
    t0 = time.perf_counter()
    explained = enc.fit_pca(feats[-1], seed)
    logger.info("SpaCRD: %d gene PCs explain %.1f%% of the variance.", enc.n_pcs, 100 * explained)
    return {
        "n_pcs": enc.n_pcs,
        "n_spots": int(feats[-1].shape[0]),
        "variance_explained": round(explained, 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def member_seeds(n_members: int, seed: int) -> list[int]:
    """Training seed of each ensemble member: ``seed, seed + 1, …`` (member ``i`` is trained exactly like a
    single model with seed ``seed + i``)."""
    return [int(seed) + i for i in range(n_members)]


def _mean_history(hists: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per-epoch losses averaged over the ensemble members (one member: its own losses)."""
    return {k: [float(np.mean(v)) for v in zip(*(h[k] for h in hists), strict=True)] for k in hists[0]}


def _record(train: TrainingConfig, epochs: int, lr: float, n_members: int, device: str) -> dict[str, Any]:
    """The settings of one stage as ``training_params`` records them (``world_size``: processes of a
    ``torch.distributed`` run, recorded only when more than one)."""
    record = {
        "epochs": int(epochs),
        "batch_size": train.batch_size,
        "lr": float(lr),
        "seed": train.seed,
        "member_seeds": member_seeds(n_members, train.seed),
        "device": device,
    }
    if _distributed.is_distributed():
        record["world_size"] = _distributed.world_size()
    return record


def run_alignment(
    cfg: ModelConfig,
    train: TrainingConfig,
    feats: list[np.ndarray],
    nbr: np.ndarray,
    *,
    device: str,
    progress_bar: bool,
) -> Trained:
    """Stage 1 on checked inputs: build every member from its seed (fitting its gene PCA), train the encoders."""
    if cfg.mode == "both":
        views = feats
    else:
        means, has = neighbourhood_mean(feats[0], nbr)
        if has.sum() < 2:
            raise ValueError("Neighbourhood contrast needs at least 2 spots with neighbours; neighbors is all padding.")
        views = [feats[0][has], means[has]]
    epochs = train.alignment_epochs(cfg.mode)
    t0 = time.perf_counter()
    tensors = [torch.from_numpy(v).to(device) for v in views]
    nets, hists, params = [], [], {}
    for i, s in enumerate(member_seeds(cfg.n_members, train.seed)):
        with seeded(s, device):
            net = build_net(cfg, s).to(device)
            pca = _fit_pca(net, feats, s)
            if pca is not None:
                params["pca"] = pca
            hist = train_alignment(
                net,
                tensors,
                schedule=train.for_stage("alignment", epochs=epochs),
                loss_weights=(cfg.temperature, cfg.alpha),
                rng=np.random.default_rng(s),
                device=device,
                progress_bar=progress_bar,
                desc=_bar_desc("SpaCRD alignment", i, cfg.n_members),
            )
        nets.append(net)
        hists.append({"align": hist})
    history = _mean_history(hists)
    elapsed = time.perf_counter() - t0
    record = _record(train, epochs, train.align_lr, cfg.n_members, device)
    params["alignment"] = {**record, "n_spots": int(views[0].shape[0]), "seconds": round(elapsed, 2)}
    logger.info("SpaCRD alignment: %d epochs in %.1f s (final loss %.4f).", epochs, elapsed, history["align"][-1])
    return Trained(nets, history, params)


def run_fusion(
    cfg: ModelConfig,
    train: TrainingConfig,
    data: tuple[list[np.ndarray], np.ndarray, np.ndarray],
    nets: list[SpaCRDNet],
    *,
    start: str,
    device: str,
    progress_bar: bool,
) -> Trained:
    """Stages 2 + 3 on checked inputs ``data = (feats, neighbors, labels)``, per member.

    ``train.fused_epochs`` must be resolved (an integer). ``start`` says where each member starts:
    ``"continue"`` trains ``nets`` further (a fitted model); ``"aligned"`` keeps their aligned encoders and draws
    fresh fusion, VAE and discriminator from the member's seed; ``"fresh"`` draws the whole network from the seed
    (fitting its gene PCA). ``nets`` are trained in place (on ``device``) and returned.
    """
    feats, nbr, labels = data
    if train.fused_epochs is None:
        raise ValueError("run_fusion needs a resolved fused_epochs (model._data.resolve_fused_epochs).")
    t0 = time.perf_counter()
    tensors = [torch.from_numpy(f).to(device) for f in feats]
    nbr_t, labels_t = torch.from_numpy(nbr).to(device), torch.from_numpy(labels).to(device)
    nets, hists, params = list(nets), [], {}
    for i, s in enumerate(member_seeds(cfg.n_members, train.seed)):
        with seeded(s, device):
            if start != "continue":
                fresh = build_net(cfg, s).to(device)
                if start == "aligned":
                    for name in ("fusion", "vae", "discriminator"):
                        setattr(nets[i], name, getattr(fresh, name))
                else:
                    nets[i] = fresh
                    pca = _fit_pca(fresh, feats, s)
                    if pca is not None:
                        params["pca"] = pca
            hists.append(
                train_fusion(
                    nets[i],
                    tensors,
                    (nbr_t, nbr),
                    labels_t,
                    schedule=train,
                    loss_weights=(cfg.beta, cfg.gamma),
                    rng=np.random.default_rng(s),
                    device=device,
                    progress_bar=progress_bar,
                    desc=_bar_desc("SpaCRD fusion", i, cfg.n_members),
                )
            )
    elapsed = time.perf_counter() - t0
    record = _record(train, train.fusion_epochs, train.fusion_lr, cfg.n_members, device)
    params["fusion"] = {
        **record,
        "fused_epochs": train.fused_epochs,
        "batching": train.batching,
        "n_spots": int(len(labels)),
        "n_cancer": int(labels.sum()),
        "seconds": round(elapsed, 2),
    }
    logger.info("SpaCRD fusion: %d epochs in %.1f s.", train.fusion_epochs, elapsed)
    return Trained(nets, _mean_history(hists), params)
