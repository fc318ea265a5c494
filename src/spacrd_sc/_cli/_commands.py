"""The three subcommands (``demo``, ``score``, ``train``), each a short sequence of public API calls."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from . import _sections
from ._run import FAILED, OK, quiet_libraries, report

logger = logging.getLogger("spacrd_sc")

READY_MODEL = "her2st"
LABEL = "cancer"  # the label column fit_vrbca reads (also written by pp.annotate_spots)
REGIONS = "spacrd_regions"  # region_shapes' shapes element


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """FileExistsError naming the first existing output (before any work), unless ``overwrite``."""
    existing = [p for p in paths if p.exists() and not (p.is_dir() and not any(p.iterdir()))]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more output(s))" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} exists{more}; pass --overwrite to replace it.")


def _schedule(args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    """Keyword arguments of ``tl.align`` (``fit_vrbca``: without ``model_kwargs``) from the run options."""
    kw: dict[str, Any] = {"device": args.device, "seed": args.seed, "progress_bar": progress}
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.members is not None:
        kw["model_kwargs"] = {"n_members": args.members}
    return kw


def _fit(adata: Any, args: argparse.Namespace, progress: bool, **align_kwargs: Any) -> Any:
    """A model trained on ``adata`` (stage 1 ``tl.align`` with ``align_kwargs``, then ``tl.fit_vrbca``) with the
    run's schedule."""
    import spacrd_sc as sc_crd

    kw = _schedule(args, progress)
    model = sc_crd.tl.align(adata, **align_kwargs, **kw)
    kw.pop("model_kwargs", None)
    return sc_crd.tl.fit_vrbca(adata, model, **kw)


def _threshold(value: str) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value


def _regions_and_geojson(section: _sections.Section, geojson: Path) -> int:
    """Tumour regions, their polygons and the QuPath GeoJSON of ``section``; returns the number of regions."""
    import spacrd_sc as sc_crd

    sdata, key = section.sdata, section.table_key
    sc_crd.tl.tumour_regions(sdata, table_key=key)
    if REGIONS in sdata.shapes:  # from an earlier run of a zarr input: replaced (or dropped when none is found now)
        del sdata.shapes[REGIONS]
    sc_crd.tl.region_shapes(sdata, table_key=key)
    regions = None if REGIONS in sdata.shapes else sc_crd.tl.region_shapes(section.table)  # none: empty frame
    sc_crd.io.write_qupath(sdata, geojson, regions, table_key=key, overwrite=True)
    return int(section.table.uns["spacrd_region"]["n_regions"])


def _score_map(data: Any, png: Path, table_key: str = "table") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import spacrd_sc as sc_crd

    sc_crd.pl.score_map(data, show=False, save=png, table_key=table_key)
    plt.close("all")


def _load_model(spec: str, device: str) -> Any:
    import spacrd_sc as sc_crd

    logger.info("Loading the model %s.", spec)
    model = sc_crd.SpaCRD.from_pretrained(spec, device=device)
    if not model.is_fitted:
        raise ValueError(f"The model {spec!r} is not trained (saved after `tl.align` only); train it first.")
    return model


def _check_features(model: Any, spec: str, backbone: str | None) -> None:
    if not model.image_less and backbone is None:
        raise ValueError(
            f"The model {spec!r} uses {model.n_image_features} H&E features per spot: pass --backbone (and "
            "--weights) as at training."
        )
    if model.image_less and backbone is not None:
        logger.warning("The model %r is image-less: --backbone is ignored.", spec)


# --------------------------------------------------------------------------------------------------- score
def score(args: argparse.Namespace, progress: bool) -> int:
    import spacrd_sc as sc_crd

    out = Path(args.out).expanduser()
    sections = _sections.plan(args.inputs, args.platform)
    outputs = {
        s.name: (out / f"{s.name}.zarr", out / f"{s.name}_regions.geojson", out / f"{s.name}_score.png")
        for s in sections
    }
    for s in sections:
        if outputs[s.name][0].resolve() == s.path.resolve():
            raise ValueError(f"The output {outputs[s.name][0]} is the input itself; pass another --out.")
    _refuse_existing([p for paths in outputs.values() for p in paths], args.overwrite)
    quiet_libraries(args.debug)
    model = None
    if args.model != READY_MODEL:  # checked once, before any section is read
        model = _load_model(args.model, args.device)
        _check_features(model, args.model, args.backbone)
    out.mkdir(parents=True, exist_ok=True)

    failed = []
    for s in sections:
        t0 = time.perf_counter()
        zarr, geojson, png = outputs[s.name]
        try:
            _sections.read(s, bin_size_um=args.bin_size_um)
            m = model
            if m is None:  # the ready model, matched to this section's genes (cached per gene set)
                m = sc_crd.datasets.her2st_model(
                    genes=list(s.table.var_names),
                    seed=args.seed,
                    epochs=args.epochs,
                    device=args.device,
                    progress_bar=progress,
                )
            backbone = args.backbone if not m.image_less else None
            _sections.prepare(s, backbone=backbone, weights=args.weights, device=args.device, progress=progress)
            sc_crd.tl.cancer_score(
                s.sdata, m, threshold=_threshold(args.threshold), seed=args.seed, table_key=s.table_key
            )
            n_regions = _regions_and_geojson(s, geojson)
            _score_map(s.sdata, png, s.table_key)
            s.sdata.write(zarr, overwrite=True)
            t = s.table
            share = float(t.obs["spacrd_cancer"].mean())
            print(
                f"{s.name}: {t.n_obs} spots, {share:.1%} called cancer, {n_regions} tumour region(s), "
                f"{time.perf_counter() - t0:.1f} s -> {zarr}",
                flush=True,
            )
        except Exception as err:  # one failed section does not lose the others
            failed.append(s.name)
            report(err, debug=args.debug, prefix=f"{s.name}: ")
        finally:
            s.sdata = None  # free the section before the next one
    if failed:
        logger.error("%d of %d input(s) failed: %s.", len(failed), len(sections), ", ".join(failed))
        return FAILED
    return OK


# --------------------------------------------------------------------------------------------------- train
def _labels_of(section: _sections.Section, source: str, classes: list[str] | None) -> Any:
    """Boolean cancer labels of ``section`` from an obs column or a QuPath GeoJSON (``classes``: the cancer classes
    of a GeoJSON or of a column of categories / text; a bool or 0/1 column is used as it is)."""
    import pandas as pd

    import spacrd_sc as sc_crd

    table = section.table
    if source.lower().endswith((".geojson", ".json")):
        sc_crd.pp.annotate_spots(
            section.sdata, source, cancer_classes=classes, label_key=LABEL, table_key=section.table_key, overwrite=True
        )
        return table.obs[LABEL].to_numpy(dtype=bool)
    if source not in table.obs:
        cols = list(table.obs.columns)
        raise KeyError(f"{section.name}: no label column {source!r} in the table; columns: {cols}.")
    col = table.obs[source]
    if classes is None or pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.to_numpy()  # fit_vrbca checks it is binary (bool or 0/1) and names the problem
    values = set(col.dropna().astype(str))
    unknown = [c for c in classes if c not in values]
    if unknown:
        raise ValueError(f"{section.name}: --cancer-classes {unknown} are not values of {source!r}: {sorted(values)}.")
    return col.astype(str).isin(classes).to_numpy() & col.notna().to_numpy()


def _check_labels(args: argparse.Namespace, n: int) -> tuple[list[str], list[str] | None]:
    labels = args.labels
    if len(labels) not in (1, n):
        raise ValueError(f"--labels is given {len(labels)} times for {n} inputs: give it once, or once per input.")
    labels = labels * n if len(labels) == 1 else labels
    classes = [c.strip() for c in args.cancer_classes.split(",") if c.strip()] if args.cancer_classes else None
    for src in labels:
        if src.lower().endswith((".geojson", ".json")):
            if not Path(src).expanduser().is_file():
                raise FileNotFoundError(f"Annotation file not found: {src!r}.")
            if classes is None:
                raise ValueError(
                    f"--labels {src!r} is a GeoJSON: pass --cancer-classes, the annotation classes that count as "
                    "cancer (e.g. --cancer-classes Tumor)."
                )
    return [str(Path(s).expanduser()) if s.lower().endswith((".geojson", ".json")) else s for s in labels], classes


def train(args: argparse.Namespace, progress: bool) -> int:
    t0 = time.perf_counter()
    out = Path(args.out).expanduser()
    sections = _sections.plan(args.inputs, args.platform)
    labels, classes = _check_labels(args, len(sections))
    for s in sections:  # every input is needed: a missing or unknown folder fails before any work
        s.platform = s.platform or _sections.detect_platform(s.path)
    _refuse_existing([out], args.overwrite)
    quiet_libraries(args.debug)
    import anndata as ad  # the libraries load once the cheap checks passed
    import numpy as np
    import pandas as pd
    import squidpy as sq

    tables = {}
    for s, source in zip(sections, labels, strict=True):
        _sections.read(s, bin_size_um=args.bin_size_um)
        features = {"backbone": args.backbone, "weights": args.weights, "device": args.device}
        _sections.prepare(s, **features, progress=progress, graph=False)
        t = s.table
        obsm = {"spatial": np.asarray(t.obsm["spatial"])}
        if args.backbone is not None:
            obsm["X_uni"] = np.asarray(t.obsm["X_uni"])
        y = _labels_of(s, source, classes)
        tables[s.name] = ad.AnnData(t.X, obs=pd.DataFrame({LABEL: y}, index=t.obs_names), var=t.var[[]], obsm=obsm)
        s.sdata = None
    adata = ad.concat(tables, label="section", join="inner", index_unique="-")
    sq.gr.spatial_neighbors_knn(adata, library_key="section", n_neighs=_sections.N_NEIGHS)
    model = _fit(adata, args, progress, image_key="X_uni" if args.backbone is not None else None)
    y = adata.obs[LABEL].to_numpy(dtype=float)
    sources = ", ".join(f"{n} (labels: {Path(src).name})" for n, src in zip(tables, labels, strict=True))
    card = {
        "description": f"Trained with `spacrd-sc train` on {len(tables)} section(s).",
        "training_data": f"{sources}; {adata.n_obs} spots, {y.mean():.1%} cancer"
        + (f"; cancer classes: {', '.join(classes)}." if classes else "."),
    }
    if args.backbone is not None:
        card["image_backbone"] = args.backbone + (f" ({Path(args.weights).name})" if args.weights else "")
    model.save_pretrained(out, overwrite=args.overwrite, card=card)
    mode = "image-less" if model.image_less else f"{model.n_image_features} H&E features ({args.backbone})"
    print(
        f"model -> {out}: {model.n_genes} genes, {mode}, {adata.n_obs} spots from {len(tables)} section(s) "
        f"({y.mean():.1%} cancer), {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return OK


# ---------------------------------------------------------------------------------------------------- demo
def demo(args: argparse.Namespace, progress: bool) -> int:
    t0 = time.perf_counter()
    out = Path(args.out).expanduser()
    target = args.target.strip().upper()
    sources = [s.strip().upper() for s in args.train.split(",") if s.strip()]
    if target in sources:
        raise ValueError(f"The held-out section {target} is also a training section ({','.join(sources)}).")
    files = {
        "model": out / "model",
        "png": out / f"{target}_score.png",
        "csv": out / f"{target}_scores.csv",
        "metrics": out / "metrics.json",
    }
    _refuse_existing(list(files.values()), args.overwrite)
    quiet_libraries(args.debug)
    import anndata as ad  # the libraries load once the cheap checks passed
    import pandas as pd
    import squidpy as sq

    import spacrd_sc as sc_crd

    logger.info("Reading her2st sections %s (held out: %s).", ", ".join(sources), target)
    tsdata = sc_crd.datasets.her2st(target)  # the held-out section first: a bad name fails before any training
    tables = {s: sc_crd.datasets.her2st(s).tables["table"] for s in sources}
    adata = ad.concat(tables, label="section", join="inner", index_unique="-")
    sq.gr.spatial_neighbors_knn(adata, library_key="section", n_neighs=_sections.N_NEIGHS)
    t_train = time.perf_counter()
    model = _fit(adata, args, progress)
    t_train = time.perf_counter() - t_train

    table = tsdata.tables["table"]
    sq.gr.spatial_neighbors_knn(table, n_neighs=_sections.N_NEIGHS)
    sc_crd.tl.cancer_score(tsdata, model, seed=args.seed)
    sc_crd.tl.tumour_regions(tsdata)
    metrics = {k: int(v) if k.startswith("n") else float(v) for k, v in sc_crd.tl.evaluate(tsdata).items()}
    out.mkdir(parents=True, exist_ok=True)
    _score_map(tsdata, files["png"])
    cols = [c for c in ("spacrd_score", "spacrd_cancer", "spacrd_region", "pathology", "cancer") if c in table.obs]
    xy = pd.DataFrame(table.obsm["spatial"], index=table.obs_names, columns=["x", "y"])
    pd.concat([xy, table.obs[cols]], axis=1).rename_axis("spot").to_csv(files["csv"])
    model.save_pretrained(
        files["model"],
        overwrite=args.overwrite,
        card={"description": "The `spacrd-sc demo` model.", "training_data": f"her2st sections {', '.join(sources)}."},
    )
    record = {"train": sources, "target": target, **metrics, "called_share": float(table.obs["spacrd_cancer"].mean())}
    record["train_seconds"] = round(t_train, 1)
    files["metrics"].write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{target} (held out; trained on {' '.join(sources)}): AUC {metrics['auc']:.3f}, AP {metrics['ap']:.3f}, "
        f"F1 {metrics['f1']:.3f}, KS {metrics['ks']:.3f}; {table.n_obs} spots, "
        f"{record['called_share']:.1%} called cancer; {time.perf_counter() - t0:.0f} s -> {out}",
        flush=True,
    )
    return OK


COMMANDS = {"demo": demo, "score": score, "train": train}
__all__ = ["COMMANDS", "FAILED", "OK"]
