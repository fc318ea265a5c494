"""Small shared helpers (``spacrd_sc._utils``)."""

from __future__ import annotations

import importlib.util

import pytest
import tqdm.auto
import tqdm.std

from spacrd_sc._utils import _progress


@pytest.mark.parametrize("has_widgets", [False, True])
def test_progress_bar_kind_follows_ipywidgets(monkeypatch, has_widgets):
    """Without ipywidgets the text bar is used (tqdm.auto would warn 'IProgress not found' in a notebook)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (object() if has_widgets else None) if name == "ipywidgets" else real(name, *a),
    )
    bar = _progress(range(3), disable=True)
    assert list(bar) == [0, 1, 2]
    assert type(bar) is (tqdm.auto.tqdm if has_widgets else tqdm.std.tqdm)
