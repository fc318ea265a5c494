"""The her2st benchmark script rebuilds its committed report and figure from the committed results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def test_her2st_loo_report_from_committed_results(tmp_path: Path) -> None:
    for suffix in (".csv", ".json"):
        shutil.copy(RESULTS / f"her2st_loo{suffix}", tmp_path / f"her2st_loo{suffix}")
    out = tmp_path / "her2st_loo"
    cmd = [sys.executable, "benchmarks/her2st_loo.py", "--report-only", "--out", str(out)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"

    df = pd.read_csv(RESULTS / "her2st_loo.csv")
    assert sorted(df["section"].unique()) == ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]
    assert df.groupby("section")["method"].nunique().eq(df["method"].nunique()).all()  # same folds, all methods
    assert df.loc[df["method"] == "SpaCRD", "seed"].nunique() == 5
    meta = json.loads((RESULTS / "her2st_loo.json").read_text())
    assert meta["wall_s"] > 0 and meta["peak_gb"] > 0

    report = out.with_suffix(".md").read_text()
    tables = report[report.index("## Pathologist labels") :]  # the header above names this machine's cores
    committed = (RESULTS / "her2st_loo.md").read_text()
    assert tables == committed[committed.index("## Pathologist labels") :], "the committed report is out of date"
    assert "Partial run" not in report
    for method in df["method"].unique():
        assert f"| {method}" in report
    assert (tmp_path / "her2st_loo_auc.png").stat().st_size > 10_000


def test_her2st_nested_report_from_committed_results(tmp_path: Path) -> None:
    shutil.copy(RESULTS / "her2st_nested.csv", tmp_path / "her2st_nested.csv")
    out = tmp_path / "her2st_nested"
    cmd = [sys.executable, "benchmarks/her2st_nested.py", "--report-only", "--out", str(out)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert out.with_suffix(".md").read_text() == (RESULTS / "her2st_nested.md").read_text(), "report out of date"
    assert (tmp_path / "her2st_nested.png").stat().st_size > 10_000

    ev = pd.read_csv(RESULTS / "her2st_nested.csv")
    # every scored section was evaluated under every candidate rule, and outer folds cover all 8 sections
    assert ev.groupby(["method", "model", "section", "seed"])["rule"].nunique().eq(ev["rule"].nunique()).all()
    assert sorted(ev.loc[ev["kind"] == "outer", "section"].unique()) == ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]
    # an inner fold never scores the outer section: pair models score only the two sections they left out
    pairs = ev[ev["kind"] == "pair"]
    assert all(s in m.split("+") for m, s in zip(pairs["model"], pairs["section"], strict=True))
