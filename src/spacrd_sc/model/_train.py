"""Training and inference loops of SpaCRD on device tensors (no validation here: callers check inputs)."""

from __future__ import annotations

import contextlib
import copy
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .._logging import logger
from .._utils import _progress
from ._data import epoch_batches, local_clusters, neighbourhood_mean, neighbourhood_tokens
from ._modules import SpaCRDNet, info_nce, section_shift

if TYPE_CHECKING:
    from ._config import ModelConfig
    from ._spacrd import SpaCRD

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


def _bar_desc(stage: str, member: int, model: SpaCRD) -> str:
    """Progress-bar label of one member's training: ``stage``, plus ``network i/k`` in an ensemble."""
    k = model._cfg.n_members
    return f"{stage}, network {member + 1}/{k}" if k > 1 else stage


def train_alignment(
    net: SpaCRDNet,
    views: list[torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    temperature: float,
    alpha: float,
    rng: np.random.Generator,
    device: str,
    progress_bar: bool,
    amp: bool = False,
    desc: str = "SpaCRD alignment",
) -> list[float]:
    """Stage 1: InfoNCE between two paired views of the same spots.

    ``views`` are two ``(n, d)`` tensors. With two encoders (image, gene) view 0 goes through the image
    encoder and view 1 through the gene encoder; with one encoder both views (a spot and the mean of its
    neighbours) go through it in a single pass, so BatchNorm sees both. Returns the per-epoch mean loss.
    """
    encoders = net.encoders()
    params = [p for e in encoders for p in e.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    for e in encoders:
        e.train()
    n = views[0].shape[0]
    history: list[float] = []
    bar = _bar(epochs, desc, progress_bar)
    for _ in bar:
        total, seen = 0.0, 0
        for b in epoch_batches(n, batch_size, rng):
            idx = torch.from_numpy(b).to(device)
            with autocast(device, amp):
                if len(encoders) == 2:
                    za, zb = encoders[0](views[0][idx]), encoders[1](views[1][idx])
                else:
                    z = encoders[0](torch.cat([views[0][idx], views[1][idx]]))
                    za, zb = z[: len(idx)], z[len(idx) :]
                loss = info_nce(za.float(), zb.float(), temperature, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.append(total / seen)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


def _forward_batch(
    net: SpaCRDNet, feats: list[torch.Tensor], idx: torch.Tensor, neighbors: torch.Tensor, gene_dropout: float = 0.0
):
    """``net``'s outputs ``(h*, logit, ĥ, μ, log σ²)`` for a batch of centre spots ``idx``, encoding each distinct
    row the batch needs once. With ``gene_dropout`` p > 0 each gene input of each row is zeroed with probability p
    (the others scaled by 1 / (1 − p)) before the encoder and the linear skip see it."""
    unique, inverse, mask = neighbourhood_tokens(idx, neighbors)
    rows = [x[unique] for x in feats]
    if gene_dropout > 0 and net.gene_encoder is not None:  # genes are the last stream
        rows[-1] = F.dropout(rows[-1], gene_dropout)
    tokens = [enc(x) for enc, x in zip(net.encoders(), rows, strict=True)]
    return net(tokens, inverse, mask, rows[-1] if net.linear_skip is not None else None)


def train_fusion(
    net: SpaCRDNet,
    feats: list[torch.Tensor],
    neighbors: torch.Tensor,
    neighbors_np: np.ndarray,
    y: torch.Tensor,
    *,
    epochs: int,
    fused_epochs: int,
    batch_size: int,
    lr: float,
    beta: float,
    gamma: float,
    rng: np.random.Generator,
    device: str,
    progress_bar: bool,
    batching: str = "local",
    amp: bool = False,
    label_smoothing: float = 0.0,
    sections: torch.Tensor | None = None,
    section_alignment: float = 0.0,
    gene_dropout: float = 0.0,
    desc: str = "SpaCRD fusion",
) -> dict[str, list[float]]:
    """Stages 2 + 3: ``fused_epochs`` of ``L_fused``, then ``L_cls = BCE + γ·L_fused``; all weights train.

    With ``label_smoothing`` ε the BCE targets are ``y·(1 − ε) + ε/2`` (the VAE prior still uses the hard class).
    With ``sections`` (integer codes per spot) every epoch adds ``section_alignment ·``
    :func:`~spacrd_sc.model._modules.section_shift` of ``h*`` over the batch to the loss. With ``gene_dropout`` p,
    each gene input is zeroed with probability p in every batch (inverted dropout, see :func:`_forward_batch`).

    Returns per-epoch means: ``fused``, ``recon``, ``kl`` (every epoch, with the VAE), ``bce``, ``cls``
    (classifier epochs) and ``section_shift`` (with ``sections``).
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    n = neighbors.shape[0]
    groups = local_clusters(neighbors_np, GROUP_SIZE, rng) if batching == "local" else None
    history: dict[str, list[float]] = defaultdict(list)
    bar = _bar(epochs, desc, progress_bar)
    for epoch in bar:
        classify = net.vae is None or epoch >= fused_epochs
        sums: dict[str, float] = defaultdict(float)
        seen = 0
        for b in epoch_batches(n, batch_size, rng, groups):
            idx = torch.from_numpy(b).to(device)
            yb = y[idx]
            target = yb.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
            with autocast(device, amp):
                h, logit, recon, mu, logvar = _forward_batch(net, feats, idx, neighbors, gene_dropout)
            parts: dict[str, torch.Tensor] = {}
            if net.vae is not None:
                parts["recon"], parts["kl"] = net.vae.loss(h, recon.float(), mu.float(), logvar.float(), yb)
                parts["fused"] = parts["recon"] + beta * parts["kl"]
            if classify:
                parts["bce"] = F.binary_cross_entropy_with_logits(logit.float(), target)
                parts["cls"] = parts["bce"] + gamma * parts["fused"] if "fused" in parts else parts["bce"]
                loss = parts["cls"]
            else:
                loss = parts["fused"]
            if sections is not None:
                parts["section_shift"] = section_shift(h, yb, sections[idx])
                loss = loss + section_alignment * parts["section_shift"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in parts.items():
                sums[k] += float(v.detach()) * len(idx)
            seen += len(idx)
        for k, v in sums.items():
            history[k].append(v / seen)
        shown = "cls" if classify else "fused"
        bar.set_postfix({shown: f"{history[shown][-1]:.4f}"})
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
            skip_rows = feats[-1][unique] if net.linear_skip is not None else None  # genes: the last stream
            h, logit, *_ = net([z[unique] for z in tokens], inverse, mask, skip_rows)
            embeddings.append(h)
            probas.append(torch.sigmoid(logit.float()))

    def _np(parts: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(parts).cpu().numpy().astype(np.float32, copy=False)

    return _np(probas), _np(embeddings)


@torch.inference_mode()
def adapt_batchnorm(net: SpaCRDNet, feats: list[torch.Tensor], *, batch_size: int, amp: bool = False) -> SpaCRDNet:
    """A copy of ``net`` whose encoder BatchNorm statistics are re-estimated on ``feats`` (AdaBN; Li et al.,
    "Revisiting batch normalization for practical domain adaptation", 2016). ``net`` is not changed.

    The statistics are cumulative over batches of ``batch_size`` rows (exact for one batch); weights, dropout
    and everything after the encoders are untouched. No label is involved.
    """
    net = copy.deepcopy(net).eval()
    norms = [m for e in net.encoders() for m in e.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
        bn.train()
    device = next(net.parameters()).device.type
    with autocast(device, amp):
        for enc, x in zip(net.encoders(), feats, strict=True):
            for i in range(0, x.shape[0], batch_size):
                enc(x[i : i + batch_size])
    return net.eval()


# ---------------------------------------------------------------------- fitting a SpaCRD (state + bookkeeping)
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
            linear_skip=cfg.linear_skip,
        )


def _fit_pca(model: SpaCRD, net: SpaCRDNet, feats: list[np.ndarray], seed: int) -> None:
    """Fit ``net``'s gene-encoder PCA projection (if any) on the gene features of the training spots."""
    enc = net.gene_encoder
    if enc is None or enc.n_pcs is None:
        return
    t0 = time.perf_counter()
    explained = enc.fit_pca(feats[-1], seed)
    model.training_params["pca"] = {
        "n_pcs": enc.n_pcs,
        "n_spots": int(feats[-1].shape[0]),
        "variance_explained": round(explained, 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    logger.info("SpaCRD: %d gene PCs explain %.1f%% of the variance.", enc.n_pcs, 100 * explained)


def member_seeds(model: SpaCRD, seed: int) -> list[int]:
    """Training seed of each ensemble member: ``seed, seed + 1, …`` (member ``i`` is trained exactly like a
    single model with seed ``seed + i``)."""
    return [int(seed) + i for i in range(model._cfg.n_members)]


def _mean_history(hists: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per-epoch losses averaged over the ensemble members (one member: its own losses)."""
    return {k: [float(np.mean(v)) for v in zip(*(h[k] for h in hists), strict=True)] for k in hists[0]}


def run_alignment(
    model: SpaCRD,
    feats: list[np.ndarray],
    nbr: np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float,
    dev: str,
    seed: int,
    progress_bar: bool,
    amp: bool,
) -> None:
    """Body of :meth:`SpaCRD.fit_alignment` on checked inputs: rebuild every member from its seed, train, record."""
    if model.mode == "both":
        views = feats
    else:
        means, has = neighbourhood_mean(feats[0], nbr)
        if has.sum() < 2:
            raise ValueError("Neighbourhood contrast needs at least 2 spots with neighbours; neighbors is all padding.")
        views = [feats[0][has], means[has]]
    model._move(dev)
    t0 = time.perf_counter()
    tensors = [torch.from_numpy(v).to(dev) for v in views]
    nets, hists = [], []
    for i, s in enumerate(member_seeds(model, seed)):
        with seeded(s, dev):
            net = model._build(s)
            _fit_pca(model, net, feats, s)
            hist = train_alignment(
                net,
                tensors,
                epochs=int(epochs),
                batch_size=int(min(batch_size, tensors[0].shape[0])),
                lr=float(lr),
                temperature=model._cfg.temperature,
                alpha=model._cfg.alpha,
                rng=np.random.default_rng(s),
                device=dev,
                progress_bar=progress_bar,
                amp=amp,
                desc=_bar_desc("SpaCRD alignment", i, model),
            )
        nets.append(net)
        hists.append({"align": hist})
    model.nets = nets
    model.is_fitted = False
    hist = _mean_history(hists)["align"]
    elapsed = time.perf_counter() - t0
    model.history.setdefault("align", []).extend(hist)
    model.alignment = "image-gene InfoNCE" if model.mode == "both" else "neighbourhood InfoNCE"
    model.is_aligned = True
    model.training_params["alignment"] = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "member_seeds": member_seeds(model, seed),
        "device": dev,
        "n_spots": int(views[0].shape[0]),
        "seconds": round(elapsed, 2),
    }
    logger.info("SpaCRD alignment: %d epochs in %.1f s (final loss %.4f).", epochs, elapsed, hist[-1])


def run_fusion(
    model: SpaCRD,
    feats: list[np.ndarray],
    nbr: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    fused_epochs: int,
    batch_size: int,
    lr: float,
    dev: str,
    seed: int,
    progress_bar: bool,
    batching: str,
    amp: bool,
    label_smoothing: float = 0.0,
    sections: np.ndarray | None = None,
    section_alignment: float = 0.0,
    gene_dropout: float = 0.0,
) -> None:
    """Body of :meth:`SpaCRD.fit_fusion` on checked inputs: fresh heads (or continue) per member, train, record."""
    model._move(dev)
    t0 = time.perf_counter()
    tensors = [torch.from_numpy(f).to(dev) for f in feats]
    nbr_t, labels_t = torch.from_numpy(nbr).to(dev), torch.from_numpy(labels).to(dev)
    sections_t = torch.from_numpy(sections).long().to(dev) if sections is not None else None
    hists = []
    for i, s in enumerate(member_seeds(model, seed)):
        with seeded(s, dev):
            if not model.is_fitted:
                fresh = model._build(s)
                if model.is_aligned:
                    for name in ("fusion", "vae", "discriminator", "linear_skip"):
                        setattr(model.nets[i], name, getattr(fresh, name))
                else:
                    model.nets[i] = fresh
                    _fit_pca(model, fresh, feats, s)
            hists.append(
                train_fusion(
                    model.nets[i],
                    tensors,
                    nbr_t,
                    nbr,
                    labels_t,
                    epochs=int(epochs),
                    fused_epochs=int(fused_epochs),
                    batch_size=int(min(batch_size, len(labels))),
                    lr=float(lr),
                    beta=model._cfg.beta,
                    gamma=model._cfg.gamma,
                    rng=np.random.default_rng(s),
                    device=dev,
                    progress_bar=progress_bar,
                    batching=batching,
                    amp=amp,
                    label_smoothing=float(label_smoothing),
                    sections=sections_t,
                    section_alignment=float(section_alignment),
                    gene_dropout=float(gene_dropout),
                    desc=_bar_desc("SpaCRD fusion", i, model),
                )
            )
    elapsed = time.perf_counter() - t0
    for k, v in _mean_history(hists).items():
        model.history.setdefault(k, []).extend(v)
    model.is_fitted = True
    model.training_params["fusion"] = {
        "epochs": int(epochs),
        "fused_epochs": int(fused_epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "member_seeds": member_seeds(model, seed),
        "device": dev,
        "batching": batching,
        "label_smoothing": float(label_smoothing),
        "section_alignment": float(section_alignment),
        "gene_dropout": float(gene_dropout),
        "n_spots": int(len(labels)),
        "n_cancer": int(labels.sum()),
        "seconds": round(elapsed, 2),
        "aligned": model.is_aligned,
    }
    logger.info("SpaCRD fusion: %d epochs in %.1f s.", epochs, elapsed)
