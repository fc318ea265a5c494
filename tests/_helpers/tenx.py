"""Write small folders in the exact 10x Genomics output formats that spatialdata-io 0.7.1 reads.

Used by ``tests/io/test_tenx.py``. Every writer returns a small dataclass holding what was written (counts,
barcodes, genes, positions), so tests can check the readers' output against the ground truth.

The file layouts follow 10x's documentation:

- feature-barcode matrix HDF5 (``filtered_feature_bc_matrix.h5``, ``cell_feature_matrix.h5``): a ``matrix``
  group with ``barcodes``, ``data``, ``indices``, ``indptr``, ``shape`` (features x barcodes, CSC) and a
  ``features`` group (``id``, ``name``, ``feature_type``, ``genome``, ``_all_tag_keys``);
- Space Ranger ``spatial/`` folder: ``tissue_positions_list.csv`` (v1, no header) or ``tissue_positions.csv``
  (v2, header), ``scalefactors_json.json``, ``tissue_hires_image.png``, ``tissue_lowres_image.png``;
- Visium HD: ``feature_slice.h5`` (``metadata_json`` attribute), ``spatial/`` and
  ``binned_outputs/square_002um/{filtered_feature_bc_matrix.h5, spatial/tissue_positions.parquet,
  spatial/scalefactors_json.json}``;
- Xenium: ``experiment.xenium``, ``cells.zarr.zip``, ``cell_feature_matrix.h5``, ``cells.parquet`` and,
  optionally, a post-Xenium H&E (``*_he_image.ome.tif``) with its ``*_he_imagealignment.csv``
  (3 x 3 affine, H&E pixels -> Xenium morphology pixels).

Where the shared real data folder is present (``$SPACRD_DATA_DIR`` or ``<repo>/../shared/data``) the Visium
writer reuses the real V1_Breast_Cancer_Block_A_Section_1 positions, scale factors and lowres image (read at
test time, never copied into the repository) and falls back to a synthetic hexagonal grid otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

from .images import he_section, resize, write_png

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
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
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
