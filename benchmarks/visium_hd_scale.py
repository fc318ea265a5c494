"""How the Visium HD path scales with the number of 2 µm bins: reader + aggregation, graph, patches.

For each size a synthetic Visium HD ``outs`` folder (2 µm bins on a rotated grid, a tissue disc, a
full-resolution microscope TIFF at 0.5 µm/px; written by :func:`write_visium_hd` below, in the layout
spatialdata-io reads) is timed:

- ``read``: ``sc_crd.io.visium_hd(path, bin_size_um=55)`` (spatialdata-io reads the bins; they are summed
  into 56 µm pseudo-spots by one sparse product, centres fitted, ``uns['spatial']`` written);
- ``graph``: ``sq.gr.spatial_neighbors_knn(table, n_neighs=6)`` on the pseudo-spots;
- ``patches``: ``sc_crd.pp.spot_patches(sdata, size=224, indices=...)`` for 2 000 spots (pseudo-spots
  repeated when the section has fewer), read lazily from the TIFF when it exceeds the in-memory limit.

A 100 x 100 bin warm-up run comes first and is not reported. Peak memory is the tracemalloc peak of each
step (numpy, pandas and Python allocations; allocations made inside compiled libraries that bypass Python's
allocator hooks, e.g. HDF5 buffers, are not counted) and the process's maximum resident set size at the end.

    nice python benchmarks/visium_hd_scale.py            # sizes 400, 800, 1200 bins per side
    nice python benchmarks/visium_hd_scale.py --sides 200 400

Writes a table to stdout and ``benchmarks/results/visium_hd_scale.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
N_PATCHES = 2000
PATCH_SIZE = 224


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, seconds, tracemalloc peak in MiB)`` of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, dt, peak


def write_visium_hd(root: Path, side: int, *, n_genes: int = 20, um_per_px: float = 0.5, seed: int = 0):
    """A Visium HD ``outs`` folder with only the 2 µm bins (``side`` x ``side`` on a grid rotated by 2°, bins
    outside a disc not in tissue) and the microscope TIFF. Returns the folder and the number of in-tissue bins."""
    import h5py
    import tifffile
    from PIL import Image
    from scipy import sparse

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    step, th = 2.0 / um_per_px, np.deg2rad(2.0)
    A = step * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    rr, cc = (g.ravel() for g in np.mgrid[0:side, 0:side])
    xy = (A @ np.vstack([cc, rr])).T + [80.0, 60.0]
    in_tissue = ((rr - side / 2) ** 2 + (cc - side / 2) ** 2 < (0.45 * side) ** 2).astype(np.int32)
    barcodes = np.array([f"s_002um_{r:05d}_{c:05d}-1" for r, c in zip(rr, cc, strict=True)])
    pos = pd.DataFrame(
        {"barcode": barcodes, "in_tissue": in_tissue, "array_row": rr, "array_col": cc,
         "pxl_row_in_fullres": xy[:, 1], "pxl_col_in_fullres": xy[:, 0]}
    )  # fmt: skip
    sf = {
        "spot_diameter_fullres": step, "bin_size_um": 2.0, "microns_per_pixel": um_per_px,
        "tissue_hires_scalef": 0.5, "tissue_lowres_scalef": 0.1, "fiducial_diameter_fullres": 10 * step,
        "regist_target_img_scalef": 0.5,
    }  # fmt: skip
    eye = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    meta = {
        "hd_layout_json": json.dumps({"file_format": "1.0", "transform": eye}),
        "transform_matrices": {
            k: eye
            for k in ("cytassist_colrow_to_spot_colrow", "spot_colrow_to_cytassist_colrow",
                      "microscope_colrow_to_spot_colrow", "spot_colrow_to_microscope_colrow")
        },
    }  # fmt: skip
    with h5py.File(root / "HD_feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps(meta)
    # H&E-like image: pink background, purple tissue disc, noise
    h, w = int(np.ceil(xy[:, 1].max() + 60)), int(np.ceil(xy[:, 0].max() + 80))
    yy, xx = np.ogrid[0:h, 0:w]
    centre = xy[in_tissue == 1].mean(axis=0)
    disc = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < (0.45 * side * step) ** 2
    img = np.where(disc[..., None], np.array([150, 90, 170], np.uint8), np.array([235, 215, 225], np.uint8))
    img = np.clip(img + rng.integers(-20, 20, (h, w, 1), dtype=np.int16), 0, 255).astype(np.uint8)
    (root / "spatial").mkdir(exist_ok=True)
    (root / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    for name, f in (("hires", 0.5), ("lowres", 0.1)):
        Image.fromarray(img).resize((round(w * f), round(h * f))).save(root / "spatial" / f"tissue_{name}_image.png")
    (root / "microscope_image").mkdir(exist_ok=True)
    tifffile.imwrite(root / "microscope_image" / "tissue_image.tif", img, photometric="rgb")
    # filtered 10x feature-barcode matrix (features x barcodes, CSC) of the in-tissue bins
    keep = rng.permutation(np.flatnonzero(in_tissue == 1))
    lam = (0.05 + 0.1 * (rr[keep] % 7) / 7)[:, None] * rng.gamma(2.0, 0.5, size=(1, n_genes))
    X = sparse.csr_matrix(rng.poisson(lam).astype(np.int32))
    X.sort_indices()
    b = root / "binned_outputs" / "square_002um"
    (b / "spatial").mkdir(parents=True, exist_ok=True)
    with h5py.File(b / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=barcodes[keep].astype("S"))
        m.create_dataset("data", data=X.data)
        m.create_dataset("indices", data=X.indices.astype(np.int64))
        m.create_dataset("indptr", data=X.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([n_genes, len(keep)], dtype=np.int32))
        fg = m.create_group("features")
        fg.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        fg.create_dataset("feature_type", data=np.array([b"Gene Expression"] * n_genes))
        fg.create_dataset("genome", data=np.array([b"GRCh38"] * n_genes))
        fg.create_dataset("id", data=np.array([f"ENSG{i:011d}".encode() for i in range(n_genes)]))
        fg.create_dataset("name", data=np.array([f"GENE{i}".encode() for i in range(n_genes)]))
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["library_ids"] = np.array([b"HD"])
        f.attrs["original_gem_groups"] = np.array([1], dtype=np.int64)
    (b / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    pos.to_parquet(b / "spatial" / "tissue_positions.parquet", index=False)
    return root, len(keep)


def run(side: int, root: Path) -> dict[str, float]:
    import squidpy as sq
    import xarray as xr
    from spatialdata import get_pyramid_levels

    import spacrd_sc as sc_crd

    t0 = time.perf_counter()
    path, n_bins = write_visium_hd(root / f"hd_{side}", side)
    t_write = time.perf_counter() - t0

    sdata, t_read, m_read = _timed(lambda: sc_crd.io.visium_hd(path, bin_size_um=55))
    table = sdata.tables["table"]
    _, t_graph, m_graph = _timed(lambda: sq.gr.spatial_neighbors_knn(table, n_neighs=6))
    idx = np.resize(np.arange(table.n_obs), N_PATCHES)
    patches, t_patch, m_patch = _timed(lambda: sc_crd.pp.spot_patches(sdata, size=PATCH_SIZE, indices=idx))
    assert patches.shape == (N_PATCHES, PATCH_SIZE, PATCH_SIZE, 3)
    key = sdata.tables["table"].uns["spatial"][next(iter(table.uns["spatial"]))]["metadata"]["image_key"]
    img = sdata.images[key]  # a DataArray, or a DataTree when multiscale
    _, h, w = img.shape if isinstance(img, xr.DataArray) else get_pyramid_levels(img, attr="shape", n=0)
    return {
        "side": side,
        "n_bins": n_bins,
        "n_spots": table.n_obs,
        "image_px": f"{w} x {h}",
        "write_s": t_write,
        "read_s": t_read,
        "read_mib": m_read,
        "graph_s": t_graph,
        "graph_mib": m_graph,
        "patch_s": t_patch,
        "patch_mib": m_patch,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[400, 800, 1200], help="bins per side")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "visium_hd_scale.md")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run(100, Path(tmp))  # warm-up (imports, first-call compilation), not reported
        for side in args.sides:
            r = run(side, Path(tmp))
            rows.append(r)
            print(
                f"{r['n_bins']:>9,} bins -> {r['n_spots']:>5} spots | read {r['read_s']:6.2f} s "
                f"({r['read_mib']:7.1f} MiB) | graph {r['graph_s']:5.2f} s | "
                f"{N_PATCHES} patches {r['patch_s']:6.2f} s ({r['patch_mib']:6.1f} MiB) | "
                f"max RSS {r['maxrss_mib']:7.0f} MiB",
                flush=True,
            )

    head = (
        "| bins (2 µm) | pseudo-spots (56 µm) | image (px) | read + aggregate (s) | read peak (MiB) "
        "| graph (s) | 2 000 patches (s) | patches peak (MiB) | max RSS (MiB) |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['n_bins']:,} | {r['n_spots']:,} | {r['image_px']} | {r['read_s']:.2f} | {r['read_mib']:.0f} "
        f"| {r['graph_s']:.3f} | {r['patch_s']:.2f} | {r['patch_mib']:.0f} | {r['maxrss_mib']:.0f} |\n"
        for r in rows
    )
    machine = f"{platform.machine()}, {platform.python_version()}, {_dt.date.today().isoformat()}"
    text = (
        "# Visium HD scale\n\n"
        f"`nice python benchmarks/visium_hd_scale.py --sides {' '.join(map(str, args.sides))}` "
        f"({machine}; one run per size, shared 2-core machine: expect ±20 % noise).\n\n" + head + body
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        ratio = np.log(b["n_bins"] / a["n_bins"])

        def slope(key: str) -> float:
            return float(np.log(max(b[key], 1e-9) / max(a[key], 1e-9)) / ratio)

        text += (
            f"\n## Growth\n\nFrom {a['n_bins']:,} to {b['n_bins']:,} bins ({b['n_bins'] / a['n_bins']:.1f}x), "
            "fitted exponent k of time or memory ~ bins^k:\n\n"
            f"- read + aggregate: time k = {slope('read_s'):.2f}, peak memory k = {slope('read_mib'):.2f}\n"
            f"- graph (on pseudo-spots): time k = {slope('graph_s'):.2f}\n"
            f"- 2 000 patches: time k = {slope('patch_s'):.2f}, peak memory k = {slope('patch_mib'):.2f}\n"
        )
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
