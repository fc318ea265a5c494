"""What guards the product in ``benchmarks/``: the LOO report matches its committed results, the results stay
small, and the scripts use only the public API (so they measure what users get and survive refactors)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
SECTIONS = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]


@pytest.fixture
def her2st_loo(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # as when the script runs: its folder on sys.path
    import her2st_loo

    return her2st_loo


def test_loo_report_rebuilds_from_committed_results(her2st_loo) -> None:
    df = pd.read_csv(RESULTS / "her2st_loo.csv")
    assert her2st_loo.report(df) == (RESULTS / "her2st_loo.md").read_text(), (
        "results/her2st_loo.md is out of date: python benchmarks/her2st_loo.py report"
    )


def test_loo_results_cover_every_fold(her2st_loo) -> None:
    df = pd.read_csv(RESULTS / "her2st_loo.csv")
    assert her2st_loo.DEFAULT in set(df["method"])
    for (method, seed), g in df.groupby(["method", "seed"]):
        assert sorted(g["section"]) == SECTIONS, f"{method} seed {seed}: not every section held out once"
    spots = pd.read_csv(RESULTS / "her2st_loo_scores.csv.gz")
    assert set(map(tuple, spots[["method", "seed", "section"]].drop_duplicates().to_numpy())) == set(
        map(tuple, df[["method", "seed", "section"]].to_numpy())
    )
    assert spots["score"].notna().all()


def test_results_stay_small() -> None:
    spot_files = [p for p in RESULTS.iterdir() if "scores" in p.name]
    assert sum(p.stat().st_size for p in spot_files) <= 2 * 1024**2, "per-spot scores in git must stay <= 2 MB"
    assert sum(p.stat().st_size for p in RESULTS.iterdir()) <= 3 * 1024**2


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_only_the_public_api(script: Path) -> None:
    text = script.read_text()
    assert "sys.path" not in text, f"{script.name}: no sys.path changes; share code through _common.py"
    assert not re.search(r"spacrd_sc\._(?!_)|sc_crd(\.\w+)*\._(?!_)", text), f"{script.name}: private spacrd_sc name"
    local = {p.stem for p in BENCH.glob("*.py")} - {"_common"}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spacrd_sc"):
            assert node.module in ("spacrd_sc", "spacrd_sc.tl", "spacrd_sc.io", "spacrd_sc.pp", "spacrd_sc.pl")
            assert all(not a.name.startswith("_") for a in node.names), f"{script.name}: {ast.dump(node)}"
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            assert name.split(".")[0] not in local, f"{script.name} imports the script {name}; use _common.py"
            assert not (name.startswith("spacrd_sc.") and "._" in f".{name.split('.', 1)[1]}")
