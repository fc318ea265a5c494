"""Public API shape (like scanpy's test_package_structure): flat namespaces and scanpy's signature rules."""

from __future__ import annotations

import inspect
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
