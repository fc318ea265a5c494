"""Nested leave-one-section-out choice of the label-free call rule on the 8 labelled her2st sections.

For each outer fold ``T`` and each candidate rule of :mod:`spacrd_sc.tl._threshold`, the rule's inner-CV F1 is
the mean F1 over the 7 inner sections ``S ≠ T``, each scored by the pair model trained without ``{S, T}``
(``her2st_pairs.py``). The rule with the best inner F1 is applied to ``T``'s outer scores (models trained on
the 7 sections other than ``T``). ``T``'s labels are read only to report its F1 and true cancer share.
SpaCRD and the baselines share the folds, genes and candidate rules.

    python benchmarks/her2st_nested.py                # evaluate every rule, write CSV, report, figure
    python benchmarks/her2st_nested.py --report-only  # rebuild the report and figure from the CSV
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
from her2st_loo import PAPER, RESULTS, SECTIONS, default_data_dir, load_sections
from her2st_pairs import BASELINE_PLAN
from her2st_pairs import SPACRD_SETTINGS as _SETTINGS
from sklearn.metrics import f1_score, roc_auc_score

from spacrd_sc.model._config import DEFAULT_N_MEMBERS
from spacrd_sc.tl import cancer_score
from spacrd_sc.tl._threshold import RULES, call_cancer

#: Seed ensembles (``model_kwargs={"n_members": k}``): name -> (single-model setting, k). Member ``i`` of an ensemble
#: trained with seed ``b`` is exactly the single model trained with seed ``b + i`` (``tests/model/test_ensemble.py``),
#: and the ensemble's score is the mean of its members' probabilities, so its scores are composed here from the
#: single models' instead of refitted: the single models of seeds ``b·k … b·k + k − 1`` make the ensemble labelled
#: seed ``b`` (pair models: ``her2st_pairs.py --seeds``; outer: seed 0 from there, further seeds from the LOO run for
#: ``SpaCRD`` and from ``her2st_pairs.py --kinds outer --seeds`` for ``SpaCRD (8 epochs)``). Fit seconds are the sum
#: over the members. One fold (7 sources → 1 section) must stay within 2 minutes on the benchmark's 2-core CPU
#: (issue #12): a 30-epoch member takes ≈ 54 s, so 2 members at most; an 8-epoch one ≈ 36 s (fold with data
#: preparation), so up to 3. With ``scaling="balanced"`` the composition is close to, not exactly, the ensemble's
#: scores: at scoring each member re-centres the section on its own scores, the ensemble on its members' mean.
ENSEMBLES = {
    "SpaCRD (2 seeds)": ("SpaCRD", 2),
    "SpaCRD (8 epochs, 2 seeds)": ("SpaCRD (8 epochs)", 2),
    "SpaCRD (8 epochs, 3 seeds)": ("SpaCRD (8 epochs)", 3),
    "SpaCRD (balanced scaling, 3 seeds)": ("SpaCRD (balanced scaling)", 3),
    "SpaCRD (5 alignment epochs, 3 seeds)": ("SpaCRD (5 alignment epochs)", 3),
    "SpaCRD (section-invariant fusion, 3 seeds)": ("SpaCRD (section-invariant fusion)", 3),
    "SpaCRD (linear skip, 3 seeds)": ("SpaCRD (linear skip)", 3),
    "SpaCRD (gene dropout, 3 seeds)": ("SpaCRD (gene dropout)", 3),
}
#: Calibration candidates (fifth round, written after seeds 0–2 of "balanced scaling" showed inner F1 +0.018 at
#: inner AUC −0.001, which the accuracy rule rejects because it asks for an AUC gain too): name -> the seeds that
#: decide, three seeds trained only after this rule was committed. Adopted when, over those seeds, the mean inner
#: AUC is not worse (no more than two standard errors below the reference's) and the mean inner F1 at the chosen
#: rule is better by more than two standard errors. Seeds 0–2, which suggested the rule, do not count.
CALIBRATION_CANDIDATES = {"SpaCRD (balanced scaling)": (3, 4, 5)}
#: Sixth round (written and committed before any of its candidates' scores existed): candidates compared with a
#: reference network seed by seed, on the same seeds (paired differences, which the fifth round found far less noisy
#: than the seed-to-seed spread of either setting): name -> (kind, seeds, reference). The sixth round's reference is
#: the then default's member network :data:`DEFAULT_MEMBER`; the seventh round's (written before its candidate's
#: scores existed) is the member network of the default the sixth round adopted, ``SpaCRD (5 alignment epochs)``.
#: (``SpaCRD (gene dropout)`` was added to the seventh round after the linear skip's run had started, before any
#: score of its own existed.)
#: ``"accuracy"``: adopted when the mean paired difference of the inner AUC and of the inner F1 at the chosen rule
#: both exceed two standard errors of the paired differences. ``"speed"`` (non-inferiority): adopted when both lower
#: bounds (mean paired difference − two standard errors) stay above ``−NONINFERIORITY[...]`` and its median pair
#: fit is faster than the member network's; an accuracy winner takes precedence over a speed one.
PAIRED_CANDIDATES = {
    "SpaCRD (5 alignment epochs)": ("speed", (0, 1, 2), "SpaCRD (8 epochs)"),
    "SpaCRD (section-invariant fusion)": ("accuracy", (0, 1, 2), "SpaCRD (8 epochs)"),
    "SpaCRD (linear skip)": ("accuracy", (0, 1, 2), "SpaCRD (5 alignment epochs)"),
    "SpaCRD (gene dropout)": ("accuracy", (0, 1, 2), "SpaCRD (5 alignment epochs)"),
}
#: Non-inferiority margins of a speed candidate (inner AUC, inner F1 at the chosen rule): a third of the issue's
#: required lead over the baselines in AUC (0.01) and half of it in F1 (0.02).
NONINFERIORITY = {"auc": 0.003, "f1": 0.010}
#: Networks per model in the package default (``SpaCRD(n_members=...)``).
ENSEMBLE_SIZE = DEFAULT_N_MEMBERS
#: The package default of the fourth and fifth rounds (20 alignment epochs, 8 fusion epochs, 3 networks), the
#: reference of the decision: its seed-0 and seed-1 ensembles (single models of seeds 0–2 and 3–5) give the
#: seed-noise margins. The sixth round's decision made ``SpaCRD (5 alignment epochs, 3 seeds)`` the package default;
#: a later round compares its candidates with that (and its member network) instead.
DEFAULT_SETTING = "SpaCRD (8 epochs, 3 seeds)"
#: Its member network: single-network candidates are compared with this, seed by seed (pair models seeds 0–5).
DEFAULT_MEMBER = ENSEMBLES[DEFAULT_SETTING][0]
#: SpaCRD settings (the package default first; then ``her2st_pairs.SPACRD_SETTINGS`` and the seed ensembles) and
#: the baselines.
SPACRD_SETTINGS = [DEFAULT_SETTING] + [m for m in (*_SETTINGS, *ENSEMBLES) if m != DEFAULT_SETTING]
BASELINES = list(BASELINE_PLAN)
METHODS = SPACRD_SETTINGS + BASELINES
#: SpaCRD with its setting *and* call rule chosen per outer fold by the inner CV.
NESTED_SPACRD = "SpaCRD (setting + rule by inner CV)"
REPORTED = [NESTED_SPACRD, *METHODS]
CANDIDATES = list(RULES)
#: The package's default call rule: a candidate rule must beat it by the seed-noise margin to replace it.
INCUMBENT_RULE = inspect.signature(cancer_score).parameters["threshold"].default
TUMOUR_RICH = ["A1", "F1", "C1"]
OUT = RESULTS / "her2st_nested"


def load_scores(pairs_csv: Path, loo_csv: Path) -> pd.DataFrame:
    """Pair scores and outer scores of every method (SpaCRD outer: also the committed LOO run's seeds 1–4)."""
    df = pd.read_csv(pairs_csv)
    outer = pd.read_csv(loo_csv).query("method == 'SpaCRD'").assign(kind="outer")
    outer["model"] = outer["section"]
    df = pd.concat([df, outer], ignore_index=True)
    return pd.concat(
        [df, *(ensemble_scores(df, name, base, k) for name, (base, k) in ENSEMBLES.items())], ignore_index=True
    )


def ensemble_scores(scores: pd.DataFrame, name: str, base: str, k: int) -> pd.DataFrame:
    """Scores of setting ``base``'s ``k``-member seed ensembles (method ``name``): ensemble seed ``b`` is the mean
    of the single models' scores of seeds ``b·k … b·k + k − 1``, for every model and block whose k seeds are all
    present."""
    out = []
    for _, g in scores[scores.method == base].groupby(["kind", "model", "section"], sort=False):
        by_seed = dict(list(g.groupby("seed")))
        for b in range(int(max(by_seed)) // k + 1):
            seeds = range(b * k, (b + 1) * k)
            if not all(s in by_seed for s in seeds):
                continue
            members = [by_seed[s] for s in seeds]
            first = members[0]
            if not all(np.array_equal(m["spot"].to_numpy(), first["spot"].to_numpy()) for m in members):
                raise ValueError(f"{name}: spots differ between seeds for {first['model'].iloc[0]}")
            score = np.mean([m["score"].to_numpy() for m in members], axis=0)
            seconds = sum(m["seconds"].iloc[0] for m in members) if "seconds" in g else np.nan
            out.append(first.assign(method=name, score=score, seed=b, seconds=seconds))
    return pd.concat(out, ignore_index=True) if out else scores.iloc[:0]


def evaluate_rules(scores: pd.DataFrame, secs: dict, rules: list[str] | None = None) -> pd.DataFrame:
    """F1 and called share of every candidate rule (or of ``rules``) on every scored section (one row per rule
    and score set)."""
    n_lab = {s: (int(a.obs["cancer"].sum()), a.n_obs) for s, a in secs.items()}
    rows = []
    for (method, kind, model, section, seed), g in scores.groupby(["method", "kind", "model", "section", "seed"]):
        a = secs[section]
        if not np.array_equal(g["spot"].to_numpy(), a.obs_names.to_numpy()):
            raise ValueError(f"{method} {model} {section}: spots differ from the section's")
        held_out = model.split("+")
        pos, n = map(sum, zip(*(n_lab[s] for s in SECTIONS if s not in held_out), strict=True))
        share = pos / n  # training cancer share (source labels only)
        if g["source_share"].notna().all():
            assert abs(g["source_share"].iloc[0] - share) < 1e-9, (method, model, g["source_share"].iloc[0], share)
        y = a.obs["cancer"].to_numpy().astype(bool)
        p = g["score"].to_numpy()
        conn = a.obsp["spatial_connectivities"]
        seconds = g["seconds"].iloc[0] if "seconds" in g else np.nan  # fit wall time (not in the LOO CSV)
        base = {"method": method, "kind": kind, "model": model, "section": section, "seed": seed, "seconds": seconds}
        base.update(
            auc=roc_auc_score(y, p),
            true_share=y.mean(),
            graded_share=np.mean((p > 0.1) & (p < 0.9)),  # label-free: spots not pinned near 0 or 1
            cancer_low_share=np.mean(p[y] < 0.1),  # cancer spots scored at the non-cancer level (reporting only)
        )
        for rule in rules or CANDIDATES:
            calls, info = call_cancer(p, rule, source_share=share, connectivities=conn)
            rows.append(
                {
                    **base,
                    "rule": rule,
                    "f1": f1_score(y, calls),
                    "called_share": calls.mean(),
                    "est_share": info.get("cancer_share", np.nan),
                }
            )
    return pd.DataFrame(rows)


def inner_table(ev: pd.DataFrame) -> pd.DataFrame:
    """Inner-CV F1 per (method, outer fold, rule); NaN where an inner pair model is missing. Seed-0 models only
    (the default's further seeds are the members of the seed ensembles, which are labelled seed 0)."""
    inner = ev[(ev["kind"] == "pair") & (ev["seed"] == 0)].set_index(["method", "model", "section", "rule"])["f1"]
    rows = []
    for method in METHODS:
        for t in SECTIONS:
            for rule in CANDIDATES:
                f = []
                for s in SECTIONS:
                    if s != t:
                        m = "+".join(sorted([s, t], key=SECTIONS.index))
                        f.append(inner.get((method, m, s, rule), np.nan))
                rows.append(
                    {
                        "method": method,
                        "outer": t,
                        "rule": rule,
                        "inner_f1": np.mean(f),
                        "n_inner": int(np.isfinite(f).sum()),
                    }
                )
    return pd.DataFrame(rows)


def select(inner: pd.DataFrame, ev: pd.DataFrame) -> pd.DataFrame:
    """The chosen rule per (method, outer fold) and its outer F1 (mean over seeds), next to the GMM's."""
    cols = ["auc", "f1", "called_share", "true_share", "est_share"]
    outer = ev[ev["kind"] == "outer"].groupby(["method", "section", "rule"])[cols].mean()
    rows = []
    for (method, t), g in inner.groupby(["method", "outer"], sort=False):
        if not (g["n_inner"] == len(SECTIONS) - 1).all() or (method, t, "gmm") not in outer.index:
            continue
        best = g.loc[g["inner_f1"].idxmax()]  # ties: the first in RULES order (gmm first)
        o, gmm = outer.loc[(method, t, best["rule"])], outer.loc[(method, t, "gmm")]
        rows.append(
            {
                "method": method,
                "section": t,
                "rule": best["rule"],
                "inner_f1": best["inner_f1"],
                "auc": o["auc"],
                "f1": o["f1"],
                "f1_gmm": gmm["f1"],
                "true_share": o["true_share"],
                "called_share": o["called_share"],
                "called_share_gmm": gmm["called_share"],
                "est_share": o["est_share"],
            }
        )
    return pd.DataFrame(rows)


def select_setting(sel: pd.DataFrame) -> pd.DataFrame:
    """Per outer fold, the SpaCRD setting whose chosen rule has the best inner F1 (ties: the package default),
    as rows of method :data:`NESTED_SPACRD` with the chosen ``setting``; only folds where every setting has a
    complete nested selection."""
    g = sel[sel.method.isin(SPACRD_SETTINGS)]
    full = g.groupby("section")["method"].nunique() == len(SPACRD_SETTINGS)
    g = g[g.section.isin(full[full].index)].copy()
    if g.empty:
        return g.assign(setting=pd.Series(dtype=str))
    g["order"] = g["method"].map(SPACRD_SETTINGS.index)
    g = g.sort_values(["section", "order"])
    best = g.loc[g.groupby("section", sort=False)["inner_f1"].idxmax()]
    return best.drop(columns="order").assign(setting=best["method"], method=NESTED_SPACRD)


def with_gmm_fallback(sel: pd.DataFrame, ev: pd.DataFrame) -> pd.DataFrame:
    """``sel`` plus, for methods whose nested CV is incomplete, their outer results at the ``gmm`` rule
    (``rule`` = ``"gmm (nested CV pending)"``)."""
    pending = [m for m in METHODS if m not in set(sel["method"]) and m in set(ev.loc[ev.kind == "outer", "method"])]
    g = ev[(ev.kind == "outer") & ev.method.isin(pending) & (ev.rule == "gmm")]
    g = (
        g.groupby(["method", "section"])[["auc", "f1", "true_share", "called_share"]]
        .mean()
        .reset_index()
        .assign(rule="gmm (nested CV pending)")
    )
    return pd.concat([sel, g], ignore_index=True)


def figure(sel: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper = PAPER["methods"]["SpaCRD"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110)
    methods = [m for m in REPORTED if m in set(sel["method"])]
    width = 0.8 / (len(methods) + 1)
    x = np.arange(len(SECTIONS))
    for ax, metric, label in ((axes[0], "auc", "ROC-AUC"), (axes[1], "f1", "F1 (label-free rule chosen by inner CV)")):
        for i, m in enumerate(methods):
            v = sel[sel.method == m].set_index("section")[metric].reindex(SECTIONS)
            pending = (sel.loc[sel.method == m, "rule"] == "gmm (nested CV pending)").all()
            ax.bar(x + i * width, v.to_numpy(), width, label=f"{m} (ours{', gmm rule' if pending else ''})")
        ax.bar(
            x + len(methods) * width,
            [paper[s][metric] for s in SECTIONS],
            width,
            label="SpaCRD paper (with H&E; its F1 at a prevalence threshold)",
            hatch="//",
            edgecolor="black",
            alpha=0.6,
        )
        ax.set_xticks(x + width * len(methods) / 2, SECTIONS)
        ax.set_ylim(0.4, 1.0)
        ax.set_ylabel(label)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("her2st held-out sections: ours (nested CV) beside the published SpaCRD values")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path)


def md(df: pd.DataFrame) -> str:
    return df.round(3).to_markdown()


def gmm_summary(ev: pd.DataFrame) -> pd.DataFrame:
    """Every method with outer scores at the fixed ``gmm`` rule: mean AUC and F1 over its outer sections."""
    return (
        ev[(ev.kind == "outer") & (ev.rule == "gmm")]
        .groupby(["method", "section"])[["auc", "f1"]]
        .mean()
        .groupby("method")
        .agg(auc=("auc", "mean"), f1=("f1", "mean"), sections=("auc", "size"))
    )


def fixed_rule_outer(ev: pd.DataFrame, method: str, rule: str) -> pd.DataFrame:
    """Held-out results of ``method`` with ``rule`` applied in every outer fold (no per-fold choice): per section,
    the mean over seeds of AUC, F1 and called/true cancer share."""
    g = ev[(ev.kind == "outer") & (ev.method == method) & (ev.rule == rule)]
    return g.groupby("section")[["auc", "f1", "called_share", "true_share"]].mean().reindex(SECTIONS)


def targets_text(setting: str, rule: str, summary: pd.DataFrame, ev: pd.DataFrame) -> list[str]:
    """The issue's targets, judged on the package default: the ``setting`` and call ``rule`` that
    :func:`default_decision` picked on inner CV, the rule applied in every outer fold."""
    pkg = fixed_rule_outer(ev, setting, rule)
    auc, f1 = pkg["auc"].mean(), pkg["f1"].mean()
    lines = [
        "## Against the issue's targets",
        "",
        f"Judged on the package default decided above: `{setting}` + `{rule}`, the same rule in every outer fold "
        "(outer scores averaged over the seeds that have them). Baselines: at the rule their own nested CV chose "
        "per fold (`nested`) and at the same fixed rule (`same rule`).",
        "",
        f"* Mean AUC ≥ 0.90: {auc:.3f} — "
        + ("met." if auc >= 0.9 else f"missed by {0.9 - auc:.3f}.")
        + " A call rule cannot change AUC (it moves the cut, not the ranking).",
        f"* Mean label-free F1 ≥ 0.82: {f1:.3f} — " + ("met." if f1 >= 0.82 else f"missed by {0.82 - f1:.3f}."),
    ]
    best_auc = pd.Series(-np.inf, index=SECTIONS)
    base_auc = {}
    for other in BASELINES:
        same = fixed_rule_outer(ev, other, rule)
        base_auc[other] = same["auc"]
        best_auc = np.maximum(best_auc, same["auc"])
        parts = []
        for label, o_auc, o_f1 in (
            ("nested", *summary.loc[other, ["auc", "f1"]]) if other in summary.index else ("nested", np.nan, np.nan),
            ("same rule", same["auc"].mean(), same["f1"].mean()),
        ):
            da, df1 = auc - o_auc, f1 - o_f1
            ok = "met" if da >= 0.01 and df1 >= 0.02 else "not met"
            parts.append(f"{label}: ΔAUC {da:+.3f}, ΔF1 {df1:+.3f} — {ok}")
        lines.append(f"* Ahead of {other} by ≥ 0.01 AUC and ≥ 0.02 F1: " + "; ".join(parts) + ".")
    hardest = pkg["auc"].idxmin()
    rest = pkg["auc"].drop(hardest).mean()
    lines.append(
        f"* Where the AUC target is lost (reading only): {hardest} ranks at AUC {pkg.loc[hardest, 'auc']:.3f} here "
        f"and at {min(a[hardest] for a in base_auc.values()):.3f}–{max(a[hardest] for a in base_auc.values()):.3f} "
        f"for the baselines; the mean over the other {len(pkg) - 1} sections is {rest:.3f} (baselines "
        + ", ".join(f"{a.drop(hardest).mean():.3f}" for a in base_auc.values())
        + ")."
    )
    below = (best_auc - pkg["auc"]).round(3)
    worst = below[below > 0.03]
    lines.append(
        "* No section more than 0.03 AUC below the best baseline on it: "
        + ("met." if worst.empty else "not met (" + ", ".join(f"{s} {v:.3f} below" for s, v in worst.items()) + ").")
    )
    gaps = [100 * (pkg.loc[t, "called_share"] - pkg.loc[t, "true_share"]) for t in TUMOUR_RICH]
    lines.append(
        f"* Called cancer share within 10 points of the true share on A1, F1, C1 (`{rule}`): "
        + ", ".join(f"{t} {g:+.0f} points" for t, g in zip(TUMOUR_RICH, gaps, strict=True))
        + (" — met." if all(abs(g) <= 10 for g in gaps) else " — not met.")
    )
    return lines + [""]


def saturation_text(ev: pd.DataFrame) -> list[str]:
    """How graded each method's held-out scores are (seed means over the outer sections)."""
    if "graded_share" not in ev or ev["graded_share"].isna().all():
        return []
    g = ev[(ev.kind == "outer") & (ev.rule == "gmm")].groupby(["method", "section"])
    per = g[["graded_share", "cancer_low_share"]].mean()
    table = per["graded_share"].groupby("method").mean().to_frame("graded (all sections)") * 100
    low = per["cancer_low_share"].unstack().reindex(columns=TUMOUR_RICH) * 100
    table = table.join(low.add_prefix("cancer < 0.1, "))
    return [
        "## How graded the held-out scores are (%)",
        "",
        "`graded`: share of a held-out section's spots scored strictly between 0.1 and 0.9 (label-free), mean over "
        "the 8 outer sections; `cancer < 0.1, T`: share of T's cancer spots scored below 0.1, i.e. at the level "
        "of the non-cancer spots, where no cut can call them (uses T's labels; reading only).",
        "",
        md(table.reindex([m for m in METHODS if m in table.index])),
        "",
    ]


def fit_seconds(ev: pd.DataFrame) -> pd.Series:
    """Median wall seconds per pair fit, by method."""
    return ev[ev.kind == "pair"].drop_duplicates(["method", "model"]).groupby("method")["seconds"].median()


def settings_table(ev: pd.DataFrame, sel: pd.DataFrame) -> pd.DataFrame:
    """Each SpaCRD setting on its own, seed 0 (the seed of every candidate's models): inner AUC and F1 at
    ``gmm`` over all 56 pair evaluations, the mean over outer folds of the inner F1 at the chosen rule, and the
    held-out AUC / F1 at ``gmm`` of the seed-0 outer models."""
    g = ev[ev.method.isin(SPACRD_SETTINGS) & (ev.rule == "gmm") & (ev.seed == 0)]
    inner = g[g.kind == "pair"].groupby("method")[["auc", "f1"]].mean().add_prefix("inner_")
    outer = (
        g[g.kind == "outer"]
        .groupby("method")
        .agg(outer_auc=("auc", "mean"), outer_f1=("f1", "mean"), outer_sections=("auc", "size"))
    )
    chosen = sel[sel.method.isin(SPACRD_SETTINGS)].groupby("method")["inner_f1"].mean().rename("inner_f1_chosen")
    return pd.concat([inner, chosen, outer, fit_seconds(g).rename("pair_fit_s")], axis=1).reindex(SPACRD_SETTINGS)


def _fold_rule_f1(pairs: pd.DataFrame) -> pd.DataFrame | None:
    """Inner F1 of every rule in every outer fold (rows: outer fold, columns: rule; the mean over the fold's 7
    inner sections) from one method's pair rows at one seed; ``None`` while a pair model is missing."""
    out = {}
    for t in SECTIONS:
        m = pairs[(pairs.section != t) & pairs.model.str.split("+").map(lambda ho, t=t: t in ho)]
        if m["model"].nunique() != len(SECTIONS) - 1:
            return None
        out[t] = m.groupby("rule")["f1"].mean()
    return pd.DataFrame(out).T.reindex(columns=CANDIDATES)


def _inner_scores(pairs: pd.DataFrame) -> tuple[float, float]:
    """Inner AUC (mean over the pair evaluations) and inner F1 at the chosen rule (per outer fold the best rule's
    mean inner F1, averaged over the outer folds) of one method's pair rows at one seed."""
    f1 = _fold_rule_f1(pairs)
    auc = pairs[pairs.rule == "gmm"]["auc"].mean()
    return float(auc), float(f1.max(axis=1).mean()) if f1 is not None else np.nan


def replicates(ev: pd.DataFrame, method: str) -> pd.DataFrame:
    """One row per complete seed of ``method``'s pair models: ``inner_auc`` and ``inner_f1_chosen``
    (:func:`_inner_scores`)."""
    pairs = ev[(ev.kind == "pair") & (ev.method == method)]
    rows = {seed: _inner_scores(g) for seed, g in pairs.groupby("seed")}
    cols = ["inner_auc", "inner_f1_chosen"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols).dropna() if rows else pd.DataFrame(columns=cols)


def _beats(cand: pd.Series, ref: pd.Series) -> tuple[float, float]:
    """Difference of means and its two-standard-error margin (Welch; a candidate with one replicate borrows the
    reference's variance)."""
    var_c = cand.var(ddof=1) if len(cand) > 1 else ref.var(ddof=1)
    return float(cand.mean() - ref.mean()), float(2 * np.sqrt(var_c / len(cand) + ref.var(ddof=1) / len(ref)))


def _paired(cand: pd.Series, ref: pd.Series) -> tuple[float, float]:
    """Mean paired (same-seed) difference and two standard errors of it; ``nan`` margin for one common seed."""
    diff = (cand - ref.reindex(cand.index)).dropna()
    margin = 2 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
    return float(diff.mean()), float(margin)


def _is_speed(method: str) -> bool:
    """Whether ``method`` is a paired speed (non-inferiority) candidate."""
    return PAIRED_CANDIDATES.get(method, ("accuracy",))[0] == "speed"


def _passes(method: str, d_auc: float, m_auc: float, d_f1: float, m_f1: float, faster: bool = False) -> bool:
    """The written rule for ``method``'s kind of candidate (differences and two-standard-error margins)."""
    if method in CALIBRATION_CANDIDATES:  # AUC not worse, F1 better
        return d_auc > -m_auc and d_f1 > m_f1
    if _is_speed(method):  # not worse beyond the margins, and faster
        return faster and d_auc - m_auc > -NONINFERIORITY["auc"] and d_f1 - m_f1 > -NONINFERIORITY["f1"]
    return d_auc > m_auc and d_f1 > m_f1  # better on both


def default_decision(
    table: pd.DataFrame, inner: pd.DataFrame, ev: pd.DataFrame
) -> tuple[list[str], tuple[str, str] | None]:
    """The package-default rule (inner CV only, no held-out label), fifth round: replicates are seeds. A single
    network setting is compared with the default's member network (:data:`DEFAULT_MEMBER`, pair models of seeds
    0–5), an ensemble with the default's ensembles (seeds 0 and 1). A setting replaces the default when its mean
    inner AUC and its mean inner F1 at the chosen rule both exceed the reference's by more than two standard
    errors of the difference; among several, the largest F1 gain. A single-network winner ships as its
    3-network ensemble (:data:`ENSEMBLES`). The default call rule then changes when, over the shipped setting's
    replicates (its member networks' when it has fewer than two), the best rule's mean inner F1 exceeds the
    incumbent's by more than two standard errors of their paired per-seed difference. Sixth and seventh rounds: the
    candidates of :data:`PAIRED_CANDIDATES` are compared seed by seed with their reference network instead (paired
    differences over their deciding seeds), a speed candidate by non-inferiority. Returns the report lines and the
    chosen ``(setting, rule)`` (``None`` when no decision could be made)."""
    refs = {DEFAULT_SETTING: replicates(ev, DEFAULT_SETTING), DEFAULT_MEMBER: replicates(ev, DEFAULT_MEMBER)}
    fit_s = fit_seconds(ev)
    if min(len(r) for r in refs.values()) < 2:
        return ["Default decision: not made (the default's replicates are incomplete).", ""], None
    rows, per_seed_lines = {}, []
    for m in SPACRD_SETTINGS:
        if m in (DEFAULT_SETTING, DEFAULT_MEMBER) or ENSEMBLES.get(m, (None,))[0] in PAIRED_CANDIDATES:
            continue  # the paired candidates' ensembles are decided through their member network
        rep = replicates(ev, m)
        deciding = CALIBRATION_CANDIDATES.get(m) or PAIRED_CANDIDATES.get(m, (None, None))[1]
        if deciding is not None:
            rep = rep[rep.index.isin(deciding)]
        if rep.empty:
            continue
        ref_name = DEFAULT_SETTING if m in ENSEMBLES else DEFAULT_MEMBER
        if m in PAIRED_CANDIDATES:
            ref_name = PAIRED_CANDIDATES[m][2]
        if ref_name not in refs:
            refs[ref_name] = replicates(ev, ref_name)
        ref = refs[ref_name]
        compare = _paired if m in PAIRED_CANDIDATES else _beats
        d_auc, m_auc = compare(rep.inner_auc, ref.inner_auc)
        d_f1, m_f1 = compare(rep.inner_f1_chosen, ref.inner_f1_chosen)
        faster = bool(fit_s.get(m, np.inf) < fit_s.get(ref_name, np.inf))
        rows[m] = {
            "reference": ref_name,
            "comparison": "paired" if m in PAIRED_CANDIDATES else "Welch",
            "seeds": len(rep),
            "inner_auc": rep.inner_auc.mean(),
            "d_auc": d_auc,
            "margin_auc": m_auc,
            "inner_f1_chosen": rep.inner_f1_chosen.mean(),
            "d_f1": d_f1,
            "margin_f1": m_f1,
            "pair_fit_s": fit_s.get(m, np.nan),
            "passes": _passes(m, d_auc, m_auc, d_f1, m_f1, faster),
        }
        if m in PAIRED_CANDIDATES:
            paired = ref.reindex(rep.index)
            table = pd.DataFrame(
                {
                    f"inner AUC, {ref_name}": paired.inner_auc,
                    f"inner AUC, {m}": rep.inner_auc,
                    f"inner F1 chosen, {ref_name}": paired.inner_f1_chosen,
                    f"inner F1 chosen, {m}": rep.inner_f1_chosen,
                }
            ).T
            table.columns = [f"seed {c}" for c in table.columns]
            per_seed_lines += [f"`{m}` and `{ref_name}`, seed by seed:", "", md(table), ""]
    gaps = pd.DataFrame.from_dict(rows, orient="index")
    winners = gaps[gaps.passes] if len(gaps) else gaps
    speed = [m for m in winners.index if _is_speed(m)]
    if len(speed) < len(winners):  # an accuracy winner takes precedence
        winners = winners.drop(index=speed)
    chosen = DEFAULT_SETTING
    if len(winners):
        best = winners["d_f1"].idxmax()
        chosen = next((e for e, (b, k) in ENSEMBLES.items() if b == best and k == ENSEMBLE_SIZE), best)
    per_seed = {}
    for m in (chosen, ENSEMBLES.get(chosen, (chosen,))[0]):
        pairs = ev[(ev.kind == "pair") & (ev.method == m)]
        per_seed = {seed: f.mean() for seed, g in pairs.groupby("seed") if (f := _fold_rule_f1(g)) is not None}
        if len(per_seed) >= 2:
            rule_from = m
            break
    rule, rule_lines = INCUMBENT_RULE, []
    if len(per_seed) >= 2:
        means = pd.DataFrame(per_seed).T  # rows: seed, columns: rule (mean inner F1 over the 8 outer folds)
        diff = means.sub(means[INCUMBENT_RULE], axis=0)
        margin = 2 * diff.std(ddof=1) / np.sqrt(len(diff))
        best_rule = means.mean().idxmax()
        if diff[best_rule].mean() > margin[best_rule]:
            rule = best_rule
        rule_lines = [
            f"Call rule, over the {len(means)} seeds of `{rule_from}` (mean inner F1 over the 8 outer folds; "
            f"`d_incumbent`: the mean paired difference to `{INCUMBENT_RULE}`, `margin`: two standard errors of it):",
            "",
            md(pd.DataFrame({"mean inner F1": means.mean(), "d_incumbent": diff.mean(), "margin": margin}).T),
            "",
        ]
    lines = [
        "## Package default, decided on inner CV only",
        "",
        "Rule (fifth round, 2026-11-30; replicates are seeds): a single-network setting is compared with the "
        f"default's member network `{DEFAULT_MEMBER}` (pair models of seeds 0–5), an ensemble with the default "
        f"`{DEFAULT_SETTING}` (its seed-0 and seed-1 ensembles). A setting replaces the default when its mean inner "
        "AUC and its mean inner F1 at the chosen rule both exceed the reference's by more than two standard errors "
        "of the difference (Welch; a setting with one seed borrows the reference's variance); among several, the "
        f"largest F1 gain; a single-network winner ships as its {ENSEMBLE_SIZE}-network ensemble. The call rule "
        f"changes from `{INCUMBENT_RULE}` when the best rule's mean inner F1 exceeds it by more than two standard "
        "errors of their paired per-seed difference. A calibration candidate "
        f"({', '.join(f'`{m}` (deciding seeds {list(v)})' for m, v in CALIBRATION_CANDIDATES.items())}) passes when "
        "its mean inner AUC is not worse and its mean inner F1 at the chosen rule is better by more than two "
        "standard errors, over its deciding seeds only: this rule was written after seeds 0–2 of `SpaCRD "
        "(balanced scaling)` showed inner F1 +0.018 at inner AUC −0.001 (rejected by the accuracy rule, which also "
        "asks for an AUC gain), and seeds 3–5 were trained after it was committed. (Until the fourth round the "
        "margin was one seed-0 vs seed-1 difference, which the fourth round found too small: over six single "
        "networks the inner F1 at the chosen rule spans 0.743–0.772.) Sixth round (written before its candidates' "
        "scores existed) and seventh round (the same, with the sixth round's adopted member network as reference): "
        + ", ".join(
            f"`{m}` ({kind}, seeds {list(seeds)}, reference `{ref}`)"
            for m, (kind, seeds, ref) in PAIRED_CANDIDATES.items()
        )
        + " are compared with their reference seed by seed (`comparison`: paired; the margins are two standard "
        "errors of the same-seed differences, which the fifth round found far steadier than either setting's "
        "spread over seeds). An accuracy candidate must beat it on both; a speed candidate must stay within "
        f"{NONINFERIORITY['auc']} inner AUC and {NONINFERIORITY['f1']} inner F1 of it (lower bounds: difference "
        "minus margin) and fit faster; an accuracy winner takes precedence.",
        "",
        "Reference replicates: "
        + "; ".join(
            f"`{k}` {len(r)} seeds, inner AUC {r.inner_auc.mean():.4f} ± {r.inner_auc.std(ddof=1):.4f}, inner F1 "
            f"chosen {r.inner_f1_chosen.mean():.4f} ± {r.inner_f1_chosen.std(ddof=1):.4f} (s.d.)"
            for k, r in refs.items()
        )
        + ".",
        "",
        md(gaps),
        "",
        *per_seed_lines,
        f"Setting: **{chosen}**" + (" (unchanged)." if chosen == DEFAULT_SETTING else "."),
        f"Call rule: **{rule}**" + (" (unchanged)." if rule == INCUMBENT_RULE else "."),
        "",
        *rule_lines,
    ]
    return lines, (chosen, rule)


def write_report(ev: pd.DataFrame, out: Path) -> None:
    inner = inner_table(ev)
    sel = select(inner, ev)
    settings = select_setting(sel)
    sel = pd.concat([settings.drop(columns="setting"), sel], ignore_index=True)
    pairs_done = ev[ev.kind == "pair"].groupby("method")["model"].nunique().reindex(METHODS).fillna(0).astype(int)
    done = sel.groupby("method")["section"].nunique().reindex(REPORTED).fillna(0).astype(int)
    fit_s = fit_seconds(ev)
    at_gmm = gmm_summary(ev)
    setting_stats = settings_table(ev, sel)
    decision_lines, decision = default_decision(setting_stats, inner, ev)
    lines = [
        "# her2st: the label-free call rule, chosen by nested leave-one-section-out CV",
        "",
        "Outer folds: each of the 8 labelled sections held out in turn. Inner folds: for outer fold T, each of the "
        "7 other sections S is scored by a model trained on the remaining 6 (one model per pair {S, T}, "
        "28 fits per method, `her2st_pairs.py`). A candidate rule's inner F1 is its mean F1 over the 7 inner "
        "sections; the best rule (ties: the earlier in the list) is applied to T's scores from the model trained "
        "on all 7 other sections. T's labels are used only to report the result. Candidate rules "
        f"(`spacrd_sc.tl._threshold`): {', '.join(f'`{r}`' for r in CANDIDATES)}. `{DEFAULT_SETTING}`: the "
        "package default of the fourth and fifth rounds (image-less, 20 alignment epochs, 8 fusion epochs, 3 "
        "networks), the reference of the decisions below; the sixth round's decision made `SpaCRD (5 alignment "
        "epochs, 3 seeds)` the package default. `SpaCRD (8 epochs)`: "
        "one such network, the default of the third round; pair models seeds 0–5 (seed 0 in the per-rule tables, "
        "seeds 0–2 and 3–5 the members of the seed-0 and seed-1 ensembles), outer models seeds 0–5, metrics "
        "averaged over the seeds. `SpaCRD`: the default until the third round (30 fusion epochs); pair models "
        "seeds 0–1, outer scores from the committed LOO run (seeds 1–4) and a seed-0 outer model. Other SpaCRD "
        "setting candidates (`her2st_pairs.SPACRD_SETTINGS`): "
        f"{', '.join(f'`{m}`' for m in _SETTINGS if m not in ('SpaCRD', 'SpaCRD (8 epochs)'))} (pair and outer "
        "models seed 0; `SpaCRD (balanced scaling)`: seeds 0–5, seed 0 in the per-rule tables, metrics averaged "
        f"over the seeds) and the seed ensembles {', '.join(f'`{m}`' for m in ENSEMBLES)} (`SpaCRD(n_members=k)`: "
        "the mean of the setting's single-model scores of k consecutive seeds, which is what the ensemble "
        "computes, exactly for the z-scored settings, closely for the balanced scaling, where each member re-centres "
        "on its own scores and the ensemble on their mean; fit time: the sum); "
        f"`{NESTED_SPACRD}` takes, per outer fold, the setting whose chosen rule has the best inner F1 "
        "(ties: the default). Baselines: `_baselines.py` on the same folds and genes (seed 0). "
        "Cancer = invasive cancer + cancer in situ.",
        "",
        "Pair models finished per method (median wall seconds per fit, 6 source sections, shared 2-core CPU): "
        + ", ".join(f"{m} {n}/28 ({fit_s.get(m, np.nan):.0f} s)" for m, n in pairs_done.items())
        + "; outer folds with a complete nested selection: "
        + ", ".join(f"{m} {n}/8" for m, n in done.items())
        + ".",
        "",
    ]
    if (pairs_done < 28).any():
        lines += [
            "**Partial run**: not every pair model was trained by the session's deadline; outer folds without all "
            "7 inner sections are left out below (resume: `python benchmarks/her2st_pairs.py`, then this script).",
            "",
        ]
    complete = [m for m in REPORTED if done[m] == len(SECTIONS)]
    shown = with_gmm_fallback(sel, ev)
    shown["called_share_gmm"] = shown["called_share_gmm"].fillna(shown["called_share"])
    summary = sel[sel.method.isin(complete)].groupby("method")[["auc", "f1", "f1_gmm"]].mean().reindex(complete)
    lines += [
        "## Held-out result (mean over the 8 outer sections)",
        "",
        "`f1`: at the rule chosen by inner CV; `f1_gmm`: at the previous default (`gmm`), for comparison.",
        "",
        md(summary),
        "",
        "Every method with outer scores, at the `gmm` rule (the current default; no selection), mean over the "
        "outer sections it has scores for (`sections`; fewer than 8 means a partial run, not comparable):",
        "",
        md(at_gmm),
        "",
        "SpaCRD setting chosen per outer fold (inner F1 of each setting at its chosen rule):",
        "",
        md(
            sel[sel.method.isin(SPACRD_SETTINGS)]
            .pivot(index="section", columns="method", values="inner_f1")
            .reindex(index=SECTIONS, columns=SPACRD_SETTINGS)
            .assign(chosen=settings.set_index("section")["setting"].reindex(SECTIONS))
        ),
        "",
        "Each SpaCRD setting on its own, seed 0 (`inner_*`: the 56 pair evaluations at `gmm`; `inner_f1_chosen`: "
        "mean over the outer folds of the inner F1 at the rule chosen there; `outer_*`: held-out, at `gmm`, "
        "seed-0 outer models; `pair_fit_s`: median seconds per pair fit):",
        "",
        md(setting_stats),
        "",
        *decision_lines,
        "Chosen rule per outer fold:",
        "",
        sel.pivot(index="method", columns="section", values="rule").reindex(columns=SECTIONS).to_markdown(),
        "",
        "Per section, held-out F1 at the chosen rule:",
        "",
        md(sel.pivot(index="method", columns="section", values="f1").reindex(columns=SECTIONS)),
        "",
        "## Called vs true cancer share on the tumour-dominated sections (%)",
        "",
        "At the chosen rule (`called_share`; methods whose nested CV is pending: at `gmm`) and at `gmm`.",
        "",
        md(
            shown[shown.section.isin(TUMOUR_RICH)]
            .set_index(["method", "section"])[["rule", "true_share", "called_share", "called_share_gmm"]]
            .assign(**{c: lambda d, c=c: d[c] * 100 for c in ("true_share", "called_share", "called_share_gmm")})
        ),
        "",
        "EM estimate of each outer section's cancer share (rule `prior`, from the model's posteriors and the "
        "training share; no target label), beside the true share (%):",
        "",
        md(
            ev[(ev.kind == "outer") & (ev.rule == "prior")]
            .groupby(["section", "method"])["est_share"]
            .mean()
            .unstack()
            .assign(true=ev.groupby("section")["true_share"].first())
            * 100
        ),
        "",
    ]
    lines += saturation_text(ev)
    if decision is not None:
        lines += targets_text(*decision, summary, ev)
    outer = ev[ev.kind == "outer"].groupby(["method", "section", "rule"])["f1"].mean()
    fixed = outer.groupby(["method", "rule"]).mean().unstack().reindex(columns=CANDIDATES)
    lines += [
        "## Every rule applied to every outer fold (for reading only, not a selection)",
        "",
        "Mean held-out F1 over the outer sections if one rule were used everywhere. Choosing from this table "
        "would use the held-out labels; the nested choice above does not.",
        "",
        md(fixed),
        "",
        "## Candidate log: inner-CV F1 of every rule in every outer fold",
        "",
    ]
    for m in METHODS:
        t = inner[inner.method == m].pivot(index="outer", columns="rule", values="inner_f1")
        t = t.reindex(index=SECTIONS, columns=CANDIDATES)
        t["chosen"] = sel[sel.method == m].set_index("section")["rule"].reindex(SECTIONS) if len(sel) else None
        lines += [f"### {m}", "", md(t), ""]
    paper = pd.DataFrame(PAPER["methods"]["SpaCRD"]).T.loc[SECTIONS, ["auc", "f1"]]
    ours = sel.pivot(index="section", columns="method", values=["auc", "f1"])
    ours.columns = [f"{metric} {m}" for metric, m in ours.columns]
    lines += [
        "## Beside the published values",
        "",
        PAPER["source"],
        "",
        f"**Caveat.** {PAPER['caveat']}",
        "",
        md(pd.concat([paper.add_prefix("paper SpaCRD "), ours], axis=1).reindex(SECTIONS)),
        "",
        f"Paper means: SpaCRD AUC {PAPER['mean']['SpaCRD']['auc']}, F1 {PAPER['mean']['SpaCRD']['f1']}; "
        f"SpaCell-Plus AUC {PAPER['mean']['SpaCell-Plus']['auc']}, F1 {PAPER['mean']['SpaCell-Plus']['f1']}.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    figure(shown, Path(f"{out}.png"))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--report-only", action="store_true", help="rebuild the report and figure from the CSV")
    p.add_argument("--redo", action="store_true", help="re-evaluate every score set, not only new ones")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--pairs", default=str(RESULTS / "her2st_pairs_scores.csv.gz"), help="scores of her2st_pairs.py")
    args = p.parse_args()
    out = Path(args.out)
    if args.report_only:
        ev = pd.read_csv(f"{out}.csv")
    else:
        scores = load_scores(Path(args.pairs), RESULTS / "her2st_loo_scores.csv.gz")
        keys = ["method", "kind", "model", "section", "seed"]
        old = pd.read_csv(f"{out}.csv") if Path(f"{out}.csv").exists() and not args.redo else None
        secs = load_sections(str(args.data_dir or default_data_dir()))
        parts = [old]
        if old is not None:  # evaluate only what the CSV does not hold yet: new score sets, and new rules
            old = old[old.method.isin(METHODS)]
            have = pd.MultiIndex.from_frame(old[keys].drop_duplicates())
            seen = pd.MultiIndex.from_frame(scores[keys]).isin(have)
            new_rules = [r for r in CANDIDATES if r not in set(old["rule"])]
            if new_rules:
                parts.append(evaluate_rules(scores[seen], secs, new_rules))
            scores = scores[~seen]
        parts.append(evaluate_rules(scores, secs))
        ev = pd.concat([p for p in parts if p is not None and len(p)], ignore_index=True)
        ev.to_csv(f"{out}.csv", index=False, float_format="%.6g")
        ev = pd.read_csv(f"{out}.csv")  # the report from the rounded CSV, exactly as `--report-only` makes it
        Path(f"{out}.json").write_text(json.dumps({"rules": CANDIDATES, "methods": METHODS}, indent=1))
    write_report(ev, out)


if __name__ == "__main__":
    main()
