"""Synthetic sections for the tl tests: small, fast, with a known cancer region."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import squidpy as sq
from scipy import sparse


def make_section(
    name: str = "S0",
    *,
    nx: int = 18,
    ny: int = 14,
    n_genes: int = 120,
    n_markers: int = 15,
    seed: int = 0,
    image_dim: int | None = None,
    depth: float = 1.0,
) -> ad.AnnData:
    """A grid section with a disc of 'cancer' spots whose first ``n_markers`` genes are up-regulated.

    Each section gets its own gene-wise batch factors and sequencing depth, so per-section scaling matters.
    """
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(nx), np.arange(ny))
    xy = np.c_[xs.ravel(), ys.ravel()].astype(float) * 100.0
    centre = np.array([nx * 0.4, ny * 0.5]) * 100 + rng.normal(0, 80, 2)
    cancer = np.linalg.norm(xy - centre, axis=1) < min(nx, ny) * 100 * 0.32
    base = rng.gamma(2.0, 1.0, n_genes)
    batch = rng.lognormal(0, 0.3, n_genes)
    rate = np.tile(base * batch, (len(xy), 1))
    rate[np.ix_(cancer, np.arange(n_markers))] *= 3.0
    rate[np.ix_(~cancer, np.arange(n_markers, 2 * n_markers))] *= 2.0
    counts = rng.poisson(rate * depth * rng.uniform(0.7, 1.3, (len(xy), 1))).astype(np.float32)
    a = ad.AnnData(
        sparse.csr_matrix(counts),
        obs=pd.DataFrame({"cancer": cancer}, index=[f"{name}_{i}" for i in range(len(xy))]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    a.obs["pathology"] = pd.Categorical(np.where(cancer, "invasive cancer", "connective tissue"))
    a.obsm["spatial"] = xy
    if image_dim is not None:
        proj = rng.normal(0, 1, (n_genes, image_dim)) / np.sqrt(n_genes)
        a.obsm["X_uni"] = (np.log1p(counts) @ proj + rng.normal(0, 0.1, (len(xy), image_dim))).astype(np.float32)
    return a


def with_graph(a: ad.AnnData, library_key: str | None = None) -> ad.AnnData:
    sq.gr.spatial_neighbors(a, n_neighs=6, coord_type="generic", library_key=library_key)
    return a


@pytest.fixture
def sources() -> ad.AnnData:
    secs = {f"S{i}": make_section(f"S{i}", seed=i, depth=[1.0, 0.5, 2.0][i]) for i in range(3)}
    return with_graph(ad.concat(secs, label="section"), "section")


@pytest.fixture
def sources_img() -> ad.AnnData:
    secs = {f"S{i}": make_section(f"S{i}", seed=i, image_dim=32) for i in range(3)}
    return with_graph(ad.concat(secs, label="section"), "section")


@pytest.fixture
def target() -> ad.AnnData:
    return with_graph(make_section("T", seed=11, depth=0.8))
