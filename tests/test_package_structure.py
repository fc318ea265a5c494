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
    doc = inspect.getdoc(func) or ""
    assert "Parameters\n----------" in doc and "Returns\n-------" in doc, f"{func.__name__}: numpy docstring"
    documented = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
    for name in documented:
        assert name in doc, f"{func.__name__}: parameter {name!r} not documented"


def test_version():
    assert isinstance(sc_crd.__version__, str) and sc_crd.__version__
