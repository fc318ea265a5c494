"""How the Visium HD path scales with the number of 2 µm bins: reader + aggregation, graph, patches.

For each size a synthetic Visium HD ``outs`` folder (2 µm bins on a rotated grid, a tissue disc, a
full-resolution microscope TIFF at 0.5 µm/px) is written with the test suite's 10x writer, then timed:

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
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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


def run(side: int, root: Path) -> dict[str, float]:
    import squidpy as sq

    import spacrd_sc as sc_crd
    from spacrd_sc._images import _image_hw, _image_levels

    # the folder writer of the test suite (one writer for tests and benchmark)
    sys.path.insert(0, str(REPO / "tests"))
    from _helpers.tenx import write_visium_hd

    t0 = time.perf_counter()
    fx = write_visium_hd(root / f"hd_{side}", n_rows=side, n_cols=side, n_genes=20, microns_per_pixel=0.5, fullres=True)
    t_write = time.perf_counter() - t0
    n_bins = len(fx.barcodes)

    sdata, t_read, m_read = _timed(lambda: sc_crd.io.visium_hd(fx.path, bin_size_um=55))
    table = sdata.tables["table"]
    _, t_graph, m_graph = _timed(lambda: sq.gr.spatial_neighbors_knn(table, n_neighs=6))
    idx = np.resize(np.arange(table.n_obs), N_PATCHES)
    patches, t_patch, m_patch = _timed(lambda: sc_crd.pp.spot_patches(sdata, size=PATCH_SIZE, indices=idx))
    assert patches.shape == (N_PATCHES, PATCH_SIZE, PATCH_SIZE, 3)
    key = sdata.tables["table"].uns["spatial"][next(iter(table.uns["spatial"]))]["metadata"]["image_key"]
    h, w = _image_hw(_image_levels(sdata.images[key])[0])
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
