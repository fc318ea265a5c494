"""Synthetic sections for the tl tests (built by ``_helpers.sections``): small, fast, a known cancer region."""

from __future__ import annotations

import anndata as ad
import pytest
from _helpers.sections import make_section, with_graph


@pytest.fixture
def sources() -> ad.AnnData:
    secs = {f"S{i}": make_section(f"S{i}", seed=i, depth=[1.0, 0.5, 2.0][i]) for i in range(3)}
    return with_graph(ad.concat(secs, label="section"), "section")


@pytest.fixture
def sources_img() -> ad.AnnData:
    secs = {f"S{i}": make_section(f"S{i}", seed=i, image_dim=32) for i in range(3)}
    return with_graph(ad.concat(secs, label="section"), "section")


@pytest.fixture
def target() -> ad.AnnData:
    return with_graph(make_section("T", seed=11, depth=0.8))
