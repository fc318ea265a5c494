"""Synthetic spatial sections for the model tests and timing runs (numpy + scikit-learn only)."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def grid_neighbors(coords: np.ndarray, k: int = 6, radius: float = 1.5) -> np.ndarray:
    """k nearest other spots within ``radius``, -1 padded (the spot itself excluded)."""
    nn = NearestNeighbors(n_neighbors=k + 1).fit(coords)
    dist, idx = nn.kneighbors(coords)
    dist, idx = dist[:, 1:], idx[:, 1:]
    idx = np.where(dist <= radius, idx, -1)
    return idx.astype(np.int64)


def make_section(
    n_side: int = 20,
    n_genes: int = 100,
    n_image: int | None = 32,
    *,
    signal: float = 0.6,
    noise: float = 1.0,
    seed: int = 0,
    k: int = 6,
) -> dict[str, np.ndarray | None]:
    """A square-ish hex-like grid with a disk-shaped 'cancer' region.

    Cancer spots have ``signal`` added to the first 20 % of genes; the per-spot noise is strong enough
    that the neighbourhood matters. The image features are a random linear map of the noiseless
    expression plus noise.
    """
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    coords = np.stack([ii.ravel() + 0.5 * (jj.ravel() % 2), jj.ravel() * 0.866], axis=1).astype(float)
    centre = coords.mean(0) + rng.normal(0, 1, 2)
    r = np.linalg.norm(coords - centre, axis=1)
    y = (r < 0.35 * n_side).astype(np.int64)
    n = len(y)
    latent = rng.normal(size=(n, n_genes)).astype(np.float32) * 0.3
    latent[:, : max(1, n_genes // 5)] += signal * y[:, None]
    x_gene = (latent + noise * rng.normal(size=(n, n_genes))).astype(np.float32)
    x_image = None
    if n_image:
        w = rng.normal(size=(n_genes, n_image)).astype(np.float32) / np.sqrt(n_genes)
        x_image = (latent @ w * 3 + 0.3 * rng.normal(size=(n, n_image))).astype(np.float32)
    return {
        "x_gene": x_gene,
        "x_image": x_image,
        "neighbors": grid_neighbors(coords, k=k),
        "y": y,
        "genes": [f"g{i}" for i in range(n_genes)],
        "coords": coords,
    }
