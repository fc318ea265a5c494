"""How reading patches and ``tl.extract_uni`` scale with the size of a JPEG-tiled pyramidal H&E.

For each side (px) a synthetic pyramidal TIFF is written by streaming 256 px JPEG tiles (tifffile with tile
generators; the whole image is never in memory): level 0 ``side`` x ``side`` px, then levels halved until the
longer side is ≤ 1024 px, as SubIFDs (the OME-TIFF / QuPath layout). The same 10.5 mm square of slide is
scanned at every size (40 000 px: 0.26 µm/px, a 40x scan; 20 000 px: 20x; ...), with 10 000 Visium-like spots
(55 µm, 100 µm hexagonal pitch). Then, in a fresh child process per size (public API only):

- ``read``: ``sc_crd.io.legacy_st(counts, spots, image=<tiff>)`` (header and tiles of the 2000 px copy only);
- ``patches``: ``sc_crd.pp.spot_patches(sdata, size=224, context=2.0, indices=...)`` over all 10 000 spots
  in batches of 256 (the 110 µm field read tile by tile; nothing kept): the reading speed alone;
- ``extract``: ``sc_crd.tl.extract_uni(sdata, backbone=<small>, pretrained=False, size=224, context=2.0)``
  with timm's tiny ``test_convnext2`` (random weights; UNI ViT-L on 2 CPU cores would take hours
  for 10 000 patches), batch 64, ``num_workers=0``: reading + network; peak RSS is the figure.

Peak RSS is the child's maximum resident set size (``getrusage``), quoted after each step.

    nice python benchmarks/scale_he.py                       # sides 10000 20000 40000
    nice python benchmarks/scale_he.py --sides 5000 10000

Writes a table to stdout and ``benchmarks/results/scale_he.md``; the TIFFs go to a temporary folder that is
deleted afterwards.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TILE = 256
SLIDE_UM = 10_500.0  # square of slide scanned at every size
N_SIDE = 100  # 100 x 100 hexagonal grid: 10 000 spots
PITCH_UM, SPOT_UM = 100.0, 55.0
BACKBONE = "test_convnext2"
SIZE, CONTEXT, BATCH = 224, 2.0, 64


# ---------------------------------------------------------------------------------------------- the slide
def _texture(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """H&E-like RGB at level-0 coordinates ``(x, y)`` (µm): stain gradients, nuclei-sized blobs, pixel noise."""
    rng = np.random.default_rng(seed)
    blobs = np.sin(x / 7.0) * np.cos(y / 9.0) + np.sin((x + y) / 23.0)  # ~10 µm structures
    wave = np.sin(x / 900.0) * np.cos(y / 1300.0)  # tissue-scale stain variation
    base = np.array([205.0, 130.0, 190.0])
    amp = np.array([30.0, 45.0, 20.0])
    img = base + amp * (0.6 * blobs[..., None] + 0.4 * wave[..., None])
    img += rng.normal(0.0, 6.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tiles(side: int, factor: int, um_per_px: float) -> Iterator[np.ndarray]:
    """Row-major 256 px tiles of the level ``factor`` times coarser than a ``side`` px level 0."""
    n = -(-side // factor)
    step = um_per_px * factor
    for ty in range(0, n, TILE):
        for tx in range(0, n, TILE):
            yy, xx = np.mgrid[ty : ty + TILE, tx : tx + TILE].astype(np.float64)
            yield _texture(xx * step, yy * step, seed=ty * 7919 + tx)


def write_pyramid(path: Path, side: int) -> tuple[int, float]:
    """Stream a JPEG-tiled pyramidal TIFF; returns (number of levels, seconds)."""
    import tifffile

    um_per_px = SLIDE_UM / side
    factors = [1]
    while -(-side // factors[-1]) > 1024:
        factors.append(factors[-1] * 2)
    opts = {"tile": (TILE, TILE), "photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 90}}
    t0 = time.perf_counter()
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, f in enumerate(factors):
            n = -(-side // f)
            extra = {"subifds": len(factors) - 1} if i == 0 else {"subfiletype": 1}
            tw.write(_tiles(side, f, um_per_px), shape=(n, n, 3), dtype=np.uint8, **opts, **extra)
    return len(factors), time.perf_counter() - t0


def spots(side: int) -> tuple[object, object]:
    """Counts (10 000 spots x 5 genes) and a legacy-ST spot table: a hexagonal grid in level-0 pixels."""
    import pandas as pd

    um_per_px = SLIDE_UM / side
    r, c = np.meshgrid(np.arange(N_SIDE), np.arange(N_SIDE), indexing="ij")
    x_um = 250.0 + c * PITCH_UM + (r % 2) * PITCH_UM / 2
    y_um = 250.0 + r * PITCH_UM * np.sqrt(3) / 2
    ids = [f"{a}x{b}" for a, b in zip(c.ravel(), r.ravel(), strict=True)]
    table = pd.DataFrame(
        {"x": c.ravel(), "y": r.ravel(), "pixel_x": x_um.ravel() / um_per_px, "pixel_y": y_um.ravel() / um_per_px}
    )
    counts = pd.DataFrame(
        np.random.default_rng(0).poisson(2.0, (len(ids), 5)), index=ids, columns=[f"G{i}" for i in range(5)]
    )
    return counts, table


# ---------------------------------------------------------------------------------------------- one size
def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(side: int, path: Path) -> dict[str, float]:
    """Read, time patch reading, then extract_uni; in its own process (peak RSS of this size only)."""
    import spacrd_sc as sc_crd

    out: dict[str, float] = {"rss_start_mib": _rss_mib()}
    counts, table = spots(side)
    t0 = time.perf_counter()
    sdata = sc_crd.io.legacy_st(
        counts, table, image=path, pixel_size_um=SLIDE_UM / side, spot_diameter_um=SPOT_UM, spot_spacing_um=PITCH_UM
    )
    out["read_s"] = time.perf_counter() - t0
    out["rss_read_mib"] = _rss_mib()
    n = sdata.tables["table"].n_obs
    t0 = time.perf_counter()
    for start in range(0, n, 256):
        idx = np.arange(start, min(start + 256, n))
        sc_crd.pp.spot_patches(sdata, size=SIZE, context=CONTEXT, indices=idx)
    out["patches_s"] = time.perf_counter() - t0
    out["rss_patches_mib"] = _rss_mib()
    t0 = time.perf_counter()
    sc_crd.tl.extract_uni(
        sdata,
        backbone=BACKBONE,
        pretrained=False,
        size=SIZE,
        context=CONTEXT,
        batch_size=BATCH,
        num_workers=0,
        device="cpu",
        progress_bar=False,
    )
    out["extract_s"] = time.perf_counter() - t0
    out["rss_extract_mib"] = _rss_mib()
    out["n_spots"] = n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[10000, 20000, 40000])
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "TIFF"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale_he.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), Path(args.child[1]))))
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="scale_he_") as tmp:
        for side in args.sides:
            path = Path(tmp) / f"he_{side}.tif"
            n_levels, write_s = write_pyramid(path, side)
            size_mib = path.stat().st_size / 2**20
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(side), str(path)], capture_output=True, text=True
            )
            wall = time.perf_counter() - t0
            path.unlink()
            if proc.returncode:
                raise RuntimeError(f"side {side} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            row = {"side": side, "levels": n_levels, "file_mib": size_mib, "write_s": write_s, "wall_s": wall, **res}
            row["um_per_px"] = SLIDE_UM / side
            row["field_px"] = CONTEXT * SPOT_UM / row["um_per_px"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = _report(rows)
    print(report)
    args.out.write_text(report)


def _slope(rows: list[dict], key: str) -> float:
    px = np.log([r["side"] ** 2 for r in rows])
    return float(np.polyfit(px, np.log([r[key] for r in rows]), 1)[0]) if len(rows) > 1 else float("nan")


def _report(rows: list[dict]) -> str:
    n = rows[0]["n_spots"]
    lines = [
        "# Big H&E, tile-wise: patch reading and `tl.extract_uni` vs image size",
        "",
        f"`nice python benchmarks/scale_he.py --sides {' '.join(str(r['side']) for r in rows)}` "
        f"({platform.machine()}, {platform.python_version()}, {_dt.date.today()}; one run per size on a 2-core "
        "machine shared with five other jobs: expect ±30 % noise in the times).",
        "",
        f"JPEG-tiled pyramidal TIFF (256 px tiles, quality 90, levels halved to ≤ 1024 px), the same 10.5 mm of "
        f"slide at every size; {n:,} Visium-like spots (55 µm, 100 µm pitch); patches of {SIZE} px from a "
        f"{CONTEXT:g}-spot (110 µm) field; `extract_uni` with `{BACKBONE}` (random weights), batch {BATCH}, "
        "`num_workers=0`, CPU. RSS in MiB (maximum resident set of a fresh process per size).",
        "",
        "| image (px) | µm/px | field (px) | levels | file (MiB) | read (s) | RSS after read | patches (s) "
        "| patches/s | extract_uni (s) | network (s) | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['side']:,} x {r['side']:,} | {r['um_per_px']:.3f} | {r['field_px']:.0f} | {r['levels']} "
            f"| {r['file_mib']:.0f} | {r['read_s']:.1f} | {r['rss_read_mib']:.0f} | {r['patches_s']:.1f} "
            f"| {r['n_spots'] / r['patches_s']:.0f} | {r['extract_s']:.1f} "
            f"| {max(r['extract_s'] - r['patches_s'], 0):.1f} | {r['rss_extract_mib']:.0f} |"
        )
    big = rows[-1]
    lines += [
        "",
        f"Growth with the number of image pixels ({rows[0]['side']:,}² → {big['side']:,}², "
        f"{big['side'] ** 2 / rows[0]['side'] ** 2:.0f}x), exponent k of value ~ pixels^k: "
        f"peak RSS k = {_slope(rows, 'rss_extract_mib'):.2f}, read k = {_slope(rows, 'read_s'):.2f}, "
        f"patch reading k = {_slope(rows, 'patches_s'):.2f}, extract_uni k = {_slope(rows, 'extract_s'):.2f}.",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
