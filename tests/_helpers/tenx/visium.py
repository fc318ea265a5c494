"""Space Ranger (Visium) output folders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

from ..images import he_section, resize, write_png
from ._common import (
    VISIUM_REAL_FOLDER,
    _poisson_counts,
    gene_table,
    shared_data_dir,
    write_10x_h5,
)


# --------------------------------------------------------------------------------------------------------
# Visium (Space Ranger)
# --------------------------------------------------------------------------------------------------------
@dataclass
class VisiumFixture:
    """What :func:`write_visium` wrote."""

    path: Path
    library_id: str
    counts: sparse.csr_matrix  # spots x features (matrix order)
    barcodes: np.ndarray
    features: pd.DataFrame
    positions: pd.DataFrame  # index barcode; in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres
    scalefactors: dict
    hires_shape: tuple[int, int]
    fullres_file: str | None = None
    fullres_shape: tuple[int, int] | None = None
    real: bool = False


def _real_visium_spatial() -> tuple[pd.DataFrame, dict, np.ndarray] | None:
    root = shared_data_dir()
    if root is None or not (root / VISIUM_REAL_FOLDER / "spatial").is_dir():
        return None
    sp = root / VISIUM_REAL_FOLDER / "spatial"
    pos = pd.read_csv(
        sp / "tissue_positions_list.csv",
        header=None,
        names=["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"],
        index_col=0,
    )
    sf = json.loads((sp / "scalefactors_json.json").read_text())
    lowres = np.asarray(Image.open(sp / "tissue_lowres_image.png").convert("RGB"))
    return pos, sf, lowres


def _synthetic_visium_spatial(n_rows: int = 30, n_cols: int = 30) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """A Visium-like hexagonal grid in a 1200 x 1200 px full-resolution frame (22 px spots, 40 px pitch)."""
    diam, pitch, x0, y0 = 22.0, 40.0, 30.0, 40.0
    rows, cols, xs, ys, barcodes = [], [], [], [], []
    for r in range(n_rows):
        for k in range(n_cols):
            c = 2 * k + (r % 2)
            rows.append(r)
            cols.append(c)
            xs.append(x0 + c * pitch / 2)
            ys.append(y0 + r * pitch * np.sqrt(3) / 2)
            barcodes.append(f"SYN{r:03d}{c:03d}-1")
    xs_a, ys_a = np.asarray(xs), np.asarray(ys)
    in_tissue = ((xs_a - 600) ** 2 + (ys_a - 560) ** 2 < 480**2).astype(int)
    pos = pd.DataFrame(
        {
            "in_tissue": in_tissue,
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": np.round(ys_a).astype(int),
            "pxl_col_in_fullres": np.round(xs_a).astype(int),
        },
        index=pd.Index(barcodes, name="barcode"),
    )
    sf = {
        "spot_diameter_fullres": diam,
        "tissue_hires_scalef": 0.5,
        "fiducial_diameter_fullres": 36.0,
        "tissue_lowres_scalef": 0.1,
    }
    tissue = pos.loc[pos["in_tissue"] == 1, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    return pos, sf, he_section(1200, 1200, tissue, radius=pitch * 0.75)


def write_visium(
    root: Path,
    *,
    n_genes: int = 40,
    source: str = "auto",
    window: tuple[int, int, int, int] = (20, 40, 30, 64),
    positions_format: str = "v1",
    fullres: bool = False,
    prefix: str = "",
    library_id: str = "V1_test",
    seed: int = 0,
) -> VisiumFixture:
    """Write a Space Ranger ``outs``-like folder into ``root``.

    Parameters
    ----------
    source
        ``"real"`` reuses the real positions, scale factors and lowres image of the shared Visium section;
        ``"synthetic"`` writes a 1200 px hexagonal grid; ``"auto"`` takes ``"real"`` where the folder exists.
    window
        ``(row_min, row_max, col_min, col_max)`` of ``array_row``/``array_col``; the in-tissue spots inside
        form the filtered matrix (the positions file lists every spot, as Space Ranger's does).
    positions_format
        ``"v1"``: ``spatial/tissue_positions_list.csv`` without header (Space Ranger < 2);
        ``"v2"``: ``spatial/tissue_positions.csv`` with header.
    fullres
        Also write ``tissue_image.tif``, the full-resolution image (synthetic source only).
    prefix
        File-name prefix of the counts file (``<prefix>filtered_feature_bc_matrix.h5``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    real = _real_visium_spatial() if source in ("auto", "real") else None
    if source == "real" and real is None:
        raise FileNotFoundError("The shared Visium folder is not available.")
    if real is not None:
        pos, sf, lowres = real
        hires_h = int(round(lowres.shape[0] * sf["tissue_hires_scalef"] / sf["tissue_lowres_scalef"]))
        hires_w = int(round(lowres.shape[1] * sf["tissue_hires_scalef"] / sf["tissue_lowres_scalef"]))
        hires = resize(lowres, hires_h, hires_w)  # the real hires image is not in the shared folder
        full = None
    else:
        pos, sf, full = _synthetic_visium_spatial()
        hires = resize(
            full,
            int(round(full.shape[0] * sf["tissue_hires_scalef"])),
            int(round(full.shape[1] * sf["tissue_hires_scalef"])),
        )
        lowres = resize(
            full,
            int(round(full.shape[0] * sf["tissue_lowres_scalef"])),
            int(round(full.shape[1] * sf["tissue_lowres_scalef"])),
        )
        if source == "synthetic":
            window = (0, 10**6, 0, 10**6)

    r0, r1, c0, c1 = window
    sel = pos[(pos["in_tissue"] == 1) & pos["array_row"].between(r0, r1) & pos["array_col"].between(c0, c1)]
    rng = np.random.default_rng(seed)
    barcodes = sel.index.to_numpy().astype(str)
    barcodes = barcodes[rng.permutation(len(barcodes))]  # matrix order differs from positions order
    features = gene_table(n_genes)
    depth = 1.0 + (sel.loc[barcodes, "array_row"].to_numpy() % 5)
    counts = _poisson_counts(len(barcodes), len(features), depth, seed)

    write_10x_h5(root / f"{prefix}filtered_feature_bc_matrix.h5", counts, barcodes, features, library_id=library_id)
    spatial = root / "spatial"
    spatial.mkdir(exist_ok=True)
    cols = ["in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    if positions_format == "v1":
        pos[cols].to_csv(spatial / "tissue_positions_list.csv", header=False)
    elif positions_format == "v2":
        pos[cols].rename_axis("barcode").to_csv(spatial / "tissue_positions.csv", header=True)
    else:
        raise ValueError(positions_format)
    (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
    write_png(spatial / "tissue_hires_image.png", hires)
    write_png(spatial / "tissue_lowres_image.png", lowres)

    fullres_file = None
    fullres_shape = None
    if fullres:
        if full is None:
            raise ValueError("fullres=True needs source='synthetic'.")
        import tifffile

        fullres_file = "tissue_image.tif"
        tifffile.imwrite(root / fullres_file, full, photometric="rgb")
        fullres_shape = full.shape[:2]
    return VisiumFixture(
        path=root,
        library_id=library_id,
        counts=counts,
        barcodes=barcodes,
        features=features,
        positions=pos,
        scalefactors=sf,
        hires_shape=hires.shape[:2],
        fullres_file=fullres_file,
        fullres_shape=fullres_shape,
        real=real is not None,
    )
