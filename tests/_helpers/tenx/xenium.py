"""Xenium Onboard Analysis output folders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

from ..images import he_section
from ._common import (
    XENIUM_REAL_FOLDER,
    _poisson_counts,
    gene_table,
    shared_data_dir,
    write_10x_h5,
)


# --------------------------------------------------------------------------------------------------------
# Xenium (Xenium Onboard Analysis)
# --------------------------------------------------------------------------------------------------------
@dataclass
class XeniumFixture:
    """What :func:`write_xenium` wrote."""

    path: Path
    counts: sparse.csr_matrix  # cells x features (all feature types, matrix order)
    cell_ids: np.ndarray
    features: pd.DataFrame
    centroids_um: np.ndarray  # (n, 2) x, y in microns
    pixel_size: float
    he_file: Path | None = None
    alignment_file: Path | None = None
    he_to_morph: np.ndarray | None = None  # 3x3, H&E px -> morphology px (the CSV content)
    he_shape: tuple[int, int] | None = None


def _xenium_cell_id_strings(prefix: np.ndarray, suffix: int = 1) -> np.ndarray:
    """XOA >= 1.3 string ids: the 8 hex nibbles of the uint32 prefix as letters a..p, then ``-suffix``."""
    out = []
    for p in np.asarray(prefix, dtype=np.uint64):
        nibbles = [(int(p) >> s) & 0xF for s in (28, 24, 20, 16, 12, 8, 4, 0)]
        out.append("".join(chr(ord("a") + n) for n in nibbles) + f"-{suffix}")
    return np.array(out)


def _experiment_xenium(version: str, pixel_size: float) -> dict:
    root = shared_data_dir()
    real = root / XENIUM_REAL_FOLDER / "experiment.xenium" if root is not None else None
    if real is not None and real.is_file():
        specs = json.loads(real.read_text())
    else:
        specs = {
            "run_name": "test",
            "region_name": "test region",
            "preservation_method": "ffpe",
            "panel_name": "test panel",
            "panel_organism": "Human",
            "z_step_size": 3.0,
            "images": {"morphology_focus_filepath": "morphology_focus.ome.tif"},
        }
    specs["pixel_size"] = pixel_size
    specs["analysis_sw_version"] = f"Xenium-{version}" if version.startswith("1.0") else f"xenium-{version}"
    return specs


def write_xenium(
    root: Path,
    *,
    n_cells: int = 600,
    n_genes: int = 25,
    n_controls: int = 2,
    extent_um: tuple[float, float] = (400.0, 300.0),
    version: str = "1.0.1",
    with_he: bool = True,
    he_um_per_px: float = 1.0,
    he_format: str = "ome.tif",
    with_transcripts: bool = False,
    seed: int = 0,
) -> XeniumFixture:
    """Write a Xenium output folder with cells only (no boundaries, transcripts, labels or morphology images).

    Parameters
    ----------
    version
        ``"1.0.1"`` (the real preview ``experiment.xenium``; integer cell ids, empty ``cells.zarr.zip``) or
        e.g. ``"2.0.0.10"`` (string cell ids encoded in ``cells.zarr.zip/cell_id``, plus ``cell_summary``).
    with_he
        Write a post-Xenium H&E (``<name>_he_image.ome.tif`` or ``.png``) rotated by about -90 degrees and
        scaled relative to the morphology frame, and its ``<name>_he_imagealignment.csv``
        (H&E px -> morphology px).
    with_transcripts
        Also write ``transcripts.parquet``: every count of the cell matrix as one transcript at its cell's
        centroid with ``qv >= 20``, plus ``n_cells`` low-quality (``qv < 20``) gene transcripts and
        ``n_cells`` ``BLANK_*`` codewords (both to be dropped by the reader).
    """
    import zarr

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixel_size = 0.2125
    w_um, h_um = extent_um
    # cells fill an ellipse inside the extent (the tissue), leaving glass in the corners
    cand = np.column_stack([rng.uniform(5, w_um - 5, 4 * n_cells), rng.uniform(5, h_um - 5, 4 * n_cells)])
    inside = ((cand[:, 0] - w_um / 2) / (0.48 * w_um)) ** 2 + ((cand[:, 1] - h_um / 2) / (0.48 * h_um)) ** 2 < 1
    xy_um = cand[inside][:n_cells]
    features = gene_table(n_genes, n_controls=n_controls)
    counts = _poisson_counts(n_cells, len(features), 0.5 + xy_um[:, 0] / w_um, seed)
    new_ids = not version.startswith(("1.0", "1.1", "1.2"))
    if new_ids:
        prefix = rng.choice(2**31, size=n_cells, replace=False).astype(np.uint32)
        cell_ids = _xenium_cell_id_strings(prefix)
    else:
        prefix = None
        cell_ids = np.arange(1, n_cells + 1)

    (root / "experiment.xenium").write_text(json.dumps(_experiment_xenium(version, pixel_size), indent=4))
    write_10x_h5(root / "cell_feature_matrix.h5", counts, cell_ids.astype(str), features)
    area = rng.uniform(40, 160, n_cells)
    cells = pd.DataFrame(
        {
            "cell_id": cell_ids,
            "x_centroid": xy_um[:, 0],
            "y_centroid": xy_um[:, 1],
            "transcript_counts": np.asarray(counts.sum(1)).ravel().astype(np.int64),
            "control_probe_counts": 0,
            "control_codeword_counts": 0,
            "total_counts": np.asarray(counts.sum(1)).ravel().astype(np.int64),
            "cell_area": area,
            "nucleus_area": area / 3,
        }
    )
    cells.to_parquet(root / "cells.parquet", index=False)

    # cells.zarr.zip: spatialdata-io 0.7.1 always opens it; XOA >= 1.3 keeps cell ids and a summary there.
    store = zarr.storage.ZipStore(root / "cells.zarr.zip", mode="w")
    g = zarr.open_group(store, mode="w", zarr_format=2)
    if new_ids:
        cid = g.create_array("cell_id", shape=(n_cells, 2), dtype="uint32")
        cid[:] = np.column_stack([prefix, np.ones(n_cells, dtype=np.uint32)])
        summary = np.column_stack(
            [xy_um, area, xy_um, area / 3, np.zeros(n_cells)]
        )  # cell centroid x/y, cell area, nucleus centroid x/y, nucleus area, z_level
        cs = g.create_array(
            "cell_summary",
            shape=summary.shape,
            dtype="float64",
            attributes={
                "column_names": [
                    "cell_centroid_x",
                    "cell_centroid_y",
                    "cell_area",
                    "nucleus_centroid_x",
                    "nucleus_centroid_y",
                    "nucleus_area",
                    "z_level",
                ]
            },
        )
        cs[:] = summary
    store.close()

    if with_transcripts:
        coo = sparse.coo_matrix(counts)
        reps = coo.data.astype(np.int64)
        cell = np.repeat(coo.row, reps)
        gene = np.repeat(coo.col, reps)
        good = pd.DataFrame(
            {
                "feature_name": features["name"].to_numpy()[gene],
                "x_location": xy_um[cell, 0],
                "y_location": xy_um[cell, 1],
                "qv": rng.uniform(20, 40, len(cell)),
            }
        )
        low = good.sample(n=min(n_cells, len(good)), random_state=seed).assign(
            qv=rng.uniform(0, 19.9, min(n_cells, len(good)))
        )
        blank = pd.DataFrame(
            {
                "feature_name": [f"BLANK_{i:04d}" for i in range(n_cells)],
                "x_location": xy_um[:, 0],
                "y_location": xy_um[:, 1],
                "qv": 30.0,
            }
        )
        tx = pd.concat([good, low, blank], ignore_index=True)
        tx["z_location"] = 10.0
        tx["transcript_id"] = np.arange(len(tx), dtype=np.uint64)
        tx.to_parquet(root / "transcripts.parquet", index=False)

    fx = XeniumFixture(
        path=root,
        counts=counts,
        cell_ids=cell_ids,
        features=features,
        centroids_um=xy_um,
        pixel_size=pixel_size,
    )
    if with_he:
        # morphology px -> H&E px: rotate by +90 deg, scale pixel_size / he_um_per_px, shift into the image.
        s = pixel_size / he_um_per_px
        th = np.deg2rad(89.6)
        morph_to_he = np.eye(3)
        morph_to_he[:2, :2] = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        corners = np.array([[0, 0, 1], [w_um, 0, 1], [0, h_um, 1], [w_um, h_um, 1]], dtype=float)
        corners[:, :2] /= pixel_size
        he_xy = (morph_to_he @ corners.T).T[:, :2]
        morph_to_he[:2, 2] = 20 - he_xy.min(0)
        he_xy = (morph_to_he @ corners.T).T[:, :2]
        he_w, he_h = (np.ceil(he_xy.max(0)) + 20).astype(int)
        he_to_morph = np.linalg.inv(morph_to_he)
        cells_he = (morph_to_he @ np.column_stack([xy_um / pixel_size, np.ones(n_cells)]).T).T[:, :2]
        he = he_section(int(he_h), int(he_w), cells_he, radius=15.0 / he_um_per_px, seed=seed + 1)
        name = "Xenium_test"
        if he_format == "ome.tif":
            import tifffile

            he_file = root / f"{name}_he_image.ome.tif"
            tifffile.imwrite(he_file, he, photometric="rgb", ome=True)
        else:
            he_file = root / f"{name}_he_image.{he_format}"
            Image.fromarray(he).save(he_file)
        alignment_file = root / f"{name}_he_imagealignment.csv"
        pd.DataFrame(he_to_morph).to_csv(alignment_file, header=False, index=False, float_format="%.17g")
        fx.he_file, fx.alignment_file, fx.he_to_morph, fx.he_shape = (
            he_file,
            alignment_file,
            he_to_morph,
            he.shape[:2],
        )
    return fx
