"""her2st leave-one-section-out: SpaCRD with the shipped defaults against simple baselines, same folds.

For each of the 8 labelled her2st sections, train on the other 7 and score the held-out one. No label of the
held-out section is used for training, thresholds or normalisation. SpaCRD runs exactly as the README
quickstart chains it (image-less: no labelled H&E exists); the baselines use scanpy / scikit-learn / LightGBM.

    # 1. run (resumable: each finished method x seed x section is a file under --work)
    python benchmarks/her2st_loo.py run --methods "SpaCRD (default)" --seeds 0 3
    python benchmarks/her2st_loo.py run --methods "LogReg (z + smoothing)" "LightGBM (z + smoothing)" \
        "ERBB2 alone" "Marker score"
    # 2. collect the complete method x seed sets into results/her2st_loo.csv, results/her2st_loo_scores.csv.gz
    #    and write the report (incomplete sets are left out)
    python benchmarks/her2st_loo.py collect
    # rebuild results/her2st_loo.md from the committed CSV (no data, no training)
    python benchmarks/her2st_loo.py report

SpaCRD's ``seed`` starts its ensemble's consecutive seeds (3 networks by default), so seeds 0 and 3 are
independent replicates and seeds 0 and 1 are not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import _common as cm
import numpy as np
import pandas as pd

DEFAULT = "SpaCRD"
METHODS = [DEFAULT, "LogReg (z + smoothing)", "LightGBM (z + smoothing)", "ERBB2 alone", "Marker score"]
#: Run order: the sections never looked at during model selection first, so a cut-short run is still clean.
RUN_ORDER = ["A1", "C1", "D1", "E1", "F1", "B1", "G2", "H1"]
CSV = cm.RESULTS / "her2st_loo.csv"
SCORES = cm.RESULTS / "her2st_loo_scores.csv.gz"
REPORT = cm.RESULTS / "her2st_loo.md"
COLUMNS = ["auc", "ap", "f1", "ks", "called_share", "labelled_share"]


def run_one(method: str, sources, target, *, seed: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Scores, label-free calls (``None`` for scores that are not probabilities) and fit info of one method."""
    if method == DEFAULT:
        s, c = cm.spacrd(sources, target, seed=seed)
        return s, c, {}
    if method in ("LogReg (z + smoothing)", "LightGBM (z + smoothing)"):
        genes = cm.select_genes(sources, target)
        Xs, Xt = cm.smoothed_z(sources, target, genes)
        fit = cm.logreg if method.startswith("LogReg") else cm.lightgbm
        groups = sources.obs["section"].astype(str).to_numpy()
        p, info = fit(Xs, sources.obs["cancer"].to_numpy(int), groups, Xt, seed=seed)
        return p, cm.half_smooth(target, p), info
    if method == "ERBB2 alone":
        return cm.erbb2(target), None, {}
    if method == "Marker score":
        return cm.marker_score(target, seed=seed), None, {}
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")


def _claim(stem: Path) -> bool:
    """True when this process should compute ``stem``: not finished and not being computed by a live process
    (a ``.lock`` file with its pid), so several ``run`` processes can share one ``--work`` folder."""
    if stem.with_suffix(".json").exists():
        return False
    lock = stem.with_name(stem.name + ".lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False  # a live process holds it
        except (ProcessLookupError, ValueError):
            lock.write_text(str(os.getpid()))  # stale lock of a killed run: take it over
            return True
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def run(args) -> None:
    import torch

    import spacrd_sc as sc_crd

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    secs = cm.load_sections()
    for seed in args.seeds:
        for section in [s for s in RUN_ORDER if s in args.sections]:
            todo = [m for m in args.methods if _claim(work / f"{m}__{seed}__{section}")]
            if not todo:
                continue
            sources, target = cm.split_fold(secs, section)
            for method in todo:
                t0 = time.perf_counter()
                scores, calls, info = run_one(method, sources, target, seed=seed)
                seconds = time.perf_counter() - t0
                row = {
                    "method": method,
                    "seed": seed,
                    "section": section,
                    **cm.metrics(target, scores, calls),
                    "seconds": seconds,
                    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                    "torch_threads": torch.get_num_threads(),
                    "info": json.dumps(info),
                    "finished": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                    "versions": f"spacrd_sc {sc_crd.__version__}, torch {torch.__version__}, "
                    f"Python {platform.python_version()}",
                }
                pd.DataFrame(
                    {
                        "section": section,
                        "spot": target.obs_names,
                        "method": method,
                        "seed": seed,
                        "score": np.round(scores, 4),
                        "call": calls.astype(int) if calls is not None else -1,
                    }
                ).to_csv(work / f"{method}__{seed}__{section}.csv", index=False)
                (work / f"{method}__{seed}__{section}.json").write_text(json.dumps(row))
                print(
                    f"{method:28s} seed {seed} {section}: AUC {row['auc']:.3f} F1 {row['f1']:.3f} "
                    f"{seconds:.0f} s, peak RSS {row['peak_rss_gb']:.2f} GB",
                    flush=True,
                )


def collect(args) -> None:
    work = Path(args.work)
    rows = [json.loads(f.read_text()) for f in sorted(work.glob("*.json"))]
    df = pd.DataFrame(rows).sort_values(["method", "seed", "section"])
    complete = df.groupby(["method", "seed"])["section"].transform("nunique") == len(cm.SECTIONS)
    for (m, seed), g in df[~complete].groupby(["method", "seed"]):
        print(f"left out (not every section held out yet): {m} seed {seed}, {len(g)} sections")
    df = df[complete]
    df.to_csv(CSV, index=False, float_format="%.6g")
    keep = {f"{m}__{seed}__{sec}.csv" for m, seed, sec in df[["method", "seed", "section"]].itertuples(index=False)}
    spots = pd.concat([pd.read_csv(f) for f in sorted(work.glob("*.csv")) if f.name in keep], ignore_index=True)
    spots.to_csv(SCORES, index=False, compression={"method": "gzip", "mtime": 0})
    REPORT.write_text(report(df))
    print(REPORT.read_text())


def _fmt(x: float, nd: int = 3) -> str:
    return "" if pd.isna(x) else f"{x:.{nd}f}"


def report(df: pd.DataFrame) -> str:
    """The Markdown report, from the metrics CSV alone."""
    methods = [m for m in METHODS if m in set(df["method"])]
    # per method and section: mean over seeds; then the 8-section mean
    per = df.groupby(["method", "section"])[COLUMNS + ["seconds"]].mean()
    seeds = df.groupby("method")["seed"].unique()
    paper = cm.PAPER["methods"]
    n_sec = df.groupby("method")["section"].nunique()
    lines = [
        "# her2st leave-one-section-out: SpaCRD with the shipped defaults and baselines",
        "",
        "Built by `python benchmarks/her2st_loo.py collect` from `her2st_loo.csv` (rebuild: `... report`).",
        "Each of the 8 labelled sections is scored by models trained on the other 7; no label of the held-out",
        "section is used for training, thresholds or normalisation. Labels: cancer = invasive cancer + cancer in",
        "situ (every other spot, `undetermined` included, counts as non-cancer). SpaCRD: package defaults as the",
        "README quickstart chains them, image-less (no labelled H&E exists here); its `seed` starts a 3-network",
        "ensemble. F1 and the called share use the package's label-free call (`half_smooth`: 0.5 cut on the",
        "graph-smoothed probability), applied the same way to the baselines' probabilities; ERBB2 and the marker",
        "score are not probabilities and get no call. Baselines: per-section z-scores of 3000 batch-aware HVGs of",
        "the sources, smoothed over the 6-neighbour graph; hyper-parameters by leave-one-source-section-out CV.",
        "",
        "## Mean over the held-out sections",
        "",
        "| method | seeds | sections | AUC | AP | F1 | KS | called share | labelled share | s / fold | peak RSS GB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        mean = per.loc[m].mean()
        rss = df.loc[df["method"] == m, "peak_rss_gb"].max()
        name = f"**{m}**" if m == DEFAULT else m
        lines.append(
            f"| {name} | {', '.join(map(str, sorted(seeds[m])))} | {n_sec[m]} | {_fmt(mean.auc)} | {_fmt(mean.ap)} | "
            f"{_fmt(mean.f1)} | {_fmt(mean.ks)} | {_fmt(mean.called_share, 2)} | {_fmt(mean.labelled_share, 2)} | "
            f"{mean.seconds:.0f} | {rss:.2f} |"
        )
    for name, key in (("SpaCRD, UNI H&E (paper)", "SpaCRD"), ("SpaCell-Plus (paper)", "SpaCell-Plus")):
        p = cm.PAPER["mean"][key]
        lines.append(
            f"| *published: {name}* | – | 8 | *{p['auc']:.3f}* | *{p['ap']:.3f}* | *{p['f1']:.3f}*† | | | | | |"
        )
    lines += [
        "",
        "*Published* rows: SpaCRD paper (Xue et al., AAAI 2026) Table 2, from `paper_values.json`; with UNI H&E",
        "features, which our image-less runs do not have. † The paper's F1 took its threshold from the target's true",
        "prevalence (label leakage), so it is not comparable to a label-free F1.",
    ]
    if DEFAULT in seeds and len(seeds[DEFAULT]) > 1:
        by_seed = df[df["method"] == DEFAULT].groupby("seed")[["auc", "f1"]].mean()
        lines += [
            "",
            f"SpaCRD, 8-section mean per seed: AUC {', '.join(_fmt(v) for v in by_seed.auc)}; "
            f"F1 {', '.join(_fmt(v) for v in by_seed.f1)} (seeds {', '.join(map(str, by_seed.index))}).",
        ]
    d = df[df["method"] == DEFAULT]
    if len(d):
        lines += [
            "",
            "SpaCRD wall time per fold (align + fit_vrbca + cancer_score, 3 networks): median "
            f"{d.seconds.median():.0f} s, range {d.seconds.min():.0f}–{d.seconds.max():.0f} s, torch threads "
            f"{int(d.torch_threads.max())}; peak RSS"
            f" {d.peak_rss_gb.max():.2f} GB. The 2-core machine was shared with other jobs during the run, so times are"
            " upper bounds (`fold_speed.py` times one fold alone). Run finished "
            f"{d.finished.max()} UTC; {d.versions.iloc[0]}.",
        ]

    def section_table(col: str, title: str, with_paper: str | None, nd: int = 3) -> list[str]:
        out = ["", f"## {title}", "", "| method | " + " | ".join(cm.SECTIONS) + " | mean |"]
        out.append("|---|" + "---:|" * (len(cm.SECTIONS) + 1))
        for m in methods:
            v = per.loc[m][col].reindex(cm.SECTIONS)
            if v.isna().all():
                continue
            out.append(f"| {m} | " + " | ".join(_fmt(x, nd) for x in v) + f" | {_fmt(v.mean(), nd)} |")
        if with_paper:
            for key in ("SpaCRD", "SpaCell-Plus"):
                if with_paper in paper[key]["A1"]:
                    v = [paper[key][s][with_paper] for s in cm.SECTIONS]
                    out.append(
                        f"| *published: {key}{' (UNI H&E)' if key == 'SpaCRD' else ''}* | "
                        + " | ".join(f"*{x:.3f}*" for x in v)
                        + f" | *{cm.PAPER['mean'][key][with_paper]:.3f}* |"
                    )
        return out

    lines += section_table("auc", "Per section: AUC", "auc")
    lines += section_table("ap", "Per section: average precision", "ap")
    lines += section_table("f1", "Per section: F1 at the label-free call (published F1: label-leaking threshold)", "f1")
    lines += section_table("called_share", "Per section: called cancer share", None, 2)
    lab = per["labelled_share"].groupby(level="section").first().reindex(cm.SECTIONS)
    lines.append("| *labelled share* | " + " | ".join(_fmt(x, 2) for x in lab) + f" | {_fmt(lab.mean(), 2)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and score; one file per method x seed x section under --work")
    r.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    r.add_argument("--seeds", nargs="+", type=int, default=[0])
    r.add_argument("--sections", nargs="+", default=cm.SECTIONS, choices=cm.SECTIONS)
    for s in (r, sub.add_parser("collect", help="merge --work into results/ and write the report")):
        s.add_argument("--work", default="/tmp/her2st_loo")
    sub.add_parser("report", help="rebuild results/her2st_loo.md from results/her2st_loo.csv")
    args = p.parse_args()
    if args.cmd == "run":
        run(args)
    elif args.cmd == "collect":
        collect(args)
    else:
        REPORT.write_text(report(pd.read_csv(CSV)))
        print(REPORT.read_text())


if __name__ == "__main__":
    main()
