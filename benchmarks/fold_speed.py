"""Wall time and peak memory of one her2st leave-one-section-out fold with the default schedule.

    SPACRD_DATA_DIR=../shared/data python benchmarks/fold_speed.py --target G2 --repeats 3

Prints a table and writes ``benchmarks/results/fold_speed.md``. Timings on a shared machine are noisy:
the table gives the median over repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from datetime import datetime
from pathlib import Path

import anndata as ad
import numpy as np
import squidpy as sq
import torch

import spacrd_sc as sc_crd

SECTIONS = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="G2", choices=SECTIONS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-neighbors", type=int, default=6, help="graph neighbours per spot read by the model")
    p.add_argument(
        "--n-members",
        type=int,
        default=None,
        help="networks in the model (a seed ensemble when > 1; default: the package default)",
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "fold_speed.md"))
    args = p.parse_args()

    t0 = time.perf_counter()
    secs = {s: sc_crd.datasets.her2st(s).tables["table"] for s in SECTIONS}
    load_s = time.perf_counter() - t0
    sources = ad.concat(
        {s: a for s, a in secs.items() if s != args.target}, label="section", join="inner", index_unique="-"
    )
    target = secs[args.target]
    k = args.n_neighbors
    sq.gr.spatial_neighbors_knn(sources, library_key="section", n_neighs=k)
    sq.gr.spatial_neighbors_knn(target, n_neighs=k)

    rows = []
    for r in range(args.repeats):
        t = [time.perf_counter()]
        # the package defaults unless asked otherwise (model_kwargs only then)
        extra = {"n_neighbors": k} if k != 6 else {}
        if args.n_members is not None:
            extra["n_members"] = args.n_members
        model = sc_crd.tl.align(
            sources,
            image_key=None,
            device=args.device,
            seed=r,
            progress_bar=False,
            **({"model_kwargs": extra} if extra else {}),
        )
        t.append(time.perf_counter())
        sc_crd.tl.fit_vrbca(sources, model, device=args.device, seed=r, progress_bar=False)
        t.append(time.perf_counter())
        sc_crd.tl.cancer_score(target, model)
        t.append(time.perf_counter())
        auc = sc_crd.tl.evaluate(target)["auc"]
        rows.append(np.diff(t).tolist() + [t[-1] - t[0], auc])
        print(
            f"repeat {r}: align {rows[-1][0]:.1f}s, fit_vrbca {rows[-1][1]:.1f}s, score {rows[-1][2]:.1f}s, "
            f"total {rows[-1][3]:.1f}s (AUC {auc:.3f})",
            flush=True,
        )
    med = np.median(np.asarray(rows), axis=0)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    lines = [
        f"# One her2st leave-one-section-out fold (default schedule, image-less, {k} neighbours"
        + (f", {args.n_members} networks)" if args.n_members is not None else ", package-default ensemble)"),
        "",
        f"Target {args.target}; sources: the other 7 labelled sections ({sources.n_obs} spots, "
        f"{len(model.genes)} genes). Device {args.device}; {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}; "
        f"{datetime.now():%Y-%m-%d %H:%M}. Loading the 8 sections took {load_s:.1f} s (not counted below).",
        "",
        f"| stage | median seconds over {args.repeats} repeats |",
        "|---|---:|",
        f"| `tl.align` (gene selection + stage 1) | {med[0]:.1f} |",
        f"| `tl.fit_vrbca` (stages 2+3) | {med[1]:.1f} |",
        f"| `tl.cancer_score` (target) | {med[2]:.1f} |",
        f"| **fold total** | **{med[3]:.1f}** |",
        "",
        f"Peak RSS of the process: {peak_gb:.2f} GB. Target AUC per repeat (seed = repeat): "
        + ", ".join(f"{r[4]:.3f}" for r in rows)
        + ".",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
