"""Training and inference loops of SpaCRD on device tensors (no validation here: callers check inputs)."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import trange

from ._data import epoch_batches, local_clusters, neighbourhood_tokens
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
    return trange(epochs, desc=desc, disable=not progress_bar, leave=False)


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
    bar = _bar(epochs, "SpaCRD alignment", progress_bar)
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


def _streams(net: SpaCRDNet, feats: list[torch.Tensor], idx: torch.Tensor, neighbors: torch.Tensor):
    """Encode the unique rows a batch needs and gather them into ``(B, k+1, D)`` token streams."""
    unique, inverse, mask = neighbourhood_tokens(idx, neighbors)
    streams = []
    for enc, x in zip(net.encoders(), feats, strict=True):
        tok = enc(x[unique])[inverse]
        streams.append(tok.masked_fill(mask.unsqueeze(-1), 0.0))
    return streams, mask


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
) -> dict[str, list[float]]:
    """Stages 2 + 3: ``fused_epochs`` of ``L_fused``, then ``L_cls = BCE + γ·L_fused``; all weights train.

    Returns per-epoch means: ``fused``, ``recon``, ``kl`` (every epoch, with the VAE) and ``bce``,
    ``cls`` (classifier epochs).
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    n = neighbors.shape[0]
    groups = local_clusters(neighbors_np, GROUP_SIZE, rng) if batching == "local" else None
    history: dict[str, list[float]] = defaultdict(list)
    bar = _bar(epochs, "SpaCRD fusion", progress_bar)
    for epoch in bar:
        classify = net.vae is None or epoch >= fused_epochs
        sums: dict[str, float] = defaultdict(float)
        seen = 0
        for b in epoch_batches(n, batch_size, rng, groups):
            idx = torch.from_numpy(b).to(device)
            yb = y[idx]
            with autocast(device, amp):
                streams, mask = _streams(net, feats, idx, neighbors)
                h = net.fusion(streams, mask).float()
                logit, recon, mu, logvar = net.head(h)
            parts: dict[str, torch.Tensor] = {}
            if net.vae is not None:
                parts["recon"], parts["kl"] = net.vae.loss(h, recon.float(), mu.float(), logvar.float(), yb)
                parts["fused"] = parts["recon"] + beta * parts["kl"]
            if classify:
                parts["bce"] = F.binary_cross_entropy_with_logits(logit.float(), yb.float())
                parts["cls"] = parts["bce"] + gamma * parts["fused"] if "fused" in parts else parts["bce"]
                loss = parts["cls"]
            else:
                loss = parts["fused"]
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
    output: str,
    device: str,
    amp: bool = False,
) -> np.ndarray:
    """Eval-mode pass over all spots: cancer probability (``output="proba"``) or ``h*`` (``"embedding"``).

    Every row is encoded once; the neighbourhood sequences are gathered from those embeddings. The VAE
    uses ``z = μ`` and the discriminator reads ``[μ, log σ²]``: no label is involved.
    """
    net.eval()
    n = neighbors.shape[0]
    with autocast(device, amp):
        tokens = [
            torch.cat([enc(x[i : i + batch_size]).float() for i in range(0, n, batch_size)])
            for enc, x in zip(net.encoders(), feats, strict=True)
        ]
        out = []
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(i + batch_size, n), device=device)
            tok = torch.cat([idx[:, None], neighbors[idx]], dim=1)
            mask = tok < 0
            tok = torch.where(mask, idx[:, None], tok)
            streams = [z[tok].masked_fill(mask.unsqueeze(-1), 0.0) for z in tokens]
            h = net.fusion(streams, mask).float()
            if output == "embedding":
                out.append(h)
            else:
                logit = net.head(h)[0]
                out.append(torch.sigmoid(logit.float()))
    return torch.cat(out).cpu().numpy().astype(np.float32, copy=False)
