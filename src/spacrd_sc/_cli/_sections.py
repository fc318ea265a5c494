"""Input folders of the command line: which platform a folder holds (explicit rules, named in errors), its
section name, reading it through the public readers, and what every section needs before a model sees it
(optional H&E features, the squidpy spot graph)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("spacrd_sc")

PLATFORMS = ("visium", "visium_hd", "xenium", "legacy_st", "zarr")
#: How each platform is recognised, in the order the rules are tried (shown by --help and in errors).
RULES = {
    "zarr": "a SpatialData store: a folder named *.zarr, or holding zarr.json / .zgroup / .zmetadata",
    "visium_hd": "Space Ranger >= 3 outs/ with [<id>_]feature_slice.h5",
    "xenium": "a Xenium output folder with experiment.xenium",
    "visium": "Space Ranger outs/ with spatial/ and [<id>_]filtered_feature_bc_matrix.h5",
    "legacy_st": "a folder with one spot file *_selection.tsv and one counts table *.tsv[.gz] (optionally one "
    "H&E .jpg/.png/.tif)",
}
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zmetadata", "zmetadata")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
#: Spot graph of every section: the squidpy k-NN graph with SpaCRD's 6 neighbours (as in the README).
N_NEIGHS = 6


@dataclass
class Section:
    """One input: where it is, what it is and its name (outputs are ``<out>/<name>...``)."""

    path: Path
    platform: str
    name: str
    sdata: Any = None  # the SpatialData, once read
    table_key: str = "table"

    @property
    def table(self) -> Any:
        return self.sdata.tables[self.table_key]


def _is_zarr(p: Path) -> bool:
    return p.suffix == ".zarr" or any((p / m).exists() for m in _ZARR_MARKERS)


def _legacy_files(p: Path) -> tuple[Path, Path, Path | None]:
    """``(counts, spots, image or None)`` of a legacy ST folder; ValueError naming what is missing or ambiguous."""
    files = [f for f in sorted(p.iterdir()) if f.is_file()]
    spots = [f for f in files if f.name.endswith("_selection.tsv")]
    counts = [f for f in files if f not in spots and f.name.endswith((".tsv", ".tsv.gz"))]
    images = [f for f in files if f.suffix.lower() in _IMAGE_SUFFIXES]
    if len(spots) != 1 or len(counts) != 1 or len(images) > 1:
        found = ", ".join(f.name for f in files[:8]) or "nothing"
        raise ValueError(
            f"{str(p)!r} is not a legacy ST folder ({RULES['legacy_st']}): found {len(spots)} spot file(s), "
            f"{len(counts)} counts table(s) and {len(images)} image(s) among: {found}."
        )
    return counts[0], spots[0], images[0] if images else None


def detect_platform(path: Path) -> str:
    """The platform of an input folder by the rules of :data:`RULES`, tried in that order."""
    if not path.is_dir():
        what = " (it is a file)." if path.exists() else "."
        raise FileNotFoundError(f"Input folder not found: {str(path)!r}{what}")
    if _is_zarr(path):
        return "zarr"
    names = [f.name for f in path.iterdir()]
    if any(n.endswith("feature_slice.h5") for n in names):
        return "visium_hd"
    if "experiment.xenium" in names:
        return "xenium"
    if (path / "spatial").is_dir() and any(n.endswith("filtered_feature_bc_matrix.h5") for n in names):
        return "visium"
    if any(n.endswith("_selection.tsv") for n in names):
        return "legacy_st"
    rules = "; ".join(f"{k}: {v}" for k, v in RULES.items())
    raise ValueError(f"Cannot tell the platform of {str(path)!r} ({rules}). Pass --platform to force one.")


def section_name(path: Path) -> str:
    """Output name of an input: its folder name without ``.zarr``; for a Space Ranger ``outs`` folder, its parent's."""
    path = path.resolve()
    name = path.name[: -len(".zarr")] if path.name.endswith(".zarr") else path.name
    if name == "outs" and path.parent.name:
        name = path.parent.name
    return name


def plan(inputs: list[str], platform: str | None) -> list[Section]:
    """One :class:`Section` per input (a run folder holding ``outs/`` stands for it); names must be distinct."""
    sections = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir() and not _is_zarr(path) and (path / "outs").is_dir():
            path = path / "outs"
        sections.append(Section(path=path, platform=platform or "", name=section_name(path)))
    names = [s.name for s in sections]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"Several inputs would write outputs named {dup}; give the input folders distinct names.")
    return sections


def read(section: Section, *, bin_size_um: float | None = None) -> Section:
    """Read ``section`` with the public reader of its platform (detected when not forced)."""
    import spacrd_sc as sc_crd

    p = section.path
    platform = section.platform or detect_platform(p)
    section.platform = platform
    binned = {} if bin_size_um is None else {"bin_size_um": bin_size_um}
    logger.info("%s: reading %s (%s).", section.name, p, platform)
    if platform == "zarr":
        import spatialdata

        if not p.is_dir():
            raise FileNotFoundError(f"SpatialData zarr store not found: {str(p)!r}.")
        sdata = spatialdata.read_zarr(p)
        tables = list(sdata.tables)
        if "table" in tables:
            section.table_key = "table"
        elif len(tables) == 1:
            section.table_key = tables[0]
        else:
            raise KeyError(f"{str(p)!r} must hold a table named 'table' or exactly one table; it holds {tables}.")
    elif platform == "visium":
        sdata = sc_crd.io.visium(p, library_id=section.name)
    elif platform == "visium_hd":
        sdata = sc_crd.io.visium_hd(p, library_id=section.name, **binned)
    elif platform == "xenium":
        he = sorted(p.glob("*he_image.ome.tif"))
        if he:  # 10x's post-Xenium H&E; its *_he_imagealignment.csv is found beside it by the reader
            logger.info("%s: H&E %s placed with the alignment beside it.", section.name, he[0].name)
        sdata = sc_crd.io.xenium(p, library_id=section.name, he_image=he[0] if len(he) == 1 else None, **binned)
    elif platform == "legacy_st":
        if not p.is_dir():
            raise FileNotFoundError(f"Legacy ST folder not found: {str(p)!r}.")
        counts, spots, image = _legacy_files(p)
        sdata = sc_crd.io.legacy_st(counts, spots, image, library_id=section.name)
    else:  # argparse restricts --platform; kept for callers of this module
        raise ValueError(f"Unknown platform {platform!r}; one of {list(PLATFORMS)}.")
    section.sdata = sdata
    logger.info("%s: %d spots x %d genes.", section.name, section.table.n_obs, section.table.n_vars)
    return section


def prepare(
    section: Section, *, backbone: str | None, weights: str | None, device: str, progress: bool, graph: bool = True
) -> None:
    """H&E features (with ``backbone``) and (with ``graph``) the squidpy spot graph, in place."""
    import squidpy as sq

    import spacrd_sc as sc_crd

    if backbone is not None:
        logger.info("%s: H&E features with %s.", section.name, backbone)
        sc_crd.tl.extract_uni(
            section.sdata,
            backbone=backbone,
            weights=weights,
            device=device,
            table_key=section.table_key,
            progress_bar=progress,
            overwrite=True,
        )
    if graph:
        sq.gr.spatial_neighbors_knn(section.table, n_neighs=N_NEIGHS)
