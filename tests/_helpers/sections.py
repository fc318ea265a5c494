"""The one synthetic-section builder of the test suite (tl, model and pl tests), and its array view.

:func:`make_section` draws a grid section (raw counts, optional image features) with a disc of 'cancer'
spots; :func:`with_graph` adds the squidpy graph; :func:`section_arrays` turns a section into the arrays
the torch model reads (through :func:`spacrd_sc.tl._inputs.model_arrays`, the package's own path).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

#: One small network for fast model tests (the default size in tests/model/test_training.py, the default
#: 3-network ensemble in tests/model/test_ensemble.py and the real-data tests).
SMALL = {"hidden_dims": (64, 32, 32), "n_heads": 4, "latent_dim": 8, "n_members": 1}
#: Quiet CPU training for tests.
FAST = {"progress_bar": False, "device": "cpu"}


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
    cancer_radius: float = 0.32,
) -> ad.AnnData:
    """A grid section with a disc of 'cancer' spots whose first ``n_markers`` genes are up-regulated
    (and the next ``n_markers`` up in the other spots). The disc's radius is ``cancer_radius`` times the
    shorter side (the default makes about a quarter of the spots cancer; 0.75 about 85 %).

    Each section gets its own gene-wise batch factors and sequencing depth, so per-section scaling matters.
    Raw counts in ``X``; ``obs["cancer"]`` (bool), ``obs["pathology"]``, ``obsm["spatial"]`` (100 px grid)
    and, with ``image_dim``, image features ``obsm["X_uni"]`` (a noisy linear map of the expression).
    """
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(nx), np.arange(ny))
    xy = np.c_[xs.ravel(), ys.ravel()].astype(float) * 100.0
    centre = np.array([nx * 0.4, ny * 0.5]) * 100 + rng.normal(0, 80, 2)
    cancer = np.linalg.norm(xy - centre, axis=1) < min(nx, ny) * 100 * cancer_radius
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


def with_graph(a: ad.AnnData, library_key: str | None = None, n_neighs: int = 6) -> ad.AnnData:
    """Add the squidpy k-NN spatial graph (per section with ``library_key``), in place; returns ``a``."""
    import squidpy as sq

    sq.gr.spatial_neighbors_knn(a, n_neighs=n_neighs, library_key=library_key)
    return a


def section_arrays(a: ad.AnnData, *, library_key: str | None = None, n_neighbors: int = 6) -> dict:
    """The arrays the torch model reads: ``x_gene`` (log-normalised, z-scored per section), ``x_image``
    (``None`` without ``obsm["X_uni"]``), ``neighbors`` (-1 padded), ``y`` (int64) and ``genes``.

    The squidpy graph is added (:func:`with_graph`) when ``a`` has none.
    """
    from spacrd_sc.tl._inputs import FeatureSpec, model_arrays

    if "spatial_connectivities" not in a.obsp:
        with_graph(a, library_key, n_neighbors)
    image = "X_uni" in a.obsm
    spec = FeatureSpec(
        genes=tuple(a.var_names),
        n_neighbors=n_neighbors,
        n_image_features=a.obsm["X_uni"].shape[1] if image else None,
        image_key="X_uni" if image else None,
        library_key=library_key,
    )
    arr = model_arrays(a, spec)
    return {
        "x_gene": arr.x_gene,
        "x_image": arr.x_image,
        "neighbors": arr.neighbors,
        "y": a.obs["cancer"].to_numpy().astype(np.int64),
        "genes": list(spec.genes),
    }
