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
