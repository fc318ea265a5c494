"""Space Ranger >= 3 (Visium HD) output folders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from ..images import he_section, resize, write_png
from ._common import (
    _poisson_counts,
    gene_table,
    write_10x_h5,
)


# --------------------------------------------------------------------------------------------------------
# Visium HD (Space Ranger >= 3)
# --------------------------------------------------------------------------------------------------------
@dataclass
class VisiumHDFixture:
    """What :func:`write_visium_hd` wrote (2 um bins)."""

    path: Path
    dataset_id: str
    counts: sparse.csr_matrix  # in-tissue bins x features (matrix order)
    barcodes: np.ndarray
    features: pd.DataFrame
    positions: pd.DataFrame  # index barcode; in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres
    array_to_px: np.ndarray  # 3x3: (array_col, array_row, 1) -> (pxl_col, pxl_row, 1)
    microns_per_pixel: float
    bin_size_um: float = 2.0
    scalefactors: dict = field(default_factory=dict)


def write_visium_hd(
    root: Path,
    *,
    n_rows: int = 120,
    n_cols: int = 110,
    n_genes: int = 30,
    microns_per_pixel: float = 0.25,
    rotation_deg: float = 2.0,
    dataset_id: str = "HD_test",
    prefix: bool = True,
    fullres: bool = False,
    seed: int = 0,
) -> VisiumHDFixture:
    """Write a Visium HD ``outs``-like folder with only the 2 um bins (``binned_outputs/square_002um``).

    The array grid is rotated by ``rotation_deg`` in the full-resolution image (as on real slides), bins
    outside a disc are ``in_tissue == 0`` and absent from the filtered matrix. ``fullres`` also writes the
    microscope image as ``microscope_image/tissue_image.tif`` (where spatialdata-io looks for it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bin_um = 2.0
    step = bin_um / microns_per_pixel  # px per bin
    th = np.deg2rad(rotation_deg)
    A = step * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    t = np.array([80.0, 60.0])
    array_to_px = np.eye(3)
    array_to_px[:2, :2] = A
    array_to_px[:2, 2] = t

    rr, cc = np.mgrid[0:n_rows, 0:n_cols]
    rr, cc = rr.ravel(), cc.ravel()
    xy = (A @ np.vstack([cc, rr])).T + t
    in_tissue = (((rr - n_rows / 2) / (0.45 * n_rows)) ** 2 + ((cc - n_cols / 2) / (0.45 * n_cols)) ** 2 < 1).astype(
        np.int32
    )
    barcodes_all = np.array([f"s_002um_{r:05d}_{c:05d}-1" for r, c in zip(rr, cc, strict=True)])
    pos = pd.DataFrame(
        {
            "barcode": barcodes_all,
            "in_tissue": in_tissue,
            "array_row": rr.astype(np.int64),
            "array_col": cc.astype(np.int64),
            "pxl_row_in_fullres": xy[:, 1],
            "pxl_col_in_fullres": xy[:, 0],
        }
    )
    full_h = int(np.ceil(xy[:, 1].max() + 60))
    full_w = int(np.ceil(xy[:, 0].max() + 80))
    sf_common = {
        "spot_diameter_fullres": step,
        "bin_size_um": bin_um,
        "microns_per_pixel": microns_per_pixel,
        "tissue_hires_scalef": 0.5,
        "tissue_lowres_scalef": 0.1,
        "fiducial_diameter_fullres": 10 * step,
        "regist_target_img_scalef": 0.5,
    }
    keep = np.flatnonzero(in_tissue == 1)
    keep = keep[rng.permutation(len(keep))]
    barcodes = barcodes_all[keep]
    features = gene_table(n_genes)
    counts = _poisson_counts(len(keep), len(features), 0.05 + 0.1 * (rr[keep] % 7) / 7, seed)

    pfx = f"{dataset_id}_" if prefix else ""
    # feature_slice.h5 carries the run metadata as JSON in an attribute (spatialdata-io reads the HD layout
    # file format from it).
    meta = {
        "hd_layout_json": json.dumps({"file_format": "1.0", "transform": [1, 0, 0, 0, 1, 0, 0, 0, 1]}),
        "transform_matrices": {
            k: [1, 0, 0, 0, 1, 0, 0, 0, 1]
            for k in (
                "cytassist_colrow_to_spot_colrow",
                "spot_colrow_to_cytassist_colrow",
                "microscope_colrow_to_spot_colrow",
                "spot_colrow_to_microscope_colrow",
            )
        },
    }
    with h5py.File(root / f"{pfx}feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps(meta)

    spatial = root / "spatial"
    spatial.mkdir(exist_ok=True)
    (spatial / "scalefactors_json.json").write_text(json.dumps(sf_common))
    full = he_section(full_h, full_w, xy[in_tissue == 1], radius=2 * step, seed=seed)
    write_png(spatial / "tissue_hires_image.png", resize(full, round(full_h * 0.5), round(full_w * 0.5)))
    write_png(spatial / "tissue_lowres_image.png", resize(full, round(full_h * 0.1), round(full_w * 0.1)))

    if fullres:
        import tifffile

        (root / "microscope_image").mkdir(exist_ok=True)
        tifffile.imwrite(root / "microscope_image" / "tissue_image.tif", full, photometric="rgb")

    b = root / "binned_outputs" / "square_002um"
    write_10x_h5(b / "filtered_feature_bc_matrix.h5", counts, barcodes, features, library_id=dataset_id)
    (b / "spatial").mkdir(parents=True, exist_ok=True)
    (b / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf_common))
    pos.to_parquet(b / "spatial" / "tissue_positions.parquet", index=False)
    return VisiumHDFixture(
        path=root,
        dataset_id=dataset_id,
        counts=counts,
        barcodes=barcodes,
        features=features,
        positions=pos.set_index("barcode"),
        array_to_px=array_to_px,
        microns_per_pixel=microns_per_pixel,
        scalefactors=sf_common,
    )


def write_coarse_bins(fx: VisiumHDFixture, bin_um: int) -> sparse.csr_matrix:
    """Add Space Ranger's ``square_<bin_um>um`` output made from the fixture's 2 um bins; return its counts.

    As 10x bins them: coarse bin ``(R, C)`` holds the 2 um bins ``R * f .. R * f + f - 1`` (``f = bin_um / 2``),
    is in tissue when one of them is, and its counts are their exact sums; pixel centres are the affine image
    of the block's centre index. The matrix lists the in-tissue coarse bins in barcode order.
    """
    f = int(round(bin_um / fx.bin_size_um))
    pos = fx.positions
    grid = pd.DataFrame({"R": pos["array_row"] // f, "C": pos["array_col"] // f, "t": pos["in_tissue"]})
    cells = grid.groupby(["R", "C"], sort=True)["t"].max().reset_index()
    idx = np.column_stack([cells["C"] * f + (f - 1) / 2, cells["R"] * f + (f - 1) / 2, np.ones(len(cells))])
    xy = (fx.array_to_px @ idx.T).T
    barcodes_all = np.array(
        [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(cells["R"], cells["C"], strict=True)]
    )
    coarse = pd.DataFrame(
        {
            "barcode": barcodes_all,
            "in_tissue": cells["t"].astype(np.int32),
            "array_row": cells["R"].astype(np.int64),
            "array_col": cells["C"].astype(np.int64),
            "pxl_row_in_fullres": xy[:, 1],
            "pxl_col_in_fullres": xy[:, 0],
        }
    )
    in_t = coarse[coarse["in_tissue"] == 1].reset_index(drop=True)
    row_of = {(r, c): i for i, (r, c) in enumerate(zip(in_t["array_row"], in_t["array_col"], strict=True))}
    members = pos.loc[fx.barcodes]
    owner = np.array(
        [row_of[(r // f, c // f)] for r, c in zip(members["array_row"], members["array_col"], strict=True)]
    )
    G = sparse.csr_matrix(
        (np.ones(len(owner), np.int32), (owner, np.arange(len(owner)))), shape=(len(in_t), len(owner))
    )
    counts = sparse.csr_matrix(G @ fx.counts).astype(np.int32)
    b = fx.path / "binned_outputs" / f"square_{bin_um:03d}um"
    write_10x_h5(
        b / "filtered_feature_bc_matrix.h5", counts, in_t["barcode"].to_numpy(), fx.features, library_id=fx.dataset_id
    )
    (b / "spatial").mkdir(parents=True, exist_ok=True)
    sf = {**fx.scalefactors, "bin_size_um": float(bin_um), "spot_diameter_fullres": bin_um / fx.microns_per_pixel}
    (b / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    coarse.to_parquet(b / "spatial" / "tissue_positions.parquet", index=False)
    return counts


def write_raw_matrix(fx: VisiumHDFixture, *, seed: int = 1) -> sparse.csr_matrix:
    """Write ``square_002um/raw_feature_bc_matrix.h5``: the filtered bins plus every out-of-tissue bin with
    Poisson counts, interleaved (returned: the out-of-tissue counts, in the order written after the filtered)."""
    out_barcodes = fx.positions.index[fx.positions["in_tissue"] == 0].to_numpy()
    out_counts = _poisson_counts(len(out_barcodes), len(fx.features), 0.03, seed)
    counts = sparse.vstack([fx.counts, out_counts]).tocsr()
    barcodes = np.concatenate([fx.barcodes, out_barcodes])
    order = np.random.default_rng(seed).permutation(len(barcodes))
    b = fx.path / "binned_outputs" / "square_002um"
    write_10x_h5(b / "raw_feature_bc_matrix.h5", counts[order], barcodes[order], fx.features, library_id=fx.dataset_id)
    return out_counts
