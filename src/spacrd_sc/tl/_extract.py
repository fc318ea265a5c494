"""``tl.extract_uni``: one H&E patch per spot → backbone features in ``obsm['X_uni']``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _distributed, _validate
from .._constants import IMAGE_FEATURES_KEY, SPATIAL_KEY, TABLE_KEY
from .._logging import logger
from .._patch_field import resolve_patch_field
from .._utils import _get_table, _progress, _resolve_device
from ..model import build_backbone, get_backbone_spec

if TYPE_CHECKING:
    import os

    import torch
    from anndata import AnnData
    from spatialdata import SpatialData


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _check_image(data: AnnData | SpatialData, image_key: str | None) -> None:
    """Fail early, with a clear message, when ``data`` carries no H&E image to crop patches from."""
    from anndata import AnnData

    if isinstance(data, AnnData):
        spatial = data.uns.get(SPATIAL_KEY)
        libs = spatial if isinstance(spatial, Mapping) else {}
        with_images = {lib: e.get("images", {}) for lib, e in libs.items() if isinstance(e, Mapping)}
        with_images = {lib: imgs for lib, imgs in with_images.items() if imgs}
        if not with_images:
            raise ValueError(
                "This section is image-less: the AnnData has no image in "
                "uns['spatial'][<library>]['images'], so there is nothing to crop patches from. "
                "Skip `extract_uni`: the SpaCRD model then runs expression-only "
                "(pass `image_key=None` to `tl.align`)."
            )
        # the patch reader warns that this image is a downscaled copy of the H&E
        return
    images = getattr(data, "images", None)
    if images is None or len(images) == 0:
        raise ValueError(
            "This section is image-less: the SpatialData has no image element, so there is nothing to crop "
            "patches from. Skip `extract_uni`: the SpaCRD model then runs expression-only "
            "(pass `image_key=None` to `tl.align`)."
        )
    if image_key is not None and image_key not in images:
        raise KeyError(f"image_key {image_key!r} is not an image of the SpatialData (images: {list(images)}).")


def _resolve_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {PRECISIONS}.")
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        raise ValueError("precision='fp16' needs a CUDA device; use 'fp32' or 'bf16' on the CPU.")
    return precision


class _PatchBatches:
    """A map-style dataset whose item ``b`` is the uint8 ``(k, s, s, 3)`` RGB tensor of batch ``b``.

    Reading whole batches with ``reader.read`` (one call per batch) keeps DataLoader workers cheap: no
    per-patch collation, and the uint8 → float conversion and normalisation happen on the device.
    """

    def __init__(self, reader: Any, batch_size: int) -> None:
        self.reader = reader
        self.n = len(reader)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __getitem__(self, b: int) -> torch.Tensor:
        import torch

        start = b * self.batch_size
        idx = np.arange(start, min(start + self.batch_size, self.n))
        patches = np.ascontiguousarray(self.reader.read(idx), dtype=np.uint8)
        return torch.from_numpy(patches)


def _to_model_input(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: str) -> torch.Tensor:
    """uint8 ``(k, s, s, 3)`` RGB → normalised float ``(k, 3, s, s)`` on ``device`` (channel 0 = red)."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return x.div_(255.0).sub_(mean).div_(std)


def extract_uni(
    data: AnnData | SpatialData,
    *,
    backbone: str = "uni",
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    token: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
    size: int | None = None,
    patch_field: str | float = "backbone",
    microns_per_pixel: float | None = None,
    context: float = 1.0,
    image_key: str | None = None,
    table_key: str = TABLE_KEY,
    key_added: str = IMAGE_FEATURES_KEY,
    precision: str = "auto",
    progress_bar: bool = True,
    copy: bool = False,
    overwrite: bool = False,
) -> AnnData | None:
    """Histology features per spot from a pathology foundation model (UNI by default).

    A square RGB patch is cropped around every spot centre, padded at the image edges, resized to ``size``,
    normalised with the backbone's mean/std and fed to the backbone; the pooled embedding is stored per spot.
    By default the patch covers the physical field the backbone was trained on (UNI: 224 px at 0.5 µm/px, a
    112 µm square), converted to image pixels with the section's µm per pixel; ``patch_field="spot"`` crops
    the spot diameter instead (the earlier default; a legacy-ST spot is 100 µm across, a Visium spot 55 µm).

    Parameters
    ----------
    data
        A :class:`~spatialdata.SpatialData` with an H&E image, spot circles and a table (as written by
        :mod:`spacrd_sc.io`), or an :class:`~anndata.AnnData` with an
        ``uns['spatial'][lib]['images']['hires']`` image (accepted with a warning: that image is downscaled).
    backbone
        ``"uni"`` (ViT-L/16, 1024-d), ``"uni2-h"`` (ViT-H/14, 1536-d), ``"h-optimus-0"`` (ViT-g/14, 1536-d),
        ``"virchow2"`` (ViT-H/14, class token ⊕ mean patch token, 2560-d), ``"resnet50"``, ``"densenet121"``
        or any timm model name (with ``weights=`` a local file). Each registered entry records its input size,
        µm per pixel, normalisation, licence and where these come from
        (:func:`spacrd_sc.model.get_backbone_spec`).
    weights
        Local weights file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``), loaded strictly.
        ``None``: download from the Hugging Face hub (UNI/UNI2-h are gated: accept the licence and
        pass ``token=``).
    pretrained
        ``False``: random initialisation, for tests and dry runs only (the features are meaningless).
    token
        Hugging Face token for gated weights (default: ``$HF_TOKEN`` or the saved ``hf auth login``).
    batch_size
        Patches per forward pass.
    num_workers
        DataLoader worker processes reading patches (``0``: read in the main process).
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``.
    size
        Side in pixels of the patch fed to the backbone; default: the backbone's input size (224).
    patch_field
        What a patch covers around each spot centre:

        - ``"backbone"`` (default): the backbone's training field, its µm per pixel × input size (112 µm for
          UNI, UNI2-h, H-optimus-0 and Virchow2). Backbones without a physical scale (ImageNet CNNs, other
          timm models) fall back to ``"spot"``, with an info message.
        - ``"spot"``: the spot diameter (``spot_diameter_fullres``), whatever the image resolution.
        - a number: a side in µm.

        A physical field needs the section's µm per pixel (``microns_per_pixel=``, else read from
        ``uns['spatial'][library_id]``); when it is unknown a :class:`ValueError` says so before any work.
    microns_per_pixel
        µm per unit of ``obsm['spatial']`` (i.e. per full-resolution image pixel, what a scanner reports).
        Default: ``scalefactors`` / ``metadata['microns_per_pixel']``, else the spot diameter in µm
        (``metadata['spot_diameter_um']``, ``'bin_size_um'`` or the platform's) over
        ``scalefactors['spot_diameter_fullres']``.
    context
        Multiplies the patch side (``1.0``: the field itself; ``2.0`` with ``patch_field="spot"``: twice the
        spot diameter).
    image_key
        Image element of the SpatialData; default: the one the reader recorded in
        ``uns['spatial'][library_id]['metadata']['image_key']`` (the full-resolution H&E), else the only image.
    table_key
        Table of the SpatialData holding the spots.
    key_added
        Key of the features in ``.obsm`` and of the parameters in ``.uns``.
    precision
        ``"auto"`` (bf16 autocast on CUDA, fp32 on the CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
    progress_bar
        Show a progress bar over batches.
    copy
        Return a copy of the table with the results instead of writing into ``data``.
    overwrite
        Replace an existing ``obsm[key_added]`` / ``uns[key_added]`` that spacrd_sc did not write (refused
        otherwise, naming it).

    Returns
    -------
    ``None`` (or the table copy when ``copy=True``), with

    - ``.obsm[key_added]``: ``float32`` array ``(n_spots, dim)``, rows in table order;
    - ``.uns[key_added]['params']``: ``backbone``, ``timm_model``, ``weights`` (local path,
      ``"hf-hub:<repo>/<file>"`` or ``"random-init"``), ``size``, ``diameter_px`` (spot diameter in pixels of
      the image read), ``context``, ``image_key``, ``mean``, ``std``, ``precision``, ``device``, ``batch_size``;
      ``patch_field`` (the one used: ``"backbone"``, ``"spot"`` or a side in µm), ``microns_per_pixel`` (µm
      per level-0 pixel of the image read; NaN when unknown), ``microns_per_pixel_source``, ``field_um`` and
      ``field_px`` (the patch side actually cropped, in µm and in level-0 pixels, ``context`` included).
    An existing ``.obsm[key_added]`` written by spacrd_sc is overwritten with a warning; one it did not write
    is refused unless ``overwrite=True``.

    Notes
    -----
    Inside an initialised :mod:`torch.distributed` process group (a script launched with ``torchrun``), each
    process runs the backbone on its own contiguous block of the batches and every process then holds the
    features of all spots; call it on every process (see the "Several GPUs and many sections" page).
    """
    import torch

    # ---- cheap checks first: nothing is built or read before the inputs are known to be usable
    spec = get_backbone_spec(backbone)
    if weights is not None:
        from pathlib import Path

        if not Path(weights).expanduser().is_file():
            raise FileNotFoundError(f"Weights file {str(weights)!r} does not exist.")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(num_workers, int | np.integer) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}.")
    if size is None:
        size = spec.input_size
    if not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size must be an integer ≥ 8 (pixels), got {size!r}.")
    if not np.isfinite(context) or context <= 0:
        raise ValueError(f"context must be a positive number (multiple of the patch field), got {context!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)

    table = _validate.table(_get_table(data, table_key), what="extract_uni")
    written = {"obsm": [key_added], "uns": [key_added]}
    _validate.writable_keys(table, written, overwrite=overwrite, record=key_added)
    if SPATIAL_KEY in table.obsm:
        _validate.coordinates(table)
    _check_image(data, image_key)
    field = resolve_patch_field(
        table, patch_field, microns_per_pixel=microns_per_pixel, backbone_field_um=spec.field_um, backbone=spec.name
    )

    from .._patch_reader import _PatchReader

    reader = _PatchReader(
        data,
        size=int(size),
        image_key=image_key,
        table_key=table_key,
        context=field.spot_context * float(context),
    )
    if len(reader) != table.n_obs:
        raise RuntimeError(f"The patch reader yields {len(reader)} patches for {table.n_obs} table rows.")
    field_params = field.record(reader)
    image_mpp = field_params["microns_per_pixel"]
    if spec.microns_per_pixel is not None and image_mpp > 2 * spec.microns_per_pixel:
        logger.warning(
            "The image has %.3g µm per pixel, %.1f times coarser than the %.3g µm/px %r was trained on: its "
            "patches are upsampled and carry less detail than the backbone expects.",
            image_mpp,
            image_mpp / spec.microns_per_pixel,
            spec.microns_per_pixel,
            spec.name,
        )

    model, spec = build_backbone(backbone, weights=weights, pretrained=pretrained, token=token)
    if int(size) != spec.input_size and hasattr(model, "patch_embed") and not getattr(model, "dynamic_img_size", False):
        raise ValueError(
            f"Backbone {spec.name!r} only accepts {spec.input_size}-px inputs (no dynamic image size); "
            f"got size={size}. Leave `size=None`."
        )

    # ---- run
    model = model.to(dev)
    if not pretrained:  # with torch.distributed, every rank runs rank 0's random weights
        _distributed.sync_module(model)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    on_cuda = dev.startswith("cuda")
    batches = _PatchBatches(reader, int(batch_size))
    # with torch.distributed, each rank runs one contiguous block of the batches (all of them in one process)
    mine = _distributed.block(len(batches))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, mine),
        batch_size=None,
        shuffle=False,
        num_workers=int(num_workers),
        pin_memory=on_cuda,
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    autocast = torch.autocast(device_type="cuda" if on_cuda else "cpu", dtype=amp_dtype, enabled=amp_dtype is not None)

    n = table.n_obs
    rows = range(mine.start * int(batch_size), min(mine.stop * int(batch_size), n))  # the spots of those batches
    feats = np.empty((len(rows), int(spec.dim)), dtype=np.float32)
    start, t0 = 0, time.perf_counter()
    with torch.inference_mode(), autocast:
        for batch in _progress(loader, total=len(loader), disable=not progress_bar, desc=f"{spec.name} features"):
            out = model(_to_model_input(batch, mean, std, dev))
            k = out.shape[0]
            feats[start : start + k] = out.float().cpu().numpy()
            start += k
    if start != len(rows):
        raise RuntimeError(f"Extracted {start} feature rows for {len(rows)} spots.")
    feats = _distributed.gather_rows(feats)  # every rank gets the features of all spots, in table order
    logger.info(
        "extract_uni: %d patches with %r on %s (%s) in %.1f s.",
        n,
        spec.name,
        dev,
        prec,
        time.perf_counter() - t0,
    )

    # ---- write
    adata = table.copy() if copy else table
    adata.obsm[key_added] = feats
    diameter = getattr(reader, "diameter_px", None)
    params: dict[str, Any] = {
        "backbone": spec.name,
        "timm_model": spec.timm_name,
        "weights": str(spec.weights_source),
        "size": int(size),
        "diameter_px": float(diameter) if diameter is not None else float("nan"),
        "context": float(context),
        "image_key": str(getattr(reader, "image_key", image_key)),
        "mean": [float(v) for v in spec.mean],
        "std": [float(v) for v in spec.std],
        "precision": prec,
        "device": dev,
        "batch_size": int(batch_size),
        **field_params,
    }
    adata.uns[key_added] = {"params": params}
    _validate.record_written(adata, written)
    return adata if copy else None
