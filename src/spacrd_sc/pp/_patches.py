"""Square H&E patches centred on the spots (input of the image backbones)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import SPATIAL_KEY, TABLE_KEY
from .._logging import logger
from .._utils import _get_table, _library_id, _spot_diameter_px
from ..io._common import (
    _affine_scale,
    _apply_affine,
    _global_to_pixel,
    _image_levels,
    _spots_outside,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


#: Value of the pixels of a patch that fall outside the image (white, like the H&E background).
PAD_VALUE = 255
#: A dask-backed image at most this large is read into memory once instead of window by window.
_IN_MEMORY_MAX_BYTES = 64 * 2**20
#: Patches computed together in one dask call (chunks shared by neighbouring spots are read once).
_BATCH = 64


def _as_uint8_rgb(img: np.ndarray, what: str) -> np.ndarray:
    """``(h, w, 3)`` uint8 from an ``(h, w, 3|4)`` uint8 or float-in-[0, 1] array (scanpy stores floats)."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"{what} must be an RGB image (height, width, 3); got shape {img.shape}.")
    img = img[..., :3]
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 else 1.0
        return np.clip(np.rint(img * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer) and int(img.max()) <= 255:
        return img.astype(np.uint8)
    raise ValueError(f"{what} must be uint8 RGB; got dtype {img.dtype}.")


class _PatchReader:
    """Lazy, picklable access to one square patch per spot.

    Parameters are those of :func:`spot_patches`. Attributes: ``size``, ``image_key``, ``diameter_px``
    (spot diameter in pixels of the image patches are cut from), ``side_px`` (crop side = diameter ×
    context), ``centres_px`` (``(n, 2)`` spot centres ``x, y`` in those pixels), ``n_obs``.

    Only the window around a spot is read (dask slicing of level 0 of the image); an image of at most
    64 MiB is read into memory once per process instead. The in-memory copy is not pickled, so sending
    a reader to DataLoader workers stays cheap.
    """

    def __init__(
        self,
        data: AnnData | SpatialData,
        *,
        size: int = 224,
        diameter_px: float | None = None,
        image_key: str | None = None,
        table_key: str = TABLE_KEY,
        context: float = 1.0,
    ) -> None:
        from anndata import AnnData

        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"Patch `size` must be an integer ≥ 1, got {size!r}.")
        if not (np.isfinite(context) and context > 0):
            raise ValueError(f"`context` must be a positive number, got {context!r}.")
        if diameter_px is not None and not (np.isfinite(diameter_px) and diameter_px > 0):
            raise ValueError(f"`diameter_px` must be a positive number, got {diameter_px!r}.")
        self.size = int(size)
        self.context = float(context)
        adata = _get_table(data, table_key)
        if SPATIAL_KEY not in adata.obsm:
            raise KeyError(f"The table has no obsm[{SPATIAL_KEY!r}] with the spot centres.")
        xy = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] < 2:
            raise ValueError(f"obsm['spatial'] must be (n_spots, 2); got shape {xy.shape}.")
        xy = xy[:, :2]

        images = {} if isinstance(data, AnnData) else dict(getattr(data, "images", {}))
        self._cache: np.ndarray | None = None
        if images:
            self.image_key = self._resolve_key(image_key, list(images))
            affine = _global_to_pixel(data, self.image_key)  # type: ignore[arg-type]
            level0 = _image_levels(images[self.image_key])[0]
            if level0.sizes.get("c", 0) not in (3, 4) or np.dtype(level0.dtype) != np.uint8:
                raise ValueError(
                    f"Image {self.image_key!r} must be RGB uint8 (c=3); got c={level0.sizes.get('c')} "
                    f"and dtype {level0.dtype}."
                )
            arr = level0.transpose("c", "y", "x").data
            if isinstance(arr, np.ndarray):
                self._cache = np.ascontiguousarray(np.moveaxis(arr[:3], 0, -1))
                self._source: Any = None
            else:
                self._source = arr[:3]
            self.height, self.width = int(level0.sizes["y"]), int(level0.sizes["x"])
            scale = _affine_scale(affine)
            self.centres_px = _apply_affine(affine, xy)
            if diameter_px is None:
                diameter_px = self._uns_diameter(adata) * scale
        else:
            self.image_key, img, scalef = self._uns_image(adata, image_key)
            self._cache = np.ascontiguousarray(img)
            self._source = None
            self.height, self.width = int(img.shape[0]), int(img.shape[1])
            self.centres_px = xy * scalef
            if diameter_px is None:
                diameter_px = self._uns_diameter(adata) * scalef
        self.diameter_px = float(diameter_px)
        self.side_px = self.diameter_px * self.context
        self.n_obs = int(xy.shape[0])

        outside = _spots_outside(self.centres_px, self.diameter_px / 2, self.height, self.width)
        if outside.any():
            names = list(map(str, adata.obs_names[np.flatnonzero(outside)[:5]]))
            raise ValueError(
                f"{int(outside.sum())} of {self.n_obs} spots lie more than half a spot outside the "
                f"{self.width} x {self.height} px image {self.image_key!r} (e.g. {', '.join(names)}). "
                "The spot coordinates do not match the image."
            )

    # ---------------------------------------------------------------------------------------------- setup
    @staticmethod
    def _resolve_key(image_key: str | None, choices: Sequence[str]) -> str:
        if image_key is None:
            if len(choices) == 1:
                return choices[0]
            raise ValueError(f"The SpatialData has several images {list(choices)}; pass `image_key=`.")
        if image_key not in choices:
            raise KeyError(f"No image {image_key!r}; the images are {list(choices)}.")
        return image_key

    @staticmethod
    def _uns_diameter(adata: AnnData) -> float:
        try:
            return _spot_diameter_px(adata)
        except KeyError as err:
            raise KeyError(
                f"{err.args[0]} The spot diameter is unknown: pass `diameter_px=` (in image pixels)."
            ) from err

    @staticmethod
    def _uns_image(adata: AnnData, image_key: str | None) -> tuple[str, np.ndarray, float]:
        """The downscaled image of ``uns['spatial']`` (AnnData input) and its global→pixel scale."""
        spatial = adata.uns.get(SPATIAL_KEY)
        lib = _library_id(adata) if spatial else None
        entry = spatial[lib] if lib is not None else {}
        imgs = dict(entry.get("images", {}) or {})
        if not imgs:
            raise ValueError(
                "The section has no H&E image (image-less section): neither an image element nor "
                f"uns['spatial'][{lib!r}]['images']. Patches need an image; use the image-less mode."
            )
        if image_key is None:
            image_key = "hires" if "hires" in imgs else ("lowres" if "lowres" in imgs else next(iter(imgs)))
        if image_key not in imgs:
            raise KeyError(f"No image {image_key!r} in uns['spatial'][{lib!r}]['images'] ({list(imgs)}).")
        sf = entry.get("scalefactors", {})
        scalef = float(sf.get(f"tissue_{image_key}_scalef", 1.0))
        logger.warning(
            "Cutting patches from the downscaled %r image of uns['spatial'][%r] (scale %.4g of full "
            "resolution); pass the SpatialData for full-resolution patches.",
            image_key,
            lib,
            scalef,
        )
        return (
            image_key,
            _as_uint8_rgb(imgs[image_key], f"uns['spatial'][{lib!r}]['images'][{image_key!r}]"),
            scalef,
        )

    # ---------------------------------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if state.get("_source") is not None:
            state["_cache"] = None  # re-read lazily in the receiving process
        return state

    # ---------------------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self.n_obs

    def _ensure_cache(self) -> None:
        if self._cache is None and self._source is not None and self._source.nbytes <= _IN_MEMORY_MAX_BYTES:
            self._cache = np.ascontiguousarray(
                np.moveaxis(np.asarray(self._source.compute(scheduler="synchronous")), 0, -1)
            )

    def _geometry(self, i: int) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]:
        """Integer window ``(y0, y1, x0, x1)`` (with a filter margin) and the crop box inside it."""
        cx, cy = self.centres_px[i]
        half = self.side_px / 2
        x0, x1, y0, y1 = cx - half, cx + half, cy - half, cy + half
        margin = int(math.ceil(max(1.0, self.side_px / self.size))) + 1
        wx0, wy0 = math.floor(x0) - margin, math.floor(y0) - margin
        wx1, wy1 = math.ceil(x1) + margin, math.ceil(y1) + margin
        return (wy0, wy1, wx0, wx1), (x0 - wx0, y0 - wy0, x1 - wx0, y1 - wy0)

    def _clip(self, win: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        wy0, wy1, wx0, wx1 = win
        return (
            min(max(wy0, 0), self.height),
            min(max(wy1, 0), self.height),
            min(max(wx0, 0), self.width),
            min(max(wx1, 0), self.width),
        )

    def _pad(self, win: tuple[int, int, int, int], region: np.ndarray) -> np.ndarray:
        """Place the clipped ``region`` (h, w, 3) into a window filled with :data:`PAD_VALUE`."""
        wy0, wy1, wx0, wx1 = win
        cy0, cy1, cx0, cx1 = self._clip(win)
        if (cy0, cy1, cx0, cx1) == win:
            return np.ascontiguousarray(region)
        out = np.full((wy1 - wy0, wx1 - wx0, 3), PAD_VALUE, dtype=np.uint8)
        out[cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0] = region
        return out

    def _resize(self, window: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        from PIL import Image

        img = Image.fromarray(window, mode=None)
        return np.asarray(img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box))

    def _index(self, i: int) -> int:
        j = int(i)
        if j < 0:
            j += self.n_obs
        if not 0 <= j < self.n_obs:
            raise IndexError(f"Spot index {i} out of range for {self.n_obs} spots.")
        return j

    def __getitem__(self, i: int) -> np.ndarray:
        return self.read([i])[0]

    def read(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Patches of the spots ``indices`` (default: all), ``(k, size, size, 3)`` uint8 RGB."""
        if indices is None:
            idx = np.arange(self.n_obs)
        else:
            idx = np.asarray(indices)
            if idx.dtype == bool:
                if idx.shape != (self.n_obs,):
                    raise ValueError(f"A boolean mask must have length {self.n_obs}, got {idx.shape}.")
                idx = np.flatnonzero(idx)
            idx = np.array([self._index(i) for i in idx.ravel()], dtype=np.int64)
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        self._ensure_cache()
        geoms = [self._geometry(i) for i in idx]
        if self._cache is not None:
            for k, (win, box) in enumerate(geoms):
                cy0, cy1, cx0, cx1 = self._clip(win)
                out[k] = self._resize(self._pad(win, self._cache[cy0:cy1, cx0:cx1]), box)
            return out
        import dask

        for start in range(0, len(geoms), _BATCH):
            part = geoms[start : start + _BATCH]
            lazy = []
            for win, _ in part:
                cy0, cy1, cx0, cx1 = self._clip(win)
                lazy.append(self._source[:, cy0:cy1, cx0:cx1])
            regions = dask.compute(*lazy, scheduler="synchronous")
            for k, ((win, box), reg) in enumerate(zip(part, regions, strict=True)):
                region = np.moveaxis(np.asarray(reg, dtype=np.uint8), 0, -1)
                out[start + k] = self._resize(self._pad(win, region), box)
        return out


def spot_patches(
    data: AnnData | SpatialData,
    *,
    size: int = 224,
    diameter_px: float | None = None,
    image_key: str | None = None,
    table_key: str = TABLE_KEY,
    context: float = 1.0,
    indices: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Cut one square H&E patch per spot, centred on the spot, resized to ``size`` × ``size``.

    The crop side is the spot diameter × ``context`` in image pixels (the diameter comes from
    ``uns['spatial'][library_id]['scalefactors']['spot_diameter_fullres']``, in global units, converted to
    pixels of level 0 of the image through the image's transformation to ``"global"``). The crop is
    resized with PIL's bilinear filter, which is antialiased (area-correct) when downsampling; sub-pixel
    spot positions are honoured. Where the crop leaves the image it is padded with white (255, like the
    H&E background).

    Parameters
    ----------
    data
        A :class:`~spatialdata.SpatialData` with an RGB image element (full resolution), or an
        :class:`~anndata.AnnData` whose ``uns['spatial'][lib]['images']['hires']`` is used (a downscaled
        image, scaled by ``tissue_hires_scalef``; a warning says so).
    size
        Side of the output patches in pixels.
    diameter_px
        Spot diameter in pixels of the image that patches are cut from (level 0 of the SpatialData image,
        or the ``hires`` image of an AnnData); default: from ``uns['spatial']``.
    image_key
        Image element to use; default: the only image of the SpatialData. For an AnnData, the key in
        ``uns['spatial'][lib]['images']`` (default ``"hires"``).
    table_key
        Table holding the spots (SpatialData input).
    context
        Crop side in spot diameters (1 = the spot's bounding square, 2 = twice as wide).
    indices
        Row positions (or a boolean mask) of the spots to cut; default: all, in table row order.

    Returns
    -------
    ``(n, size, size, 3)`` uint8 RGB array, one patch per requested spot in table row order.
    Nothing is written to ``data``.

    Raises
    ------
    ValueError
        The section has no image (image-less section); several images and no ``image_key``; more than
        half a spot lies outside the image for some spots (the message gives how many); ``size < 1``.
    KeyError
        ``image_key`` / ``table_key`` not found; no ``obsm['spatial']``; no spot diameter.
    """
    reader = _PatchReader(
        data, size=size, diameter_px=diameter_px, image_key=image_key, table_key=table_key, context=context
    )
    return reader.read(indices)
