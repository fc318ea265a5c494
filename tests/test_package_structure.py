"""Public API shape (like scanpy's test_package_structure): flat namespaces and scanpy's signature rules."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import FunctionType

import pytest

import spacrd_sc as sc_crd

MODULES = ["io", "pp", "tl", "pl", "datasets"]


def _public_functions():
    for mod in MODULES:
        ns = getattr(sc_crd, mod)
        names = getattr(ns, "__all__", None)
        assert names, f"spacrd_sc.{mod} must declare __all__"
        for name in names:
            obj = getattr(ns, name)
            if isinstance(obj, FunctionType):
                yield pytest.param(obj, id=f"{mod}.{name}")


def test_namespaces_are_flat():
    for mod in MODULES:
        ns = getattr(sc_crd, mod)
        for name in ns.__all__:
            obj = getattr(ns, name)
            assert not name.startswith("_")
            assert obj.__module__.startswith(f"spacrd_sc.{mod}._"), (name, obj.__module__)
    assert sc_crd.SpaCRD.__module__.startswith("spacrd_sc.model")


def _numpydoc_sections(doc: str) -> dict[str, list[str]]:
    """Split a (dedented) numpy docstring into its sections: heading → body lines."""
    lines = doc.splitlines()
    sections: dict[str, list[str]] = {}
    current = None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"} and not line.startswith(" "):
            current = line.strip()
            sections[current] = []
            continue
        if current is not None and not (line.strip() and set(line.strip()) == {"-"}):
            sections[current].append(line)
    return sections


def _documented_names(body: list[str]) -> set[str]:
    """Parameter names declared at the left margin of a Parameters section (``a``, ``a, b``, ``a : int``)."""
    names: set[str] = set()
    for line in body:
        if line and not line.startswith((" ", "\t")):
            head = line.split(" : ")[0]
            names.update(n.strip().lstrip("*") for n in head.split(",") if n.strip())
    return names


@pytest.mark.parametrize("func", list(_public_functions()))
def test_signature_rules(func):
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert 1 <= len(positional) <= 3, f"{func.__name__}: data first, at most three positional parameters"
    for p in params:
        assert p.kind is not p.VAR_POSITIONAL, f"{func.__name__}: no *args"
        assert p.annotation is not inspect.Parameter.empty, f"{func.__name__}: {p.name} lacks a type hint"
    assert sig.return_annotation is not inspect.Signature.empty, f"{func.__name__}: missing return type"
    sections = _numpydoc_sections(inspect.getdoc(func) or "")
    assert "Parameters" in sections and "Returns" in sections, f"{func.__name__}: numpy docstring sections"
    assert any(line.strip() for line in sections["Returns"]), f"{func.__name__}: empty Returns section"
    declared = _documented_names(sections["Parameters"])
    expected = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
    assert expected <= declared, f"{func.__name__}: parameters not documented: {sorted(expected - declared)}"
    allowed = {p.name for p in params}  # **kwargs may be documented
    assert declared <= allowed, f"{func.__name__}: documented but not parameters: {sorted(declared - allowed)}"


def test_docstring_parser_catches_missing_parameter():
    """The check above fails for a parameter that is only mentioned in passing, not declared."""

    def f(data: int, *, table_key: str = "t") -> None:
        """Do it.

        Parameters
        ----------
        data
            Uses table_key internally.

        Returns
        -------
        Nothing.
        """

    sections = _numpydoc_sections(inspect.getdoc(f))
    assert _documented_names(sections["Parameters"]) == {"data"}


def test_import_is_light():
    """``import spacrd_sc`` loads neither torch nor spatialdata (they load when a function needs them)."""
    import subprocess
    import sys

    code = "import sys, spacrd_sc; print('torch' in sys.modules, 'spatialdata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_version():
    assert isinstance(sc_crd.__version__, str) and sc_crd.__version__


# ---------------------------------------------------------------------- import rules (docs/contributing.md)
#: Which subpackages each subpackage may import, through their public namespaces only. Package-level
#: ``_*.py`` seams are open to every subpackage except ``model`` (torch only), which may use the names below.
ALLOWED = {
    "io": set(),
    "pp": {"io"},
    "tl": {"model"},
    "pl": {"model"},
    "datasets": {"io", "model", "tl"},
    "model": set(),
}
MODEL_MAY_USE = {"_logging", "_utils", "_distributed", "__version__"}  # _distributed: torch only
ANNDATA_FACING = {"anndata", "spatialdata", "spatialdata_io", "scanpy", "squidpy"}
PACKAGE_ROOT = Path(sc_crd.__file__).parent


def _imports(path: Path, root: Path):
    """``(line, dotted name)`` of every import of a module under ``root``; relative imports resolved, and
    ``from X import y`` given as ``X.y``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    package = parts[:-1]  # the package a relative import starts from (also right for __init__.py)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield from ((node.lineno, f"{mod}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)


def import_violations(path: Path, root: Path = PACKAGE_ROOT) -> list[str]:
    """Imports of one module that break the layering rules (empty list when it keeps them)."""
    own = path.relative_to(root).parts[0]
    bad = []
    for line, name in _imports(path, root):
        parts = name.split(".")
        where = f"{path.relative_to(root)}:{line}: {name}"
        if own == "model" and parts[0] in ANNDATA_FACING:
            bad.append(f"{where} (the torch model never imports AnnData-facing libraries)")
        if parts[0] != root.name or len(parts) < 2 or parts[1] == own:
            continue
        if own == "model" and parts[1] not in MODEL_MAY_USE:
            bad.append(f"{where} (model may import only {sorted(MODEL_MAY_USE)} of the package)")
        elif own in ALLOWED and parts[1] in ALLOWED:
            if parts[1] not in ALLOWED[own]:
                bad.append(f"{where} ({own} may not import {parts[1]})")
            elif len(parts) > 2 and parts[2].startswith("_"):
                bad.append(f"{where} (private module of {parts[1]})")
    return bad


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE_ROOT.rglob("*.py") if p.parent != PACKAGE_ROOT),
    ids=lambda p: str(p.relative_to(PACKAGE_ROOT)),
)
def test_import_rules(path):
    """Subpackages import each other only through public namespaces and along the allowed arrows; the torch
    model imports no AnnData-facing library and nothing of the package but the logger, utils and version."""
    assert import_violations(path) == []


def test_import_rules_catch_violations(tmp_path):
    pkg = tmp_path / "spacrd_sc"
    for sub in ("tl", "model", "io"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "tl" / "_x.py").write_text(
        "from ..model._io import save_model\nfrom ..io import visium\nfrom ..model import SpaCRD\n"
    )
    (pkg / "model" / "_y.py").write_text("import anndata\nfrom ..tl import align\nfrom .. import __version__\n")
    (pkg / "io" / "_z.py").write_text("from .._spatial import spot_geometry\nfrom . import _tenx\n")
    tl_bad = import_violations(pkg / "tl" / "_x.py", pkg)
    assert [b.split(" (")[1] for b in tl_bad] == ["private module of model)", "tl may not import io)"]
    model_bad = import_violations(pkg / "model" / "_y.py", pkg)
    assert len(model_bad) == 2 and "anndata" in model_bad[0] and "spacrd_sc.tl.align" in model_bad[1]
    assert import_violations(pkg / "io" / "_z.py", pkg) == []


# ---------------------------------------------------------------------- no import circle, no upward import
def _module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Module → package modules it imports (every import, lazy and type-checking ones included; ``from X import
    y`` counts as importing ``X.y`` when that is a module, else ``X``)."""
    paths = sorted(root.rglob("*.py"))
    names = {_module_name(p, root) for p in paths}
    graph: dict[str, set[str]] = {}
    for p in paths:
        deps = set()
        for _, name in _imports(p, root):
            while name and name not in names:
                name = name.rpartition(".")[0]
            if name:
                deps.add(name)
        me = _module_name(p, root)
        # a package's __init__ re-exports its own modules: that is not an import *by* them
        graph[me] = {d for d in deps if d != me}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles among modules (not counting a package importing its own submodules, which is how
    ``__init__`` re-exports them), as strongly connected components of more than one module."""
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    """No two modules import each other, directly or round a longer circle (e.g. the model and its training
    loops: the loops return what they trained and only ``SpaCRD`` keeps it)."""
    assert import_cycles(import_graph()) == []


def test_import_circle_is_caught():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_import_but_the_version():
    """Modules of a subpackage import nothing from the package's ``__init__`` except ``__version__``."""
    bad = []
    for path in PACKAGE_ROOT.rglob("*.py"):
        if path.parent == PACKAGE_ROOT:
            continue
        for line, name in _imports(path, PACKAGE_ROOT):
            parts = name.split(".")
            if len(parts) == 2 and parts[0] == PACKAGE_ROOT.name and parts[1] != "__version__":
                if not (PACKAGE_ROOT / parts[1]).is_dir() and not (PACKAGE_ROOT / f"{parts[1]}.py").is_file():
                    bad.append(f"{path.relative_to(PACKAGE_ROOT)}:{line}: {name}")
    assert bad == []


def test_no_two_modules_share_a_name():
    """``_patches.py`` in two places once made tracebacks and imports ambiguous to read: module names are unique."""
    from collections import Counter

    names = Counter(p.name for p in PACKAGE_ROOT.rglob("*.py") if p.name != "__init__.py")
    assert [n for n, c in names.items() if c > 1] == []
