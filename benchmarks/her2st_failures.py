"""Where the her2st leave-one-section-out scores go wrong: section make-up and per-tissue-class scores.

Reads the per-spot SpaCRD scores written by ``her2st_loo.py --save-scores`` and, for comparison, refits the
strongest simple baseline (logistic regression on per-section z-scored, neighbourhood-smoothed expression)
on the same folds. For every held-out section it reports what the section is made of (spots, cancer share,
tissue classes, depth) and, per pathologist class, the mean score and the share of spots called cancer at
the section's label-free GMM threshold. Labels are used only to summarise, never to fit or threshold.

    SPACRD_DATA_DIR=../shared/data python benchmarks/her2st_failures.py \\
        --scores benchmarks/results/her2st_loo_scores.csv.gz

Writes ``benchmarks/results/her2st_failures.md`` and prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _baselines as bl  # noqa: E402  (run as a script from the repository root or benchmarks/)
import anndata as ad
import numpy as np
import pandas as pd
from her2st_loo import SECTIONS, default_data_dir, load_sections, split_fold  # noqa: E402
from scipy import sparse
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

import spacrd_sc as sc_crd
from spacrd_sc.tl import _inputs
from spacrd_sc.tl._threshold import gmm_threshold

RESULTS = Path(__file__).parent / "results"
BASELINE = "LogReg (z + smoothing)"
CANCER = ["invasive cancer", "cancer in situ"]


def baseline_scores(secs: dict[str, ad.AnnData], target_name: str) -> np.ndarray:
    """The smoothed logistic-regression baseline of ``her2st_loo.py`` on one fold."""
    target, sources, genes = split_fold(secs, target_name)
    Xs, Xt = bl.feature_pair(sources, target, genes, "smooth")
    ys = sources.obs["cancer"].to_numpy().astype(int)
    return bl.logreg(Xs, ys, _inputs.section_codes(sources, "section"), Xt)[0]


def section_profile(a: ad.AnnData) -> dict:
    X = a.X.tocsr() if hasattr(a.X, "tocsr") else np.asarray(a.X)
    counts = np.asarray(X.sum(axis=1)).ravel()
    detected = np.asarray((X > 0).sum(axis=1)).ravel()
    path = a.obs["pathology"].astype(str)
    return {
        "spots": a.n_obs,
        "cancer %": round(100 * float(a.obs["cancer"].mean()), 1),
        "undetermined %": round(100 * float((path == "undetermined").mean()), 1),
        "median UMIs": int(np.median(counts)),
        "median genes": int(np.median(detected)),
        "classes": ", ".join(f"{k} {v}" for k, v in path.value_counts().items() if v),
    }


def with_calls(scores: pd.DataFrame) -> pd.DataFrame:
    """Add the pathologist's binary label (``cancer``), each run's label-free GMM ``threshold`` (one per
    method × section × seed) and the resulting ``called`` column."""
    out = scores.assign(cancer=scores["pathology"].isin(CANCER))
    thr = out.groupby(["method", "section", "seed"])["score"].transform(lambda x: gmm_threshold(x.to_numpy())[0])
    return out.assign(threshold=thr, called=out["score"] >= thr)


def class_table(calls: pd.DataFrame) -> pd.DataFrame:
    """Per section × method × pathology class: spots, mean score, share called cancer (mean over seeds)."""
    t = (
        calls.groupby(["section", "method", "seed", "pathology"])
        .agg(spots=("score", "size"), mean_score=("score", "mean"), called=("called", "mean"))
        .reset_index()
    )
    t = t.rename(columns={"pathology": "class", "mean_score": "mean score"})
    t["called cancer %"] = 100 * t.pop("called")
    return t.groupby(["section", "method", "class"])[["spots", "mean score", "called cancer %"]].mean()


def pooled_class_table(calls: pd.DataFrame) -> pd.DataFrame:
    """Per method × pathology class over all held-out sections (:func:`spacrd_sc.tl.evaluate_groups`, one run
    per seed, mean over seeds): spots, share called cancer and mean score — which tissue is over-called."""
    parts = []
    for (method, seed), g in calls.groupby(["method", "seed"]):
        obs = g.set_index(g["section"] + ":" + g["spot"])
        a = ad.AnnData(obs=obs[["section", "pathology", "score", "called"]].copy())
        t = sc_crd.tl.evaluate_groups(a, "pathology", score_key="score", call_key="called", label_key=None)
        parts.append(t.assign(method=method, seed=seed).reset_index())
    t = pd.concat(parts).groupby(["pathology", "method"])[["n_spots", "called_fraction", "mean_score"]].mean()
    t["called cancer %"] = 100 * t.pop("called_fraction")
    return t.rename(columns={"n_spots": "spots", "mean_score": "mean score"})


def flat_columns(t: pd.DataFrame) -> pd.DataFrame:
    """``(metric, method)`` column pairs → ``"metric: method"`` for a readable markdown header."""
    return t.set_axis([f"{a}: {b}" for a, b in t.columns], axis=1)


def mixed_neighbourhood(a: ad.AnnData) -> np.ndarray:
    """Spots whose graph neighbourhood (the spot and its neighbours) holds both a cancer and a non-cancer tissue
    class of the pathologist (``undetermined`` counts as neither)."""
    path = a.obs["pathology"].astype(str).to_numpy()
    adj = sparse.csr_matrix(a.obsp["spatial_connectivities"]) + sparse.identity(a.n_obs)
    adj = ((adj + adj.T) > 0).astype(int)
    cancer = np.isin(path, CANCER).astype(int)
    other = (~np.isin(path, CANCER) & (path != "undetermined")).astype(int)
    return (adj @ cancer > 0) & (adj @ other > 0)


def region_table(calls: pd.DataFrame, secs: dict[str, ad.AnnData]) -> pd.DataFrame:
    """Per method × region (:func:`spacrd_sc.tl.tumour_regions` on the GMM calls of each run): share of spots
    with a mixed cancer/non-cancer neighbourhood and share labelled cancer over all sections and runs, and the
    mixed share per section (mean over seeds)."""
    rows = []
    for (method, section, seed), g in calls.groupby(["method", "section", "seed"]):
        a = secs[section].copy()
        g = g.set_index("spot").loc[a.obs_names]
        a.obs["m_score"], a.obs["m_cancer"] = g["score"].to_numpy(), g["called"].to_numpy()
        # um_per_px=1: the distances (in pixels then) are not used in this table
        sc_crd.tl.tumour_regions(a, score_key="m_score", um_per_px=1.0, key_added="region")
        a.obs["mixed"] = mixed_neighbourhood(a)
        for region, r in a.obs.groupby("region", observed=False):
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "section": section,
                    "region": region,
                    "spots": len(r),
                    "mixed %": 100 * r["mixed"].mean() if len(r) else np.nan,
                    "labelled cancer %": 100 * r["cancer"].mean() if len(r) else np.nan,
                }
            )
    df = pd.DataFrame(rows)
    per_section = df.groupby(["method", "region", "section"], sort=False)["mixed %"].mean().unstack("section")
    df["mixed"] = df["mixed %"].fillna(0) * df["spots"] / 100
    df["labelled"] = df["labelled cancer %"].fillna(0) * df["spots"] / 100
    pooled = df.groupby(["method", "region"], sort=False)[["spots", "mixed", "labelled"]].sum()
    out = pd.DataFrame(
        {
            "all: mixed %": 100 * pooled["mixed"] / pooled["spots"],
            "all: labelled cancer %": 100 * pooled["labelled"] / pooled["spots"],
        }
    )
    return out.join(per_section)


def threshold_table(calls: pd.DataFrame) -> pd.DataFrame:
    """Per section × method: GMM threshold, share called cancer against the true share, F1 at the GMM
    threshold and, as a diagnostic only, the best F1 any threshold would give (needs the labels, so it is
    never used to choose anything: it separates ranking errors from thresholding errors)."""
    rows = []
    for (method, section, _seed), g in calls.groupby(["method", "section", "seed"]):
        x, y = g["score"].to_numpy(), g["cancer"].to_numpy()
        prec, rec, _ = precision_recall_curve(y, x)
        best = np.nanmax(np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0))
        rows.append(
            {
                "section": section,
                "method": method,
                "GMM threshold": g["threshold"].iloc[0],
                "called cancer %": 100 * float(g["called"].mean()),
                "true cancer %": 100 * float(y.mean()),
                "F1 at GMM threshold": f1_score(y, g["called"]),
                "best F1 (hindsight)": best,
            }
        )
    return pd.DataFrame(rows).groupby(["section", "method"]).mean()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding her2st/ (default: $SPACRD_DATA_DIR)")
    p.add_argument("--scores", default=str(RESULTS / "her2st_loo_scores.csv.gz"))
    p.add_argument("--method", default="SpaCRD", help="method in the scores file to analyse")
    p.add_argument("--out", default=str(RESULTS / "her2st_failures.md"))
    args = p.parse_args()

    secs = load_sections(str(args.data_dir or default_data_dir()))
    scores = pd.read_csv(args.scores)
    scores = scores[scores["method"] == args.method]
    if scores.empty:
        raise SystemExit(f"No scores for method {args.method!r} in {args.scores}.")
    parts = [scores]
    for s in SECTIONS:
        if s in set(scores["section"]):
            t = secs[s]
            parts.append(
                pd.DataFrame(
                    {
                        "method": BASELINE,
                        "section": s,
                        "seed": 0,
                        "spot": t.obs_names,
                        "pathology": t.obs["pathology"].astype(str).to_numpy(),
                        "score": baseline_scores(secs, s),
                    }
                )
            )
    both = with_calls(pd.concat(parts, ignore_index=True))

    auc = (
        both.groupby(["section", "method", "seed"])
        .apply(lambda g: roc_auc_score(g["cancer"], g["score"]), include_groups=False)
        .groupby(["section", "method"])
        .mean()
        .unstack()
        .round(3)
    )
    profile = pd.DataFrame({s: section_profile(secs[s]) for s in auc.index}).T
    overview = profile.join(auc)
    classes = class_table(both).round(2)
    called = classes["called cancer %"].unstack("method")
    lines = [
        "# Where the her2st LOO scores go wrong",
        "",
        f"Per-spot scores of {args.method} from `{Path(args.scores).name}` "
        f"({scores['seed'].nunique()} seed(s), mean over seeds) and of {BASELINE} refitted on the same folds. "
        "'Called cancer' = score at or above the held-out section's label-free GMM threshold. "
        "Cancer = invasive cancer + cancer in situ.",
        "",
        "## Sections (sorted by the model's AUC)",
        "",
        overview.sort_values(args.method).to_markdown(),
        "",
        "## Thresholds: is the gap in ranking or in the label-free cut?",
        "",
        "'best F1 (hindsight)' uses the labels and is a diagnostic only; every reported F1 uses the GMM threshold.",
        "",
        threshold_table(both).round(3).to_markdown(),
        "",
        "## Share of each pathologist class called cancer (%)",
        "",
        called.round(1).to_markdown(),
        "",
        "## Mean score per class",
        "",
        classes["mean score"].unstack("method").round(3).to_markdown(),
        "",
        "## Which tissue is over-called? All held-out sections pooled (`sc_crd.tl.evaluate_groups`)",
        "",
        "Share of each pathologist class called cancer and its mean score, over the spots of all 8 held-out "
        "sections (mean over seeds). Cancer classes should be near 100 %, the others near 0 %.",
        "",
        flat_columns(pooled_class_table(both).unstack("method")[["called cancer %", "mean score", "spots"]])
        .round(3)
        .to_markdown(),
        "",
        "## Tumour regions: is the boundary where the tissue is mixed? (`sc_crd.tl.tumour_regions`)",
        "",
        "Regions from each run's GMM calls (minimum region 3 spots; boundary = called spots with a non-called "
        "neighbour and vice versa). 'mixed %' = share of spots whose neighbourhood (spot + graph neighbours) holds "
        "both a cancer and a non-cancer pathologist class; 'all' pools the spots of the 8 sections (and seeds), the "
        "section columns give its mixed % per section.",
        "",
        region_table(both, secs).round(1).to_markdown(),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
