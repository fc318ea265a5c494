"""Synthetic H&E-like test images: smooth stain colours on painted tissue, white glass elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

#: Value of the background (glass) pixels: white, as on a scanned slide.
BACKGROUND = 255


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, H&E-coloured uint8 RGB test image (HWC), every pixel stained (no background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    for c, base in enumerate((200.0, 120.0, 190.0)):
        fy, fx, ph = rng.uniform(2, 6), rng.uniform(2, 6), rng.uniform(0, 6)
        img[..., c] = base + 40 * np.sin(fy * np.pi * yy / height + ph) * np.cos(fx * np.pi * xx / width)
    return np.clip(img, 0, 255).astype(np.uint8)


def tissue_mask(height: int, width: int, tissue_xy: np.ndarray, radius: float) -> np.ndarray:
    """``(height, width)`` bool: pixels within ``radius`` px of a tissue point ``(x, y)``."""
    from scipy.ndimage import distance_transform_edt

    seeds = np.zeros((height, width), dtype=bool)
    xy = np.rint(np.asarray(tissue_xy, dtype=float)).astype(np.int64)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    seeds[xy[ok, 1], xy[ok, 0]] = True
    return distance_transform_edt(~seeds) <= radius


def paint_tissue(img: np.ndarray, tissue_xy: np.ndarray, radius: float) -> np.ndarray:
    """``img`` with every pixel farther than ``radius`` px from the tissue points set to white glass."""
    out = img.copy()
    out[~tissue_mask(img.shape[0], img.shape[1], tissue_xy, radius)] = BACKGROUND
    return out


def he_section(height: int, width: int, tissue_xy: np.ndarray, radius: float, seed: int = 0) -> np.ndarray:
    """A stained section: :func:`smooth_rgb` on the tissue around ``tissue_xy``, white glass elsewhere."""
    return paint_tissue(smooth_rgb(height, width, seed), tissue_xy, radius)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 RGB image to ``(height, width)``."""
    return np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))


def write_png(path: Path, img: np.ndarray) -> None:
    """Write ``img`` as a PNG (parents created), fast compression."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, compress_level=1)


def halve(img: np.ndarray) -> np.ndarray:
    """``img`` at half the size in each direction, 2 x 2 box averages."""
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((w // 2, h // 2), Image.Resampling.BOX))


def write_pyramid(path: Path, img: np.ndarray, *, n_levels: int = 3, compression: str = "jpeg", **kw) -> Path:
    """An OME-TIFF whose level 0 is ``img`` and levels ``1..n-1`` are 2 x 2 box averages, 256 px tiles."""
    opts = {"tile": (256, 256), "photometric": "rgb", "compression": compression, **kw}
    if compression == "jpeg":
        opts["compressionargs"] = {"level": 95}
    levels = [img]
    for _ in range(n_levels - 1):
        levels.append(halve(levels[-1]))
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(levels[0], subifds=n_levels - 1, metadata={"axes": "YXS"}, **opts)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, **opts)
    return path
