"""The README's Quickstart runs as written (on the real her2st data) and uses only public API names."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_code() -> str:
    """The first ```python block under the ``## Quickstart`` heading of README.md."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Quickstart[ \t]*\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert section is not None, "README.md has no '## Quickstart' section"
    block = re.search(r"^```python[ \t]*\n(.*?)^```", section.group(1), flags=re.M | re.S)
    assert block is not None, "the Quickstart section of README.md has no ```python block"
    return block.group(1)


def _sc_crd_attributes(tree: ast.AST) -> set[str]:
    """Dotted names used below ``sc_crd`` (e.g. ``tl.align``, ``datasets.her2st``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "sc_crd" and parts:
            found.add(".".join(reversed(parts)))
    return found


def test_quickstart_uses_public_api() -> None:
    import spacrd_sc as sc_crd

    tree = ast.parse(quickstart_code())  # valid Python
    names = _sc_crd_attributes(tree)
    assert names, "the Quickstart does not call spacrd_sc"
    for dotted in names:
        obj = sc_crd
        for part in dotted.split("."):
            assert hasattr(obj, part), f"README Quickstart uses sc_crd.{dotted}, which does not exist"
            obj = getattr(obj, part)


@pytest.mark.realdata
@pytest.mark.slow
def test_quickstart_runs(data_dir: Path, her2st_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Execute the Quickstart block; it must score G2 (``target.obs['spacrd_score']``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("SPACRD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)

    import squidpy  # noqa: F401  (imported first: its own import-time SyntaxWarnings are not the README's)

    namespace: dict[str, object] = {"__name__": "__readme__"}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(quickstart_code(), str(README), "exec"), namespace)  # noqa: S102
    finally:
        plt.close("all")
    noticed = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, DeprecationWarning | FutureWarning | UserWarning)
    ]
    assert not noticed, f"the Quickstart emits warnings a user would see: {noticed}"

    target = namespace.get("target")
    assert target is not None, "the Quickstart defines no `target`"
    assert "spacrd_score" in target.obs, "the Quickstart did not write target.obs['spacrd_score']"
    scores = target.obs["spacrd_score"].to_numpy()
    assert scores.size == target.n_obs > 0
    assert ((scores >= 0) & (scores <= 1)).all()
    assert target.obs["spacrd_cancer"].dtype == bool
