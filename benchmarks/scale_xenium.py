"""How the Xenium reader scales: pseudo-spots from up to 100 M transcripts (and 1 M cells), wall time and peak RSS.

For each size a synthetic Xenium output folder is written by streaming (never a whole table in memory):

- ``transcripts.parquet`` in row groups of 1 M rows: ``transcript_id``, ``feature_name`` (dictionary-encoded:
  400 genes with log-normal expression, plus 20 ``NegControlProbe_*``, 41 ``NegControlCodeword_*`` and 100
  ``UnassignedCodeword_*`` features, ~1 % of the transcripts), ``x_location`` / ``y_location`` / ``z_location``
  (µm, float32), ``qv`` (float32: 60 % at 40, 28 % in 20-40, 12 % below 20), ``overlaps_nucleus``,
  ``codeword_index``, ``codeword_category``, ``is_gene``. Transcripts lie in a tissue ellipse at 150 per
  100 µm² (so the section grows with the count) in random order (every batch touches every square: the
  worst order for the reader). Columns the reader never reads (``cell_id``, ``fov_name``,
  ``nucleus_distance``) are left out: Parquet column projection skips their bytes;
- the cell table spatialdata-io reads: ``experiment.xenium``, ``cell_feature_matrix.h5`` (one cell per 100
  transcripts, ~100 counts each, written 100 000 cells at a time), ``cells.parquet``, an empty
  ``cells.zarr.zip`` (Xenium 1.0 layout, integer cell ids).

Each size is then read in a fresh child process by the public reader,
``sc_crd.io.xenium(path, bin_size_um=55, source=...)``, once with ``source="transcripts"`` (the transcripts
streamed in Arrow batches into 55 µm squares) and once with ``source="cells"``. The child reports its wall time
and its own peak resident set size (``VmHWM``) next to its RSS after the imports (the baseline); a thread
samples its RSS every 20 ms, split by the reader's log messages into the cell-table read, the streaming of
the transcripts and the building of tables and shapes. The script checks that counts are conserved (``X``
sums to the kept transcripts; kept + dropped = rows).

    nice python benchmarks/scale_xenium.py                       # 3 M, 10 M, 30 M, 100 M transcripts
    nice python benchmarks/scale_xenium.py --sizes 1e6 3e6 --work /tmp/xe

Needs ~3.2 GiB of free disk per 100 M transcripts under ``--work`` (deleted after each size unless ``--keep``;
``--reuse`` reads the folders a ``--keep`` run left).
Writes a table to stdout and ``benchmarks/results/scale_xenium.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BIN_UM = 55.0
N_GENES = 400
#: control features: how many, their 10x feature type and codeword category
CONTROLS = {
    "NegControlProbe": (20, "Negative Control Probe", "negative_control_probe"),
    "NegControlCodeword": (41, "Negative Control Codeword", "negative_control_codeword"),
    "UnassignedCodeword": (100, "Unassigned Codeword", "unassigned_codeword"),
}
CONTROL_SHARE = 0.01
TX_PER_100UM2 = 150.0
TX_PER_CELL = 100
ROW_GROUP = 1_000_000
PIXEL_SIZE = 0.2125


def _features() -> tuple[list[str], list[str], list[str]]:
    """Feature names, their 10x feature types and codeword categories (genes first)."""
    names = [f"GENE{i:04d}" for i in range(N_GENES)]
    types = ["Gene Expression"] * N_GENES
    cats = ["predesigned_gene"] * N_GENES
    for prefix, (n, ftype, cat) in CONTROLS.items():
        names += [f"{prefix}_{i:04d}" for i in range(n)]
        types += [ftype] * n
        cats += [cat] * n
    return names, types, cats


def _ellipse_points(rng: np.random.Generator, n: int, w: float, h: float) -> np.ndarray:
    """``n`` uniform points (x, y) in µm inside the ellipse inscribed in ``w`` x ``h`` (float64)."""
    out, got = np.empty((n, 2)), 0
    while got < n:
        m = int((n - got) * 1.3) + 16
        p = rng.uniform(0, 1, (m, 2))
        p = p[((p[:, 0] - 0.5) ** 2 + (p[:, 1] - 0.5) ** 2) < 0.25][: n - got]
        out[got : got + len(p)] = p * [w, h]
        got += len(p)
    return out


def write_xenium(root: Path, n_tx: int, *, seed: int = 0) -> dict[str, float]:
    """Write the synthetic Xenium folder for ``n_tx`` transcripts (see the module docstring); return sizes."""
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr
    from scipy import sparse

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names, types, cats = _features()
    n_ctrl = len(names) - N_GENES
    # section: an ellipse of aspect 1.4 holding n_tx transcripts at TX_PER_100UM2
    area = n_tx / TX_PER_100UM2 * 100.0 / (np.pi / 4)
    h = float(np.sqrt(area / 1.4))
    w = 1.4 * h
    expr = rng.lognormal(0.0, 1.2, N_GENES)
    p_gene = expr / expr.sum()

    # --- transcripts.parquet, one row group at a time
    cat_names = sorted(set(cats))
    cat_of = np.array([cat_names.index(c) for c in cats], dtype=np.int32)
    feat_dict, cat_dict = pa.array(names), pa.array(cat_names)
    schema = pa.schema(
        [
            ("transcript_id", pa.uint64()),
            ("feature_name", pa.dictionary(pa.int32(), pa.string())),
            ("x_location", pa.float32()),
            ("y_location", pa.float32()),
            ("z_location", pa.float32()),
            ("qv", pa.float32()),
            ("overlaps_nucleus", pa.uint8()),
            ("codeword_index", pa.int32()),
            ("codeword_category", pa.dictionary(pa.int32(), pa.string())),
            ("is_gene", pa.bool_()),
        ]
    )
    t0 = time.perf_counter()
    with pq.ParquetWriter(root / "transcripts.parquet", schema) as writer:
        for start in range(0, n_tx, ROW_GROUP):
            m = min(ROW_GROUP, n_tx - start)
            feat = rng.choice(N_GENES, m, p=p_gene).astype(np.int32)
            ctrl = rng.random(m) < CONTROL_SHARE
            feat[ctrl] = N_GENES + rng.integers(0, n_ctrl, int(ctrl.sum()), dtype=np.int32)
            u = rng.random(m)
            qv = np.where(u < 0.60, 40.0, np.where(u < 0.88, rng.uniform(20, 40, m), rng.uniform(0, 20, m)))
            xy = _ellipse_points(rng, m, w, h).astype(np.float32)
            batch = pa.record_batch(
                [
                    pa.array(np.arange(start, start + m, dtype=np.uint64)),
                    pa.DictionaryArray.from_arrays(pa.array(feat), feat_dict),
                    pa.array(xy[:, 0]),
                    pa.array(xy[:, 1]),
                    pa.array(rng.uniform(5, 25, m).astype(np.float32)),
                    pa.array(qv.astype(np.float32)),
                    pa.array((rng.random(m) < 0.4).astype(np.uint8)),
                    pa.array(feat),
                    pa.DictionaryArray.from_arrays(pa.array(cat_of[feat]), cat_dict),
                    pa.array(feat < N_GENES),
                ],
                schema=schema,
            )
            writer.write_batch(batch, row_group_size=ROW_GROUP)
    t_tx = time.perf_counter() - t0

    # --- the cell table (1 cell per TX_PER_CELL transcripts), 100 000 cells at a time
    t0 = time.perf_counter()
    n_cells = max(n_tx // TX_PER_CELL, 100)
    xy_cells = _ellipse_points(rng, n_cells, w, h)
    with h5py.File(root / "cell_feature_matrix.h5", "w") as f:
        mg = f.create_group("matrix")
        mg.create_dataset("barcodes", data=np.arange(1, n_cells + 1).astype("S"))
        data = mg.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 20,))
        indices = mg.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1 << 20,))
        indptr = [np.zeros(1, np.int64)]
        totals = np.empty(n_cells, np.int64)
        for s in range(0, n_cells, 100_000):
            c = min(100_000, n_cells - s)
            per_cell = rng.poisson(TX_PER_CELL, c)
            cell = np.repeat(np.arange(c), per_cell)
            gene = rng.choice(N_GENES, len(cell), p=p_gene)
            X = sparse.csr_matrix((np.ones(len(cell), np.int32), (cell, gene)), shape=(c, len(names)))
            X.sum_duplicates()
            X.sort_indices()
            n0 = data.shape[0]
            data.resize((n0 + X.nnz,))
            indices.resize((n0 + X.nnz,))
            data[n0:] = X.data
            indices[n0:] = X.indices
            indptr.append(X.indptr[1:].astype(np.int64) + n0)
            totals[s : s + c] = per_cell
        mg.create_dataset("indptr", data=np.concatenate(indptr))
        mg.create_dataset("shape", data=np.array([len(names), n_cells], dtype=np.int32))
        fg = mg.create_group("features")
        fg.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        fg.create_dataset("feature_type", data=np.array(types, dtype="S"))
        fg.create_dataset("genome", data=np.array([b"GRCh38"] * len(names)))
        fg.create_dataset("id", data=np.array(names, dtype="S"))
        fg.create_dataset("name", data=np.array(names, dtype="S"))
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
    area_cell = rng.uniform(40, 160, n_cells)
    cells = pa.table(
        {
            "cell_id": pa.array(np.arange(1, n_cells + 1, dtype=np.int64)),
            "x_centroid": pa.array(xy_cells[:, 0]),
            "y_centroid": pa.array(xy_cells[:, 1]),
            "transcript_counts": pa.array(totals),
            "control_probe_counts": pa.array(np.zeros(n_cells, np.int64)),
            "control_codeword_counts": pa.array(np.zeros(n_cells, np.int64)),
            "total_counts": pa.array(totals),
            "cell_area": pa.array(area_cell),
            "nucleus_area": pa.array(area_cell / 3),
        }
    )
    pq.write_table(cells, root / "cells.parquet")
    del cells, xy_cells
    store = zarr.storage.ZipStore(root / "cells.zarr.zip", mode="w")
    zarr.open_group(store, mode="w", zarr_format=2)
    store.close()
    specs = {
        "run_name": "scale",
        "region_name": "synthetic",
        "preservation_method": "ffpe",
        "panel_name": "synthetic 400-gene panel",
        "panel_organism": "Human",
        "z_step_size": 3.0,
        "pixel_size": PIXEL_SIZE,
        "analysis_sw_version": "Xenium-1.0.1",
        "images": {"morphology_focus_filepath": "morphology_focus.ome.tif"},
    }
    (root / "experiment.xenium").write_text(json.dumps(specs, indent=4))
    t_cells = time.perf_counter() - t0
    return {
        "n_tx": n_tx,
        "n_cells": n_cells,
        "section_mm": f"{w / 1000:.1f} x {h / 1000:.1f}",
        "parquet_mib": (root / "transcripts.parquet").stat().st_size / 2**20,
        "h5_mib": (root / "cell_feature_matrix.h5").stat().st_size / 2**20,
        "write_tx_s": t_tx,
        "write_cells_s": t_cells,
    }


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB: ``VmHWM`` (Linux; reset by ``exec``, unlike ``ru_maxrss``,
    which a child inherits from the parent it was forked from), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _rss_mib() -> float:
    """Current resident set size in MiB (Linux ``VmRSS``; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _Phases(logging.Handler):
    """Splits the read into phases by the reader's log messages and samples the RSS of each every 20 ms:
    ``cells`` (spatialdata-io reads the cell table), ``stream`` (from "Streaming ..." to "Kept ...": the
    transcripts streamed and summed) and ``finish`` (tables, shapes, metadata)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.phase, self.peak, self.start = "cells", {}, {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        new = "stream" if msg.startswith("Streaming") else "finish" if msg.startswith(("Kept", "Summed")) else None
        if new is not None:
            self.phase = new
            self.start[new] = _rss_mib()

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak[self.phase] = max(self.peak.get(self.phase, 0.0), _rss_mib())
            time.sleep(0.02)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def child(path: Path, source: str) -> None:
    """Read ``path`` with the public reader; print one JSON line (wall, peak RSS, baseline RSS, sizes)."""
    import pyarrow.parquet  # noqa: F401
    import spatialdata
    import spatialdata_io

    import spacrd_sc as sc_crd

    # what the reader imports (spatialdata-io loads its readers, scanpy and scikit-learn lazily): before the
    # baseline and the clock, so that both measure the read alone
    assert callable(spatialdata_io.xenium) and spatialdata.SpatialData is not None

    base = _peak_rss_mib()
    log = logging.getLogger("spacrd_sc")
    log.setLevel(logging.INFO)
    phases = _Phases()
    log.addHandler(phases)
    t0 = time.perf_counter()
    sdata = sc_crd.io.xenium(path, bin_size_um=BIN_UM, source=source, progress_bar=False)
    wall = time.perf_counter() - t0
    phases.stop()
    table = sdata.tables["table"]
    meta = table.uns["spatial"][next(iter(table.uns["spatial"]))]["metadata"]
    out = {
        "source": source,
        "wall_s": wall,
        "peak_mib": _peak_rss_mib(),
        "base_mib": base,
        "n_spots": int(table.n_obs),
        "counts": int(table.X.sum(dtype=np.float64)),
        "phase_peak_mib": phases.peak,
        "phase_start_mib": phases.start,
    }
    for k in ("n_cells", "n_transcripts", "n_transcripts_dropped", "n_transcripts_low_qv", "n_transcripts_control"):
        if k in meta:
            out[k] = int(meta[k])
    print("RESULT " + json.dumps(out), flush=True)


def run_child(path: Path, source: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "child", str(path), source], capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _slope(rows: list[dict], key: str, size: str = "n_tx") -> float:
    a, b = rows[0], rows[-1]
    return float(np.log(max(b[key], 1e-9) / max(a[key], 1e-9)) / np.log(b[size] / a[size]))


def report(rows: list[dict], args_line: str) -> str:
    machine = f"{platform.machine()}, Python {platform.python_version()}, {_dt.date.today().isoformat()}"
    head = (
        "| transcripts | cells | section (mm) | parquet (MiB) | source | pseudo-spots | read + aggregate (s) "
        "| peak RSS (MiB) | RSS after imports (MiB) |\n|---:|---:|---:|---:|---|---:|---:|---:|---:|\n"
    )
    body = ""
    for r in rows:
        for s in ("transcripts", "cells"):
            c = r[s]
            body += (
                f"| {r['n_tx']:,} | {r['n_cells']:,} | {r['section_mm']} | {r['parquet_mib']:,.0f} | {s} "
                f"| {c['n_spots']:,} | {c['wall_s']:.1f} | {c['peak_mib']:,.0f} | {c['base_mib']:,.0f} |\n"
            )
    text = (
        "# Xenium scale\n\n"
        f"`{args_line}` ({machine}; one run per size on a 2-core machine shared with five other jobs, under "
        "`nice`: wall times are noisy, ±30 %; peak RSS is the child process's own high-water mark, `VmHWM`).\n\n"
        + head
        + body
    )
    text += (
        "\n## Where the memory goes with `source='transcripts'`\n\n"
        "RSS sampled every 20 ms in the child, split by the reader's log messages: the cell table read by "
        "spatialdata-io, then the transcripts streamed and summed (RSS when streaming began, its peak while "
        "streaming, and the difference: what the streaming itself holds).\n\n"
        "| transcripts | cell-table read peak (MiB) | RSS when streaming began (MiB) | peak while streaming (MiB) "
        "| streaming's own (MiB) | table + shapes peak (MiB) |\n|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in rows:
        peak, start = r["transcripts"]["phase_peak_mib"], r["transcripts"]["phase_start_mib"]
        text += (
            f"| {r['n_tx']:,} | {peak.get('cells', 0):,.0f} | {start.get('stream', 0):,.0f} "
            f"| {peak.get('stream', 0):,.0f} | {peak.get('stream', 0) - start.get('stream', 0):,.0f} "
            f"| {peak.get('finish', 0):,.0f} |\n"
        )
    if len(rows) >= 2:
        flat = [
            {
                "n_tx": r["n_tx"],
                **{f"{s}_{k}": r[s][k] for s in ("transcripts", "cells") for k in ("wall_s", "peak_mib")},
                **{f"{s}_net": r[s]["peak_mib"] - r[s]["base_mib"] for s in ("transcripts", "cells")},
            }
            for r in rows
        ]
        a, b = rows[0], rows[-1]
        text += (
            f"\n## Growth\n\nFrom {a['n_tx']:,} to {b['n_tx']:,} transcripts ({b['n_tx'] / a['n_tx']:.0f}x; cells "
            "grow alike), exponent k of time or memory ~ size^k:\n\n"
            f"- `source='transcripts'`: time k = {_slope(flat, 'transcripts_wall_s'):.2f}; peak RSS "
            f"k = {_slope(flat, 'transcripts_peak_mib'):.2f} (above the import baseline: "
            f"k = {_slope(flat, 'transcripts_net'):.2f})\n"
            f"- `source='cells'`: time k = {_slope(flat, 'cells_wall_s'):.2f}; peak RSS "
            f"k = {_slope(flat, 'cells_peak_mib'):.2f} "
            f"(above the import baseline: k = {_slope(flat, 'cells_net'):.2f})\n"
        )
    return text


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(Path(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[3e6, 1e7, 3e7, 1e8], help="transcripts")
    parser.add_argument("--work", type=Path, default=None, help="folder for the synthetic sections (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the written folders")
    parser.add_argument("--reuse", action="store_true", help="read folders a previous --keep run left under --work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale_xenium.md")
    args = parser.parse_args()

    args_line = "nice python benchmarks/scale_xenium.py --sizes " + " ".join(f"{s:g}" for s in args.sizes)
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_xenium_"))
    rows = []
    try:
        for size in args.sizes:
            n_tx = int(size)
            path = work / f"xenium_{n_tx}"
            done = path / "written.json"
            if args.reuse and done.is_file():
                r = json.loads(done.read_text())
            else:
                r = write_xenium(path, n_tx)
                done.write_text(json.dumps(r))
            print(
                f"{n_tx:>12,} transcripts ({r['parquet_mib']:,.0f} MiB parquet, written in {r['write_tx_s']:.0f} s), "
                f"{r['n_cells']:,} cells ({r['write_cells_s']:.0f} s)",
                flush=True,
            )
            for source in ("transcripts", "cells"):
                c = run_child(path, source)
                r[source] = c
                print(
                    f"    {source:<11} -> {c['n_spots']:>7,} pseudo-spots | {c['wall_s']:7.1f} s | "
                    f"peak RSS {c['peak_mib']:8,.0f} MiB (after imports {c['base_mib']:,.0f})",
                    flush=True,
                )
            tx = r["transcripts"]
            assert tx["counts"] == tx["n_transcripts"] == n_tx - tx["n_transcripts_dropped"], tx
            rows.append(r)
            if not args.keep:
                shutil.rmtree(path)
            # written after every size, so that an interrupted run keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report(rows, args_line))
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(args.out.read_text())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
