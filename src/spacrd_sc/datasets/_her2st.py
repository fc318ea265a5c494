"""HER2-positive breast cancer legacy ST sections (Andersson et al., Nat Commun 2021)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import DATA_DIR_ENV, LABEL_KEY, PATHOLOGY_KEY, SPATIAL_KEY, TABLE_KEY
from .._images import _check_path
from .._logging import logger
from .._settings import settings
from ..io import legacy_st

if TYPE_CHECKING:
    from spatialdata import SpatialData


#: Public source repository and the commit every file is pinned to.
REPO = "almaan/her2st"
COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
BASE_URL = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/"

#: Sections with a pathologist annotation.
LABELLED = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")
#: Sections without annotation, but with a full-resolution H&E.
UNLABELLED = ("B4", "C2", "C3", "C4", "C5", "C6")
SECTIONS = LABELLED + UNLABELLED

#: Pathologist categories, in a fixed order.
PATHOLOGY_CATEGORIES = (
    "invasive cancer",
    "cancer in situ",
    "breast glands",
    "connective tissue",
    "immune infiltrate",
    "adipose tissue",
    "undetermined",
)
#: Colours of :data:`PATHOLOGY_CATEGORIES`, in that order (``uns['pathology_colors']``): cancer warm (red,
#: orange), normal tissue cool (blues, teal, purple), undetermined grey.
PATHOLOGY_COLORS = ("#d62728", "#ff7f0e", "#1f77b4", "#17becf", "#9467bd", "#aec7e8", "#c7c7c7")
#: Categories counted as cancer (SpaCRD's binary label).
CANCER_CATEGORIES = ("invasive cancer", "cancer in situ")

#: The H&E of each section, relative to the repository root, and its scale to the spot file's pixel frame.
IMAGES: dict[str, tuple[str, float]] = {
    # shiny-app copy: the 6954 x 7435 px original downscaled to 2000 px wide, background masked black
    "A1": ("app/www/imgs/A1_HE_image_dark.png", 2000 / 6954),
    "B4": ("data/ST-imgs/B/B4/BT10737_D2_HE.jpg", 1.0),
    "C2": ("data/ST-imgs/C/C2/5714_HE_BT_C2.jpg", 1.0),
    "C3": ("data/ST-imgs/C/C3/5714_HE_BT_D1.jpg", 1.0),
    "C4": ("data/ST-imgs/C/C4/5714_HE_BT_D2.jpg", 1.0),
    "C5": ("data/ST-imgs/C/C5/5714_HE_BT_E1.jpg", 1.0),
    "C6": ("data/ST-imgs/C/C6/5714_HE_BT_E2.jpg", 1.0),
}

_LBL = "data/ST-pat/lbl/{}_labeled_coordinates.tsv"

#: sha256 of every file used, at :data:`COMMIT`.
REGISTRY: dict[str, str] = {
    "app/www/imgs/A1_HE_image_dark.png": "e3836547df4772907bb537e53f41794fe4e603e9a6c99c1f6e91ef4342b95a6d",
    "data/ST-cnts/A1.tsv.gz": "d91035e5d8a9c4ce7865e4c61446deec1a7318602d41b3220e9fcb3ce7e41fe3",
    "data/ST-cnts/B1.tsv.gz": "97b3abf2676c596ac7dd53829780005724cab62a6f676697516006481a443f74",
    "data/ST-cnts/B4.tsv.gz": "e38231c2a38c9bc7e6d550eec0e527c1869ee0e525fc913e708d1323c34f5ebb",
    "data/ST-cnts/C1.tsv.gz": "8383130eebf0f9f8186f006ed6b704149ba62303605a312a9080fa9901be9c20",
    "data/ST-cnts/C2.tsv.gz": "c1c59ea6cffae36b9ecb561b8e2a97e3aa5f4085f748e991a0e330ed9d09773d",
    "data/ST-cnts/C3.tsv.gz": "e00c55a3eb9caac5d9c71b8906aae8be8b38f93e23938f4a0ebee17683ef6a2a",
    "data/ST-cnts/C4.tsv.gz": "33201f76d41d7131dc600a0f87d9a70383af3503e81698b4d11e6f2e8d73e9da",
    "data/ST-cnts/C5.tsv.gz": "c0f310315ca6110d74dbdf7011e5b42432ba0b8eb5f001824764911988f39338",
    "data/ST-cnts/C6.tsv.gz": "60478b0d2411501866685f41312c65c6591e499d64d5b719be8ee9bab25c9bc8",
    "data/ST-cnts/D1.tsv.gz": "8fe13d29763b3f6a9e85322dae97e05c4ca42b57cef4b1077c88b9b7b6a980ac",
    "data/ST-cnts/E1.tsv.gz": "b2f572ea0a95d256cb172a9284e96b6d2ff236398d4934a992df85c96d11c4cc",
    "data/ST-cnts/F1.tsv.gz": "187aa13f204d514851d3674dfa09b4a8d7f2676f1d40d2ef63e9e368c7cf672a",
    "data/ST-cnts/G2.tsv.gz": "9d51a5ed85bdf60069dcf51beeffba4e90e35e8630ec3b707a2453ffdd608e3b",
    "data/ST-cnts/H1.tsv.gz": "90b391782535f38c9ab20fe8b38f44ebbfdad2201075a677a198cbef12c29b07",
    "data/ST-imgs/B/B4/BT10737_D2_HE.jpg": "3cb165614ce2a13426381e450220dccac980cc9bda6a90fb041c28ca0e2c753d",
    "data/ST-imgs/C/C2/5714_HE_BT_C2.jpg": "26e2f73ae840cdd46c5bba405aae181f13a56a376b9848dff23f7a9c5de7f19e",
    "data/ST-imgs/C/C3/5714_HE_BT_D1.jpg": "0005a92674014d473040a28f0afca89ce5fa5c44019b479b638ceb3272ceb568",
    "data/ST-imgs/C/C4/5714_HE_BT_D2.jpg": "f40607eb1d5f0d125decd71c48b0c5d29cf6776ad92297fd185631208c82d6f2",
    "data/ST-imgs/C/C5/5714_HE_BT_E1.jpg": "34028ea41e376396b50c42b0a11a7e689c85be4a8022e668d0a09cc128c04c65",
    "data/ST-imgs/C/C6/5714_HE_BT_E2.jpg": "dddd87232589648861a9b6776dc1749be8306213f6589aeef0e805fb2b1ee263",
    _LBL.format("A1"): "23a0a68dccd54a8397ea4066994edb7110e88373d5b3bc6e35254dda9253fa5f",
    _LBL.format("B1"): "f7050caa71c47a4c95fcca2a7f29560d387310877b1c9e4a54f841059db837ee",
    _LBL.format("C1"): "41b6e1bbb1031480d969e725e739971cb39dbdb6e2b6d662d585bebacf093040",
    _LBL.format("D1"): "c8bf26103d1aac42611d9c85ba3db9c596b9a80ec045ca9b246b8d14d8b3c20f",
    _LBL.format("E1"): "29db60fe5b306bb982fbd2bbdd1f9c60eedf90c6ac1d56bedd3c18ed5a369829",
    _LBL.format("F1"): "3b59970f0c6ba09d8e0fc9286ace2a295bf06d36c59684162b7a8aca0e021ec5",
    _LBL.format("G2"): "8466275647ad125569ee94d099cc7b78c15028968ba1dd267a85a81c001a16ff",
    _LBL.format("H1"): "b65cbc99ed7a01281bc2eb87be87b902312e47ca91bc1f00ff351489b78434c3",
    "data/ST-spotfiles/A1_selection.tsv": "e5f79223be2ea2aebb082c4759059ab7079b0132052d0944209048ac57788c5d",
    "data/ST-spotfiles/B1_selection.tsv": "7ea9963677db80199db928d763b0b34ea1015fb7452e85ac7b21d42ee15c3875",
    "data/ST-spotfiles/B4_selection.tsv": "192b46f3ca414c85753a01a4fb5760a697ca6c0a1aadb949c4687cc6efa9faa0",
    "data/ST-spotfiles/C1_selection.tsv": "9a5187c98d2c312064057d3bad192d4a19105b5135ff2b68f5e4547cade0954d",
    "data/ST-spotfiles/C2_selection.tsv": "235b5f4306b3b57c628ffc82c98c7109602474fbcc79a917b9c50517f99b6b1c",
    "data/ST-spotfiles/C3_selection.tsv": "7fd76c13370b7804ac3bb377b846d22485cf9223f9dd8dfc25be06e5aaf65755",
    "data/ST-spotfiles/C4_selection.tsv": "47e79f3b9dbfa3a8c18af9e948ba7ba4bf0a75ea1b4c292bc714ced7d0917d4c",
    "data/ST-spotfiles/C5_selection.tsv": "2114cc3b4da759772112897f1e247d5443c9f8c808e6a9a952eb4fda379a194c",
    "data/ST-spotfiles/C6_selection.tsv": "efdbbc6759c6af43baa966505c31705f09c087c1dccf1ea3e0d1db7b55717117",
    "data/ST-spotfiles/D1_selection.tsv": "7ba7843b52ddc2b147ee968fe9466a5d1fa0d884b51def292ce340d88da034eb",
    "data/ST-spotfiles/E1_selection.tsv": "a979c36f6310fff965c96f05ad290ca322d88e400b5aed2a1139fdd6f0e2da92",
    "data/ST-spotfiles/F1_selection.tsv": "cf479a5812c317541c7f7d6a4ebf1bfd93b0a1ab3eef35a8da15b9e76164f2f4",
    "data/ST-spotfiles/G2_selection.tsv": "abae30bb6f434cb2aae34b8ef56da6b613c840d48c49279d55f4600ad496245c",
    "data/ST-spotfiles/H1_selection.tsv": "fc9cc5bad3a1e26e48f435696259df38b500042a9565486c15fd37ab7d8f9ed6",
}


def _section_files(section: str) -> dict[str, str]:
    files = {
        "counts": f"data/ST-cnts/{section}.tsv.gz",
        "spots": f"data/ST-spotfiles/{section}_selection.tsv",
    }
    if section in LABELLED:
        files["labels"] = _LBL.format(section)
    if section in IMAGES:
        files["image"] = IMAGES[section][0]
    return files


def _is_her2st_root(folder: Path) -> bool:
    return (folder / "data" / "ST-cnts").is_dir()


def _local_root(path: str | Path | None) -> Path | None:
    """The local her2st folder: ``path`` or ``settings.data_dir`` (pointing at it or at its parent)."""
    if path is not None:
        p = Path(path).expanduser()
        for cand in (p, p / "her2st"):
            if _is_her2st_root(cand):
                return cand
        raise FileNotFoundError(
            f"No her2st data under {str(p)!r}: expected {str(p / 'her2st' / 'data' / 'ST-cnts')!r} "
            f"or {str(p / 'data' / 'ST-cnts')!r}."
        )
    p = settings.data_dir
    if p is not None:
        for cand in (p / "her2st", p):
            if _is_her2st_root(cand):
                return cand
        logger.warning(
            "settings.data_dir (default $%s) = %s holds no her2st/ folder; downloading the files instead.",
            DATA_DIR_ENV,
            p,
        )
    return None


def _pooch_fetch(relpaths: list[str]) -> dict[str, Path]:
    """Download (once) the files from GitHub at the pinned commit into pooch's cache; sha256-checked."""
    import pooch

    odie = pooch.create(
        path=pooch.os_cache("spacrd_sc") / "her2st" / COMMIT[:12],
        base_url=BASE_URL,
        registry={k: f"sha256:{v}" for k, v in REGISTRY.items()},
    )
    return {rel: Path(odie.fetch(rel)) for rel in relpaths}


def _read_labels(path: Path, spot_ids: pd.Index) -> pd.Series:
    """Pathologist label per count-matrix spot, joined on ``round(x)``x``round(y)``."""
    lbl = pd.read_csv(path, sep="\t")
    n_na = int(lbl[["x", "y"]].isna().any(axis=1).sum())
    if n_na:
        logger.info("Dropping %d label rows without coordinates.", n_na)
    lbl = lbl.dropna(subset=["x", "y"])
    ids = np.rint(lbl["x"].to_numpy(float)).astype(int).astype(str)
    ids = pd.Index(np.char.add(np.char.add(ids, "x"), np.rint(lbl["y"].to_numpy(float)).astype(int).astype(str)))
    labels = pd.Series(lbl["label"].to_numpy(), index=ids)
    labels = labels[~labels.index.duplicated(keep="first")]
    unknown = sorted(set(labels.dropna().unique()) - set(PATHOLOGY_CATEGORIES))
    if unknown:
        logger.warning("Unknown pathology labels %s are treated as missing.", unknown)
    out = labels.reindex(spot_ids)
    n_missing = int(out.isna().sum())
    if n_missing:
        logger.warning("%d of %d spots have no pathologist label.", n_missing, len(spot_ids))
    return out


def her2st(section: str, *, path: str | Path | None = None, table_key: str = TABLE_KEY) -> SpatialData:
    """One section of the HER2-positive breast cancer legacy ST data set (Andersson et al. 2021).

    Eight sections carry a pathologist annotation (A1, B1, C1, D1, E1, F1, G2, H1); six unlabelled
    sections (B4, C2–C6) come with their full-resolution H&E. Of the labelled sections only A1 has an
    H&E (the authors' 2000 px app image, scale 2000/6954 of the original, background masked black); the
    others are image-less. Files are read from a local copy (``path``, or ``spacrd_sc.settings.data_dir``,
    which defaults to ``$SPACRD_DATA_DIR``) or downloaded once from GitHub (``almaan/her2st`` at a pinned
    commit, sha256-checked) into pooch's cache.

    Parameters
    ----------
    section
        Section name, one of ``A1 B1 C1 D1 E1 F1 G2 H1 B4 C2 C3 C4 C5 C6``.
    path
        Local folder holding ``her2st/`` (or the her2st folder itself). Default:
        ``spacrd_sc.settings.data_dir`` (``$SPACRD_DATA_DIR`` unless set), else download.
    table_key
        Name of the table element.

    Returns
    -------
    :class:`~spatialdata.SpatialData` as written by :func:`spacrd_sc.io.legacy_st` (library id = section;
    see there for every element and field), plus

    - ``obs['pathology']`` (labelled sections): categorical with the 7 categories ``invasive cancer,
      cancer in situ, breast glands, connective tissue, immune infiltrate, adipose tissue, undetermined``
      (joined from the label file on ``round(x)``x``round(y)`` = spot id);
    - ``obs['cancer']`` (labelled sections): bool, invasive cancer or cancer in situ;
    - ``uns['pathology_colors']`` (labelled sections): one colour per category, in category order (cancer
      warm, normal tissue cool), used by ``sq.pl.spatial_scatter(..., color="pathology")``;
    - ``uns['spatial'][section]['metadata']``: also ``dataset='her2st'``, ``section``, ``patient``,
      ``labelled`` and ``source`` (repository@commit).

    Raises
    ------
    ValueError
        Unknown section (the message lists the valid names).
    FileNotFoundError
        ``path`` holds no her2st data, or a needed file is missing there.
    """
    if path is not None and (isinstance(path, bytes) or not isinstance(path, str | Path | os.PathLike)):
        raise TypeError(f"path must be a folder (str or os.PathLike) or None, got {type(path).__name__}.")
    if not isinstance(table_key, str) or not table_key:
        raise ValueError(f"table_key must be a non-empty string, got {table_key!r}.")
    name = str(section).strip().upper()
    if name not in SECTIONS:
        raise ValueError(
            f"Unknown her2st section {section!r}; valid: labelled {', '.join(LABELLED)}; "
            f"unlabelled with full-resolution H&E {', '.join(UNLABELLED)}."
        )
    rel = _section_files(name)
    root = _local_root(path)
    if root is not None:
        files = {k: _check_path(root / v, f"her2st file {v}") for k, v in rel.items()}
    else:
        fetched = _pooch_fetch(list(rel.values()))
        files = {k: fetched[v] for k, v in rel.items()}

    image_scale = IMAGES[name][1] if name in IMAGES else 1.0
    sdata = legacy_st(
        files["counts"],
        files["spots"],
        files.get("image"),
        library_id=name,
        image_scale=image_scale,
        table_key=table_key,
    )
    adata = sdata.tables[table_key]
    if "labels" in files:
        labels = _read_labels(files["labels"], adata.obs_names)
        labels = labels.where(labels.isin(PATHOLOGY_CATEGORIES))
        adata.obs[PATHOLOGY_KEY] = pd.Categorical(labels.to_numpy(), categories=list(PATHOLOGY_CATEGORIES))
        adata.obs[LABEL_KEY] = labels.isin(CANCER_CATEGORIES).to_numpy(dtype=bool)
        adata.uns[f"{PATHOLOGY_KEY}_colors"] = list(PATHOLOGY_COLORS)
    adata.uns[SPATIAL_KEY][name]["metadata"].update(
        {
            "dataset": "her2st",
            "section": name,
            "patient": name[0],
            "labelled": name in LABELLED,
            "source": f"{REPO}@{COMMIT}",
        }
    )
    return sdata
