"""A ready SpaCRD model trained on the 8 labelled her2st sections, cached on disk per gene set."""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, _validate
from .._constants import LABEL_KEY, LIBRARY_KEY
from .._docs import inject_docs
from .._logging import logger
from .._settings import settings
from .._utils import _resolve_device
from ._her2st import LABELLED, her2st

if TYPE_CHECKING:
    from ..model import SpaCRD

#: Cache layout version: bump when what is trained for the same key changes.
_CACHE_VERSION = 4  # 2: the fusion default became 8 epochs (was 30); 3: 3-network seed ensembles (was 1);
#                      4: 5 alignment epochs for the image-less model (was 20)


def _cache_key(genes: Sequence[str] | None, seed: int, version: str, epochs: int | None) -> str:
    """Hash of the sorted gene set (``None``: all), seed, package version and schedule override."""
    payload = {
        "genes": None if genes is None else sorted(set(genes)),
        "seed": int(seed),
        "version": version,
        "epochs": epochs,
        "cache": _CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _card(genes: Sequence[str] | None, epochs: int | None) -> dict[str, Any]:
    """The model card details of a cache entry (:meth:`~spacrd_sc.SpaCRD.save_pretrained`); the measured accuracy
    only for the configuration it was measured with (all genes, the default schedules)."""
    card: dict[str, Any] = {
        "description": "The ready her2st reference model of spacrd_sc (`spacrd_sc.datasets.her2st_model`).",
        "training_data": f"her2st (Andersson et al. 2021, Nat Commun 12, 6012), the {len(LABELLED)} "
        f"pathologist-annotated sections {', '.join(LABELLED)}; cancer = invasive cancer + cancer in situ.",
        "license": "other",
        "license_name": "her2st-data",
        "license_link": "https://github.com/almaan/her2st",
        "license_note": "The her2st repository has no LICENSE file; treat the data as public research data, cite the "
        "paper, and confirm the licence before redistributing the data or this model.",
        "tags": ["her2st", "breast-cancer"],
    }
    if genes is None and epochs is None:
        card["metrics"] = {
            "leave-one-section-out ROC-AUC, mean of 8 (benchmarks/results/her2st_loo.md)": 0.879,
            "leave-one-section-out F1 at half_smooth, mean of 8": 0.777,
        }
    return card


def _default_cache_dir() -> Path:
    import pooch

    return Path(pooch.os_cache("spacrd_sc")) / "her2st_models"


def _her2st_sources(path: str | Path | None) -> Any:
    """The 8 labelled her2st sections concatenated (``obs["section"]``), with a squidpy graph per section."""
    import anndata as ad
    import squidpy as sq

    from ..model import ModelConfig

    tables = {}
    for name in LABELLED:
        t = her2st(name, path=path).tables["table"]
        tables[name] = ad.AnnData(
            t.X, obs=t.obs[[LABEL_KEY]].copy(), var=t.var[[]].copy(), obsm={"spatial": t.obsm["spatial"]}
        )
    sources = ad.concat(tables, label=LIBRARY_KEY, join="inner", index_unique="-")
    sq.gr.spatial_neighbors_knn(sources, library_key=LIBRARY_KEY, n_neighs=ModelConfig.n_neighbors)
    return sources


def _check_args(genes: Any, seed: Any, epochs: Any, cache_dir: Any) -> list[str] | None:
    """Checked ``genes`` (``None`` or a list of names); refuse bad ``seed``, ``epochs``, ``cache_dir`` before work."""
    if genes is not None:
        if isinstance(genes, str | bytes):
            raise TypeError("genes must be a sequence of gene names, not a single string.")
        if not hasattr(genes, "__iter__"):
            raise TypeError(
                f"genes must be a sequence of gene names (e.g. target.var_names), got {type(genes).__name__}."
            )
        genes = list(genes)
        bad = [(i, g) for i, g in enumerate(genes) if not isinstance(g, str)]
        if bad:
            i, g = bad[0]
            raise TypeError(
                f"genes must hold gene names (str); item {i} is {g!r} ({type(g).__name__}), {len(bad)} such items."
            )
        genes = [str(g) for g in genes]
        if not genes:
            raise ValueError("genes is empty.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, numbers.Real) or not float(epochs).is_integer() or epochs < 2
    ):
        raise ValueError(f"epochs must be an integer >= 2 (or None for the defaults), got {epochs!r}.")
    if cache_dir is not None and (isinstance(cache_dir, bytes) or not isinstance(cache_dir, str | os.PathLike)):
        raise TypeError(f"cache_dir must be a str or os.PathLike (a folder), got {type(cache_dir).__name__}.")
    return genes


def _writable_root(root: Path) -> Path:
    """``root`` created if needed; a clear error (before any training) where it cannot hold a cache entry."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NotADirectoryError(
            f"cache_dir {str(root)!r} cannot be used as a folder ({type(err).__name__}: {err}); pass cache_dir= a "
            "writable folder."
        ) from err
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"cache_dir {str(root)!r} is not writable; pass cache_dir= a writable folder.")
    return root


def _load_cached(folder: Path, device: str) -> tuple[SpaCRD | None, str | None]:
    """The cached model in ``folder`` and ``None``, or ``None`` and why the entry is unusable (damaged: a file
    missing, added, truncated or changed, unreadable JSON); ``(None, None)`` where there is no entry."""
    from ..model import SpaCRD

    if not os.path.lexists(folder):
        return None, None
    try:
        model = SpaCRD.load(folder, device=device)
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError) as err:
        return None, f"{type(err).__name__}: {err}"
    if not (folder / "manifest.json").is_file():  # an entry saved before model folders had a manifest
        try:
            model.save(folder, overwrite=True)
            logger.info("her2st model cache entry %s saved again with a manifest.", folder)
        except OSError as err:  # e.g. a read-only shared cache: the entry still loads as it is
            logger.info("Could not add a manifest to the her2st model cache entry %s (%s).", folder, err)
    return model, None


def _remove_entry(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    else:
        folder.unlink()


@inject_docs
def her2st_model(
    genes: Sequence[str] | None = None,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    path: str | Path | None = None,
    epochs: int | None = None,
    device: str = "auto",
    progress_bar: bool | None = None,
) -> SpaCRD:
    """A SpaCRD model trained on the 8 labelled her2st sections, restricted to ``genes``; cached on disk.

    The first call per gene set trains (minutes on a laptop CPU); later calls load the saved model. Cache entries
    are written atomically with a model card (:meth:`~spacrd_sc.SpaCRD.save_pretrained`, ready for
    :meth:`~spacrd_sc.SpaCRD.push_to_hub`) and verified file by file when loaded; a damaged entry
    (a file missing, added, truncated or changed) is trained again, with a logged warning.

    **Model card.**

    * *Data*: her2st (Andersson et al. 2021), the 8 pathologist-annotated HER2+ breast cancer sections
      A1, B1, C1, D1, E1, F1, G2, H1 (8 patients, legacy ST, 100 µm spots; 3481 spots), labels
      cancer = invasive cancer + cancer in situ. Read with :func:`spacrd_sc.datasets.her2st`.
    * *Inputs*: image-less (expression + spatial neighbourhood), raw counts → normalize_total(1e4) + log1p,
      per-section z-scaling, 6 spatial neighbours (squidpy graph). Genes: the highly variable genes
      (up to 3000, batch-aware) among those expressed in every section and in ``genes``.
    * *Training*: the package defaults of :func:`spacrd_sc.tl.align` and :func:`spacrd_sc.tl.fit_vrbca`
      (5 alignment epochs, lr 1e-3; 8 fusion epochs, lr 5e-4; 256 gene PCs; a seed ensemble of 3 networks
      from seeds ``seed``, ``seed + 1``, ``seed + 2``).
    * *Expected accuracy*: leave-one-section-out on the 8 sections with this configuration (all genes;
      benchmarks/results/her2st_loo.md, two 3-network ensembles): mean ROC-AUC 0.879; F1 at the default
      label-free rule ``half_smooth`` 0.777. Tumour-dominated sections are still under-called (F1 70 % called vs
      84 % labelled, C1 43 % vs 72 %; A1 78 % vs 88 %) and tumour-poor ones over-called (H1 46 % vs 31 %).
      A restricted gene set (e.g. a Xenium panel) changes these numbers and is not measured here.
    * *Limits*: trained on one platform (legacy ST), one tissue (HER2+ breast cancer) and 8 patients.
      **Cross-platform accuracy (Visium, Visium HD, Xenium targets) is not validated here**; check the scores
      against annotations of a few of your sections before relying on them.

    Parameters
    ----------
    genes
        Genes of the section(s) to be scored, e.g. ``target.var_names`` of a Xenium panel: the model uses only
        genes shared with her2st (names matched exactly; genes absent from her2st are left out, duplicates
        ignored). ``None``: all her2st genes (then the target must hold most of the chosen genes).
    {seed}
    cache_dir
        Folder of cached models (one sub-folder per gene set, seed, package version and ``epochs``).
        Default: ``pooch.os_cache("spacrd_sc") / "her2st_models"``.
    path
        Local her2st folder (or its parent); default ``spacrd_sc.settings.data_dir``, else downloaded.
    epochs
        Override both training schedules' epochs (for quick tests only; the model card describes the
        default ``None``). Part of the cache key.
    {device}
    {progress_bar}

    Returns
    -------
    A fitted :class:`~spacrd_sc.SpaCRD`; ``model.training_params["her2st_model"]`` records the cache folder,
    sections, seed and whether it was loaded from the cache.

    Raises
    ------
    TypeError
        ``genes`` is a single string, not iterable, or holds non-strings; ``cache_dir`` is not a path.
    ValueError
        ``genes`` is empty; ``seed`` is not a non-negative integer; ``epochs`` is not an integer >= 2; unknown
        ``device``.
    OSError
        ``cache_dir`` cannot be created or written (before any training); the message of a damaged entry that
        cannot be rebuilt there names the command that removes it.
    """
    from .. import tl

    genes = _check_args(genes, seed, epochs, cache_dir)
    device = _resolve_device(device)
    if genes is not None:  # before any her2st section is read or any training starts
        _validate.enough_genes(len(set(genes)), what="genes", fix="Pass the section's full gene list.")
    progress_bar = settings.progress_bar if progress_bar is None else progress_bar
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    folder = root / _cache_key(genes, seed, __version__, epochs)
    model, damage = _load_cached(folder, device)
    if model is not None:
        logger.info("her2st model loaded from the cache %s.", folder)
        model.training_params.setdefault("her2st_model", {})["from_cache"] = True
        return model
    fix = (
        f"Remove the entry (`rm -r '{folder}'`, as a user who may write to {str(root)!r}) and call her2st_model "
        "again, or pass cache_dir= a writable folder."
    )
    try:
        _writable_root(root)
    except OSError as err:
        if damage is None:
            raise
        raise PermissionError(
            f"The cached her2st model {str(folder)!r} is damaged ({damage}) and cannot be rebuilt there: {err} {fix}"
        ) from err
    if damage is not None:
        logger.warning("The cached her2st model %s is damaged (%s); training it again.", folder, damage)

    sources = _her2st_sources(path)
    sched: dict[str, Any] = {} if epochs is None else {"epochs": int(epochs)}
    common = {"device": device, "seed": int(seed), "progress_bar": progress_bar}
    logger.info("Training the her2st model on %d spots (cached at %s).", sources.n_obs, folder)
    model = tl.align(sources, image_key=None, target_genes=genes, **sched, **common)
    tl.fit_vrbca(sources, model, **sched, **common)
    model.training_params["her2st_model"] = {
        "sections": list(LABELLED),
        "seed": int(seed),
        "n_genes_requested": None if genes is None else len(genes),
        "epochs": epochs,
        "cache_dir": str(folder),
        "from_cache": False,
    }
    # SpaCRD.save is atomic (a complete folder renamed into place), so an interrupted save never looks like an
    # entry; a damaged entry is removed only now that its replacement is trained
    try:
        if damage is not None and os.path.lexists(folder):
            _remove_entry(folder)
        model.save_pretrained(folder, overwrite=True, card=_card(genes, epochs))
    except OSError as err:
        raise type(err)(f"Could not write the her2st model cache entry {str(folder)!r} ({err}). {fix}") from err
    return model
