"""Input checks and mini-batch helpers for :class:`~spacrd_sc.model.SpaCRD` (numpy + torch only)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from .._logging import logger


def as_features(x: Any, name: str, n_cols: int | None, what: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 ``(n, n_cols)`` array, or raise a clear ``ValueError``.

    ``what`` names the columns in the message (e.g. ``"genes"``). Sparse matrices are densified.
    """
    if x is None:
        raise ValueError(f"{name} is required by this model but is None.")
    if hasattr(x, "toarray"):
        x = x.toarray()
    try:
        arr = np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic array-likes
        raise ValueError(f"{name} could not be read as an array ({err}).") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (spots × {what}), got shape {arr.shape}.")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but the model expects {n_cols} {what}; "
            f"pass the features in the model's {what} order."
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int((~finite).sum())
        rows = int((~finite).any(axis=1).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf values (in {rows} spots); clean or impute them first.")
    return arr


def check_neighbors(neighbors: Any, n: int, k: int) -> np.ndarray:
    """Return ``neighbors`` as int64 ``(n, k)`` with values in ``[-1, n)``, or raise ``ValueError``."""
    if neighbors is None:
        raise ValueError("neighbors is required: an (n_spots, n_neighbors) integer array, -1 for padding.")
    arr = np.asarray(neighbors)
    if arr.ndim != 2:
        raise ValueError(f"neighbors must be 2-D (spots × n_neighbors), got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise ValueError(f"neighbors has {arr.shape[0]} rows but the features have {n} spots.")
    if arr.shape[1] != k:
        raise ValueError(
            f"neighbors has {arr.shape[1]} columns but the model uses n_neighbors={k}; "
            "pad with -1 (fewer neighbours) or keep the k nearest."
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0)):
            raise ValueError(f"neighbors must hold integer row indices, got dtype {arr.dtype}.")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -1 or hi >= n:
            raise ValueError(
                f"neighbors holds indices in [{lo}, {hi}] but must lie in [0, {n - 1}] (or -1 for padding)."
            )
    return arr


def check_labels(y: Any, n: int) -> np.ndarray:
    """Return ``y`` as int64 ``(n,)`` in {0, 1} with both classes present, or raise ``ValueError``."""
    if y is None:
        raise ValueError("y is required: a (n_spots,) array of 0/1 cancer labels.")
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"y must have shape ({n},), got {arr.shape}.")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"y must be numeric or boolean 0/1 labels, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"y contains {int(np.isnan(arr).sum())} NaN labels; drop or label those spots.")
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"y must be binary (0 = non-cancer, 1 = cancer), got values {values[:10].tolist()}.")
    if len(values) < 2:
        raise ValueError(f"y has a single class ({int(values[0])}): training needs both cancer and non-cancer spots.")
    return arr.astype(np.int64)


def neighbourhood_mean(x: np.ndarray, neighbors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean feature row of each spot's neighbours (padding ignored) and a mask of spots with ≥ 1 neighbour."""
    valid = neighbors >= 0
    counts = valid.sum(axis=1)
    out = np.zeros_like(x)
    for j in range(neighbors.shape[1]):
        rows = valid[:, j]
        out[rows] += x[neighbors[rows, j]]
    has = counts > 0
    out[has] /= counts[has, None].astype(np.float32)
    return out, has


def local_clusters(neighbors: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Partition spots into compact groups of ≤ ``size`` by breadth-first growth over the neighbour graph.

    Seeds are visited in a random order; each group grows from its seed through not-yet-assigned
    neighbours. Batches made of whole groups share most neighbour rows, so far fewer unique rows need
    encoding per batch than with spots drawn uniformly at random.
    """
    n = neighbors.shape[0]
    assigned = np.zeros(n, dtype=bool)
    nbr = neighbors.tolist()
    groups: list[np.ndarray] = []
    for seed in rng.permutation(n).tolist():
        if assigned[seed]:
            continue
        assigned[seed] = True
        members = [seed]
        queue = deque([seed])
        while queue and len(members) < size:
            for j in nbr[queue.popleft()]:
                if j >= 0 and not assigned[j]:
                    assigned[j] = True
                    members.append(j)
                    queue.append(j)
                    if len(members) >= size:
                        break
        groups.append(np.asarray(members, dtype=np.int64))
    return groups


def epoch_batches(
    n: int, batch_size: int, rng: np.random.Generator, groups: list[np.ndarray] | None = None
) -> list[np.ndarray]:
    """Shuffled index batches for one epoch (whole ``groups`` shuffled when given).

    A trailing batch of a single spot is merged into the previous one (BatchNorm needs ≥ 2 rows).
    """
    if groups is None:
        order = rng.permutation(n)
    else:
        order = np.concatenate([groups[i] for i in rng.permutation(len(groups))])
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return batches


def neighbourhood_tokens(idx: torch.Tensor, neighbors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows to encode for a batch of centre spots and how to gather them into sequences.

    Parameters
    ----------
    idx
        ``(B,)`` centre rows.
    neighbors
        ``(n, k)`` neighbour rows of every spot, -1 = padding.

    Returns
    -------
    unique
        ``(U,)`` sorted rows to encode (centres ∪ their neighbours).
    inverse
        ``(B, k + 1)`` positions in ``unique`` of each token (padding points at the centre).
    padding_mask
        ``(B, k + 1)`` True where a token is padding (never the centre, position 0).
    """
    tokens = torch.cat([idx[:, None], neighbors[idx]], dim=1)
    mask = tokens < 0
    tokens = torch.where(mask, idx[:, None], tokens)
    unique, inverse = torch.unique(tokens, sorted=True, return_inverse=True)
    return unique, inverse, mask


def check_inputs(
    cfg: Any, x_gene: Any, x_image: Any, neighbors: Any, y: Any = None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """Validate all inputs against a :class:`~spacrd_sc.model._config.ModelConfig` ``cfg``.

    Returns the features in stream order (image first), the neighbours and the labels (``None`` without ``y``).
    """
    feats: list[np.ndarray] = []
    n_rows: dict[str, int] = {}
    if cfg.mode in ("both", "image"):
        if x_image is None:
            raise ValueError(
                f"x_image is None but this model ({cfg.mode!r} mode) uses {cfg.n_image_features} image features."
            )
        feats.append(as_features(x_image, "x_image", cfg.n_image_features, "image features"))
        n_rows["x_image"] = feats[-1].shape[0]
    elif x_image is not None:
        logger.info("SpaCRD (%s mode) ignores x_image.", cfg.mode)
    if cfg.mode != "image":
        feats.append(as_features(x_gene, "x_gene", len(cfg.genes), "genes"))
        n_rows["x_gene"] = feats[-1].shape[0]
    if len(set(n_rows.values())) > 1:
        raise ValueError(f"x_gene and x_image have different numbers of spots: {n_rows}.")
    n = feats[0].shape[0]
    if n < 1:
        raise ValueError("The inputs hold no spots.")
    nbr = check_neighbors(neighbors, n, cfg.n_neighbors)
    labels = check_labels(y, n) if y is not None else None
    return feats, nbr, labels


def check_loop_args(epochs: int, batch_size: int, lr: float, n_spots: int) -> None:
    """Check a training schedule before any work starts."""
    if n_spots < 2:
        raise ValueError(f"Training needs at least 2 spots, got {n_spots}.")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}.")
    if int(batch_size) != batch_size or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2, got {batch_size}.")
    if not 0 < lr < float("inf"):
        raise ValueError(f"lr must be > 0 and finite, got {lr}.")


def resolve_fused_epochs(epochs: int, fused_epochs: int | None, *, use_vae: bool) -> int:
    """Leading fusion-only epochs: default ``epochs // 2`` with the VAE, always 0 without; checked."""
    if fused_epochs is None:
        fused_epochs = int(epochs) // 2 if use_vae else 0
    if int(fused_epochs) != fused_epochs or fused_epochs < 0:
        raise ValueError(f"fused_epochs must be a non-negative integer, got {fused_epochs}.")
    if not use_vae and fused_epochs:
        logger.info(
            "SpaCRD: use_vae=False, fused_epochs=%d ignored (every epoch trains the classifier).",
            fused_epochs,
        )
        fused_epochs = 0
    if fused_epochs >= epochs:
        raise ValueError(
            f"fused_epochs={fused_epochs} leaves no classifier epoch out of epochs={epochs}; use fused_epochs < epochs."
        )
    return int(fused_epochs)
