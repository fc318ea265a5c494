"""How ``sc_crd.io.visium_hd`` (read + aggregate to 56 µm) scales with the number of 2 µm bins, up to a full
6.5 mm capture area (3250 x 3250 bins).

For each size a synthetic Space Ranger ``outs`` folder with only the 2 µm bins is written by streaming (the
count matrix HDF5 in chunks into resizable, gzip-compressed datasets; the positions Parquet in row groups;
never the whole matrix in memory): a ``side x side`` grid of bins rotated by 2° in the image, a tissue disc
holding 60 % of the bins (in the filtered matrix), ~5 UMIs per in-tissue bin (Poisson) spread over 18 000
genes with a Zipf-like gene distribution, barcodes sorted as Space Ranger writes them, small hires / lowres
PNGs and no microscope image. Then a fresh Python process runs ``sc_crd.io.visium_hd(path, bin_size_um=55)``
and reports the wall time of that call (after importing spacrd_sc, spatialdata, h5py and pyarrow, timed
apart) and its own peak resident set size (``ru_maxrss``: the whole process, imports included). Folders are
deleted after each size.

    nice python benchmarks/scale_visium_hd.py                     # sides 800 1600 2400 3250
    nice python benchmarks/scale_visium_hd.py --sides 400 800     # quick

Writes a table to stdout and ``benchmarks/results/scale_visium_hd.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_GENES = 18_000
UMIS_PER_BIN = 5.0
TISSUE_FRACTION = 0.6
UM_PER_PX = 0.2737  # a CytAssist-registered microscope image
ROWS_PER_GROUP = 100  # grid rows per Parquet row group / per HDF5 append

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
import h5py, pyarrow.parquet, spatialdata  # the reader's first-use imports, timed apart
import spacrd_sc as sc_crd
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
sdata = sc_crd.io.visium_hd(sys.argv[1], bin_size_um=55, progress_bar=False)
dt = time.perf_counter() - t0
t = sdata.tables["table"]
meta = next(iter(t.uns["spatial"].values()))["metadata"]
print(json.dumps({"read_s": dt, "import_s": t_import,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_spots": t.n_obs, "counts": float(t.X.sum(dtype="float64")),
                  "n_bins_assigned": meta["n_bins_assigned"], "source_bin_um": meta["source_bin_um"]}))
"""


def _barcodes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``s_002um_RRRRR_CCCCC-1`` as fixed-width bytes, built digit by digit (no Python strings)."""
    out = np.frombuffer(b"s_002um_00000_00000-1" * len(rows), dtype=np.uint8).reshape(len(rows), 21).copy()
    for i in range(5):
        out[:, 8 + 4 - i] = 48 + (rows // 10**i) % 10
        out[:, 14 + 4 - i] = 48 + (cols // 10**i) % 10
    return out.view("S21").ravel()


def write_outs(root: Path, side: int, *, seed: int = 0) -> tuple[int, int]:
    """A 2 µm-only Visium HD ``outs`` folder, written in bands of grid rows. Returns (in-tissue bins, UMIs)."""
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(seed)
    step, th = 2.0 / UM_PER_PX, np.deg2rad(2.0)
    A = step * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    radius2 = TISSUE_FRACTION * side * side / np.pi
    gene_p = 1.0 / np.arange(1, N_GENES + 1) ** 0.9
    gene_cdf = np.cumsum(gene_p / gene_p.sum())
    full_px = side * step + 200
    sf = {
        "spot_diameter_fullres": step, "bin_size_um": 2.0, "microns_per_pixel": UM_PER_PX,
        "tissue_hires_scalef": 600 / full_px, "tissue_lowres_scalef": 120 / full_px,
        "fiducial_diameter_fullres": 10 * step, "regist_target_img_scalef": 600 / full_px,
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
    root.mkdir(parents=True)
    with h5py.File(root / "HD_feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps(meta)
    (root / "spatial").mkdir()
    (root / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    for name, px in (("hires", 600), ("lowres", 120)):
        img = np.full((px, px, 3), (235, 215, 225), np.uint8)
        yy, xx = np.ogrid[0:px, 0:px]
        img[(yy - px / 2) ** 2 + (xx - px / 2) ** 2 < (0.44 * px) ** 2] = (150, 90, 170)
        Image.fromarray(img).save(root / "spatial" / f"tissue_{name}_image.png")
    b = root / "binned_outputs" / "square_002um"
    (b / "spatial").mkdir(parents=True)
    (b / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))

    schema = pa.schema(
        [("barcode", pa.string()), ("in_tissue", pa.int32()), ("array_row", pa.int32()),
         ("array_col", pa.int32()), ("pxl_row_in_fullres", pa.float64()), ("pxl_col_in_fullres", pa.float64())]
    )  # fmt: skip
    n_bins = n_umis = nnz = 0
    with (
        pq.ParquetWriter(b / "spatial" / "tissue_positions.parquet", schema) as pw,
        h5py.File(b / "filtered_feature_bc_matrix.h5", "w") as f,
    ):
        m = f.create_group("matrix")
        opts = {"compression": "gzip", "compression_opts": 1, "chunks": True}
        d_bc = m.create_dataset("barcodes", shape=(0,), maxshape=(None,), dtype="S21", **opts)
        d_data = m.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.int32, **opts)
        d_ind = m.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int64, **opts)
        indptr = [np.zeros(1, np.int64)]
        for r0 in range(0, side, ROWS_PER_GROUP):
            rr, cc = (g.ravel() for g in np.mgrid[r0 : min(r0 + ROWS_PER_GROUP, side), 0:side])
            xy = (A @ np.vstack([cc, rr])).T + 100.0
            tissue = (rr - side / 2) ** 2 + (cc - side / 2) ** 2 < radius2
            bc = _barcodes(rr, cc)
            offsets = np.arange(len(bc) + 1, dtype=np.int32) * 21
            names = pa.Array.from_buffers(pa.binary(), len(bc), [None, pa.py_buffer(offsets), pa.py_buffer(bc)])
            pw.write_table(
                pa.table(
                    [names.cast(pa.string()), tissue.astype(np.int32), rr.astype(np.int32), cc.astype(np.int32),
                     xy[:, 1], xy[:, 0]],
                    schema=schema,
                )
            )  # fmt: skip
            # counts of the in-tissue bins: Poisson UMIs per bin, genes drawn by inverse CDF, duplicates summed
            keep = np.flatnonzero(tissue)
            umis = rng.poisson(UMIS_PER_BIN, len(keep))
            owner = np.repeat(np.arange(len(keep), dtype=np.int64), umis)
            gene = np.minimum(np.searchsorted(gene_cdf, rng.random(len(owner))), N_GENES - 1)
            key, count = np.unique(owner * N_GENES + gene, return_counts=True)
            per_bin = np.bincount(key // N_GENES, minlength=len(keep))
            for d, v in ((d_bc, bc[keep]), (d_data, count.astype(np.int32)), (d_ind, key % N_GENES)):
                if len(v):
                    d.resize((d.shape[0] + len(v),))
                    d[-len(v) :] = v
            indptr.append(nnz + np.cumsum(per_bin))
            n_bins, n_umis, nnz = n_bins + len(keep), n_umis + int(umis.sum()), nnz + len(key)
        m.create_dataset("indptr", data=np.concatenate(indptr), **opts)
        m.create_dataset("shape", data=np.array([N_GENES, n_bins], dtype=np.int32))
        fg = m.create_group("features")
        fg.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        fg.create_dataset("feature_type", data=np.full(N_GENES, b"Gene Expression"))
        fg.create_dataset("genome", data=np.full(N_GENES, b"GRCh38"))
        fg.create_dataset("id", data=np.char.add(b"ENSG", np.char.zfill(np.arange(N_GENES).astype("S11"), 11)))
        fg.create_dataset("name", data=np.char.add(b"GENE", np.arange(N_GENES).astype("S6")))
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["library_ids"] = np.array([b"HD"])
    return n_bins, n_umis


def run(side: int, tmp: Path) -> dict:
    root = tmp / f"hd_{side}"
    t0 = time.perf_counter()
    n_bins, n_umis = write_outs(root, side)
    t_write = time.perf_counter() - t0
    size_gib = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**30
    out = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, check=False)
    shutil.rmtree(root)
    if out.returncode:
        raise RuntimeError(f"side {side}: the child failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["counts"] == n_umis and r["n_bins_assigned"] == n_bins, (r, n_umis, n_bins)  # counts conserved
    return {"side": side, "grid_bins": side * side, "n_bins": n_bins, "umis": n_umis, "write_s": t_write,
            "outs_gib": size_gib, **r}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[800, 1600, 2400, 3250], help="bins per side")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the generated outs (deleted after)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale_visium_hd.md")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for side in args.sides:
            r = run(side, Path(tmp))
            rows.append(r)
            print(
                f"{side} x {side}: {r['n_bins']:>10,} in-tissue bins, {r['umis']:>11,} UMIs -> {r['n_spots']:>6,} "
                f"spots | written in {r['write_s']:6.1f} s ({r['outs_gib']:.2f} GiB) | read + aggregate "
                f"{r['read_s']:7.1f} s | peak RSS {r['maxrss_mib']:7.0f} MiB",
                flush=True,
            )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(rows, args.sides))
    print(f"wrote {args.out}")


def report(rows: list[dict], sides: list[int]) -> str:
    """The result file: table, growth exponents, reading."""
    head = (
        "| grid (bins) | in-tissue bins | UMIs | pseudo-spots (56 µm) | outs on disk (GiB) | imports (s) "
        "| read + aggregate (s) | peak RSS (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['side']} x {r['side']} | {r['n_bins']:,} | {r['umis']:,} | {r['n_spots']:,} | {r['outs_gib']:.2f} "
        f"| {r['import_s']:.1f} | {r['read_s']:.1f} | {r['maxrss_mib']:.0f} |\n"
        for r in rows
    )
    machine = f"{platform.machine()}, Python {platform.python_version()}, {_dt.date.today().isoformat()}"
    text = (
        "# Visium HD reader at scale (2 µm bins → 56 µm pseudo-spots)\n\n"
        f"`nice python benchmarks/scale_visium_hd.py --sides {' '.join(map(str, sides))}` ({machine}). "
        "One run per size, each read in a fresh process (peak RSS = that process, imports included). "
        "The machine is a 2-core CPU shared with five other jobs running at the same time: wall times are "
        "noisy (expect ±30 %); memory is not affected.\n\n" + head + body
    )
    if len(rows) >= 2:
        # least-squares slope in log-log over all sizes (one noisy size moves it less than a two-point ratio)
        x = np.log([r["n_bins"] for r in rows])
        k_t = np.polyfit(x, np.log([r["read_s"] for r in rows]), 1)[0]
        k_m = np.polyfit(x, np.log([r["maxrss_mib"] for r in rows]), 1)[0]
        a, b = rows[0], rows[-1]
        per_bin = (b["maxrss_mib"] - a["maxrss_mib"]) * 2**20 / (b["n_bins"] - a["n_bins"])
        text += (
            f"\nGrowth over {a['n_bins']:,} to {b['n_bins']:,} in-tissue bins (log-log least squares over the "
            f"{len(rows)} sizes): time ~ bins^{k_t:.2f}, peak RSS ~ bins^{k_m:.2f} "
            f"(≈ {per_bin:.0f} B per in-tissue bin between the smallest and the largest size)"
        )
        if len(rows) >= 3:  # the fixed cost weighs on the small sizes: the top two show the large-size trend
            c, d = rows[-2], rows[-1]
            top = np.log(d["n_bins"] / c["n_bins"])
            text += (
                f"; between the two largest sizes time ~ bins^{np.log(d['read_s'] / c['read_s']) / top:.2f}, "
                f"peak RSS ~ bins^{np.log(d['maxrss_mib'] / c['maxrss_mib']) / top:.2f}"
            )
        text += ".\n"
    largest = rows[-1]
    verdict = "met" if largest["read_s"] <= 300 and largest["maxrss_mib"] <= 4096 else "NOT met"
    text += (
        "\nReading: the counts are streamed in chunks of 2^20 bins (constant read buffers; the summed table "
        "grows with the pseudo-spots only). What grows with the bins is one record per bin of the positions "
        "(the Arrow barcode match over the whole `tissue_positions.parquet`, array indices and pixel centres "
        "for the squares and their centres), freed before the counts are read: with the imports it makes the "
        "peak. Time is the Parquet read and barcode match, the gzip decompression of the matrix and the sparse "
        "sums; a fixed cost (images, table and shapes) weighs on the small sizes, so the exponent over all "
        "sizes is under 1; at the large sizes both grow about linearly or faster (the exponent between the two "
        "largest; timings are noisy here). Synthetic data: real matrices may hold more genes per bin. "
        f"Targets for a full 3250 x 3250-bin area (≤ 5 min, ≤ 4 GiB peak RSS): {verdict} at the largest size "
        f"run ({largest['side']} x {largest['side']}: {largest['read_s']:.0f} s, "
        f"{largest['maxrss_mib'] / 1024:.2f} GiB).\n"
    )
    return text


if __name__ == "__main__":
    main()
