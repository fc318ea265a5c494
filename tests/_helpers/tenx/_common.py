"""Shared pieces of the 10x folder writers: real gene symbols, the shared data folder, the feature-barcode
matrix HDF5 and Poisson counts."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import sparse

VISIUM_REAL_FOLDER = "visium_V1_Breast_Cancer_Block_A_Section_1_annotations"
XENIUM_REAL_FOLDER = "xenium_breast_rep1_experiment_metadata"
#: Real gene symbols measured in every labelled her2st section (breast markers first), so that a model
#: trained on her2st shares its genes with the test folders.
HER2ST_GENES = (
    "ERBB2", "GRB7", "KRT19", "KRT8", "KRT18", "EPCAM", "CD24", "MGP", "COL1A1", "COL1A2",
    "COL3A1", "FN1", "SPARC", "PTPRC", "CD74", "IGKC", "IGHG1", "MUC1", "ESR1", "FOXA1",
    "AGR2", "S100A4", "VIM", "LUM", "DCN", "MMP11", "CCND1", "MKI67", "TOP2A", "AEBP1",
    "POSTN", "ACTB", "GAPDH", "TPT1", "EEF1A1", "MUCL1", "CXCL14", "PIP", "TMSB10", "IGHG3",
    "IGHA1", "IGLC2", "RACK1", "FTH1", "PSMB3", "SERF2", "PFN1", "ACTG1", "SSR4", "MIEN1",
    "PSAP", "CTSD", "APOE", "FTL", "UBA52", "HLA-B", "EEF2", "S100A9", "CALR", "P4HB",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------------
def shared_data_dir() -> Path | None:
    """The shared real-data folder (``$SPACRD_DATA_DIR`` or ``<repo>/../shared/data``), or ``None``."""
    env = os.environ.get("SPACRD_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def gene_table(n_genes: int, *, n_controls: int = 0, duplicate: bool = True) -> pd.DataFrame:
    """Feature table ``id``, ``name`` (real her2st symbols; the 4th repeats the 3rd when ``duplicate``), type."""
    if n_genes > len(HER2ST_GENES):
        raise ValueError(f"At most {len(HER2ST_GENES)} genes (real her2st symbols); got {n_genes}.")
    names = list(HER2ST_GENES[:n_genes])
    if duplicate and n_genes >= 4:
        names[3] = names[2]  # two Ensembl ids with one symbol, as in real references
    ids = [f"ENSG{i:011d}" for i in range(n_genes)]
    types = ["Gene Expression"] * n_genes
    for j in range(n_controls):
        names.append(f"NegControlProbe_{j:05d}")
        ids.append(f"NegControlProbe_{j:05d}")
        types.append("Negative Control Probe")
    return pd.DataFrame({"id": ids, "name": names, "feature_type": types})


def write_10x_h5(
    path: Path,
    counts: sparse.spmatrix | np.ndarray,
    barcodes: list[str] | np.ndarray,
    features: pd.DataFrame,
    *,
    library_id: str | None = None,
    genome: str = "GRCh38",
) -> None:
    """A 10x feature-barcode matrix HDF5 (``counts`` barcodes x features; stored features x barcodes CSC)."""
    X = sparse.csr_matrix(counts)  # barcodes x features in CSR == features x barcodes in CSC
    X.sort_indices()
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.asarray(barcodes, dtype="S"))
        m.create_dataset("data", data=X.data.astype(np.int32))
        m.create_dataset("indices", data=X.indices.astype(np.int64))
        m.create_dataset("indptr", data=X.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([X.shape[1], X.shape[0]], dtype=np.int32))
        fg = m.create_group("features")
        fg.create_dataset("_all_tag_keys", data=np.array([b"genome"], dtype="S"))
        fg.create_dataset("feature_type", data=features["feature_type"].to_numpy(dtype="S"))
        fg.create_dataset("genome", data=np.array([genome] * len(features), dtype="S"))
        fg.create_dataset("id", data=features["id"].to_numpy(dtype="S"))
        fg.create_dataset("name", data=features["name"].to_numpy(dtype="S"))
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["software_version"] = "spacrd_sc test fixture"
        f.attrs["chemistry_description"] = "test fixture"
        if library_id is not None:
            f.attrs["library_ids"] = np.array([library_id], dtype="S")
            f.attrs["original_gem_groups"] = np.array([1], dtype=np.int64)


def _poisson_counts(n_obs: int, n_var: int, mean: np.ndarray | float, seed: int) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    lam = np.broadcast_to(np.asarray(mean, dtype=float).reshape(-1, 1), (n_obs, 1)) * rng.gamma(
        2.0, 0.5, size=(1, n_var)
    )
    return sparse.csr_matrix(rng.poisson(lam).astype(np.int32))
