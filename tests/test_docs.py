"""The Sphinx docs build with warnings as errors, and the tutorial is rendered from the committed notebook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOK = ROOT / "tutorials" / "her2st_cancer_regions.ipynb"


def test_docs_build(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("sphinx_book_theme")
    out = tmp_path / "html"
    cmd = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
        "-d", str(tmp_path / "doctrees"), str(DOCS), str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"sphinx-build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"

    page = out / "tutorials" / "her2st_cancer_regions.html"
    assert page.is_file(), "the tutorial page was not built (docs/tutorials -> ../tutorials)"
    html = page.read_text(encoding="utf-8")
    assert "Cancer regions in HER2+ breast cancer sections" in html
    # rendered with the committed outputs (nb_execution_mode = "off"): the figures are there
    assert html.count("<img") >= 5, "the tutorial page has no output figures: is the notebook executed?"
    for name in ("index.html", "api.html", "installation.html"):
        assert (out / name).is_file(), name
    assert (out / "generated" / "spacrd_sc.tl.cancer_score.html").is_file()


def test_tutorial_notebook_is_executed() -> None:
    """The committed notebook carries its outputs, in order and without errors."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the tutorial has no code cells"
    counts = [c.execution_count for c in code]
    assert None not in counts, "some cells of the tutorial were not executed"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), "cells were executed out of order"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"the tutorial contains errors: {[e.ename for e in errors]}"
