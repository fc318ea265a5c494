"""Shared fixtures: the real-data folder and tiny synthetic legacy-ST sections."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

DATA_DIR_ENV = "SPACRD_DATA_DIR"
#: ``shared/data`` beside the repository (<root>/main/tests/conftest.py → <root>/shared/data).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that reads the real data (through the ``data_dir`` fixture) carries the ``realdata`` marker."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real-data folder holding ``her2st/``: ``$SPACRD_DATA_DIR`` or ``../shared/data``; else skip."""
    env = os.environ.get(DATA_DIR_ENV)
    path = Path(env).expanduser() if env else DEFAULT_DATA_DIR
    if not path.is_dir():
        pytest.skip(f"real-data folder {str(path)!r} not found (set ${DATA_DIR_ENV} to the folder holding her2st/)")
    return path


@pytest.fixture(scope="session")
def her2st_dir(data_dir: Path) -> Path:
    """``<data_dir>/her2st``; skip if absent."""
    path = data_dir / "her2st"
    if not (path / "data" / "ST-cnts").is_dir():
        pytest.skip(f"her2st data not found under {str(path)!r}")
    return path


@pytest.fixture(scope="session")
def her2st_loader(data_dir: Path, her2st_dir: Path) -> Callable[[str], Any]:
    """``load(section)`` → cached :func:`spacrd_sc.datasets.her2st` output (do not modify it in place)."""
    from spacrd_sc.datasets import her2st

    cache: dict[str, Any] = {}

    def load(section: str) -> Any:
        if section not in cache:
            cache[section] = her2st(section, path=data_dir)
        return cache[section]

    return load


# ------------------------------------------------------------------------------------------------ synthetic
#: Synthetic legacy-ST geometry: 20 px per array unit (200 µm) → 10 µm/px, 100 µm spot = 10 px.
SYN_PX_PER_UNIT = 20.0
SYN_OFFSET = 10.0


def synthetic_image(height: int = 150, width: int = 170, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: R = x, G = y (pixel index), B = noise — values tell where a patch came from."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx % 256, yy % 256, rng.integers(0, 256, (height, width))], axis=-1)
    return img.astype(np.uint8)


def synthetic_tables(n_x: int = 6, n_y: int = 5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts (spots x genes, with one duplicated gene name) and a spot file with one extra spot."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(2, 2 + n_x), np.arange(2, 2 + n_y))
    x, y = xs.ravel(), ys.ravel()
    spots = pd.DataFrame(
        {
            "x": x,
            "y": y,
            "new_x": x + rng.normal(0, 0.02, x.size),
            "new_y": y + rng.normal(0, 0.02, y.size),
            "pixel_x": x * SYN_PX_PER_UNIT + SYN_OFFSET,
            "pixel_y": y * SYN_PX_PER_UNIT + SYN_OFFSET,
            "selected": 1,
        }
    )
    ids = [f"{a}x{b}" for a, b in zip(x, y, strict=True)]
    genes = ["GENE_A", "GENE_B", "GENE_C", "GENE_A", "ERBB2"]
    counts = pd.DataFrame(rng.poisson(3.0, (len(ids), len(genes))), index=ids, columns=genes)
    extra = pd.DataFrame(
        {
            "x": [1],
            "y": [1],
            "new_x": [1.0],
            "new_y": [1.0],
            "pixel_x": [30.0],
            "pixel_y": [30.0],
            "selected": [1],
        }
    )
    return counts.iloc[1:], pd.concat([spots, extra], ignore_index=True)  # first spot: no counts


@pytest.fixture
def tiny_legacy_st(tmp_path: Path) -> dict[str, Any]:
    """Files of a tiny legacy-ST section in ``tmp_path``: counts.tsv.gz, spots.tsv, image.png (+ frames)."""
    from PIL import Image

    counts, spots = synthetic_tables()
    image = synthetic_image()
    paths = {
        "counts": tmp_path / "S1.tsv.gz",
        "spots": tmp_path / "S1_selection.tsv",
        "image": tmp_path / "S1.png",
    }
    counts.to_csv(paths["counts"], sep="\t")
    spots.to_csv(paths["spots"], sep="\t", index=False)
    Image.fromarray(image).save(paths["image"])
    return {**paths, "counts_df": counts, "spots_df": spots, "image_array": image}
