"""Fixtures for the torch-side SpaCRD tests: tiny synthetic sections and small, quickly trained models."""

from __future__ import annotations

import pytest
from _helpers.sections import FAST, SMALL, make_section, section_arrays


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The test networks are tiny: one thread is faster and immune to oversubscribed shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def section() -> dict:
    """256 spots, 60 genes, 24 image features, a disc of 'cancer' spots."""
    return section_arrays(make_section(nx=16, ny=16, n_genes=60, n_markers=10, image_dim=24, seed=0))


@pytest.fixture(scope="session")
def target() -> dict:
    """An independent section drawn the same way (another 'patient')."""
    return section_arrays(make_section("T", nx=16, ny=16, n_genes=60, n_markers=10, image_dim=24, seed=1))


def _train(sec: dict, *, image: bool, seed: int = 0, **kwargs):
    from spacrd_sc.model import SpaCRD

    model = SpaCRD(sec["genes"], sec["x_image"].shape[1] if image else None, **{**SMALL, **kwargs})
    x_img = sec["x_image"] if image else None
    model.fit_alignment(sec["x_gene"], x_img, sec["neighbors"], epochs=5, seed=seed, **FAST)
    model.fit_fusion(
        sec["x_gene"], x_img, sec["neighbors"], sec["y"], epochs=12, lr=2e-3, batch_size=64, seed=seed, **FAST
    )
    return model


@pytest.fixture(scope="session")
def train():
    """Train a small model: ``train(section, image=True, seed=0, **constructor_kwargs)``."""
    return _train


@pytest.fixture(scope="module")
def fitted_image(section):
    """A small fitted image + expression model."""
    return _train(section, image=True)


@pytest.fixture(scope="module")
def fitted_expression(section):
    """A small fitted image-less model."""
    return _train(section, image=False)
