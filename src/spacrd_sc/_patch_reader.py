"""Lazy per-spot H&E patch reader: the package-level seam behind ``pp.spot_patches`` and ``tl.extract_uni``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._constants import TABLE_KEY
from ._images import _format_bytes, _image_hw, _image_levels, _is_derived
from ._logging import logger
from ._spatial import _spot_geometry, _spots_outside
from ._utils import _get_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


#: Value of the pixels of a patch that fall outside the image (white, like the H&E background).
PAD_VALUE = 255
#: A dask-backed level at most this large is read into memory once instead of window by window.
_IN_MEMORY_MAX_BYTES = 64 * 2**20
#: Patches computed together in one dask call (chunks shared by neighbouring spots are read once).
_BATCH = 64
#: A level is used when the field spans at least this fraction of the output size in its pixels: 1 % of
#: upsampling is invisible, and it keeps rounded levels of odd-sized images usable.
_LEVEL_TOLERANCE = 0.01
#: A field spanning fewer than ``size / _UPSAMPLE_WARN`` pixels of the finest level is upsampled with a warning.
_UPSAMPLE_WARN = 2.0


def _choose_level(downsamples: Sequence[float], side_px: float, size: int) -> int:
    """Index of the coarsest level on which a field of ``side_px`` level-0 pixels still spans ≥ ``size`` px.

    ``downsamples[i]`` is level ``i``'s downsample factor from level 0 (``1`` for level 0, increasing). The
    patch is then only ever downsampled (antialiased) to ``size``, from the fewest pixels that hold its
    detail; when even level 0 is coarser than that, level 0 (the image is upsampled).
    """
    need = size * (1.0 - _LEVEL_TOLERANCE)
    best = 0
    for i, d in enumerate(downsamples):
        if side_px / float(d) >= need and d >= downsamples[best]:
            best = i
    return best


class _Level:
    """One readable resolution level: ``(3, y, x)`` dask (or numpy) data and its downsample from level 0."""

    def __init__(self, data: Any, fy: float, fx: float) -> None:
        self.data = data
        self.height, self.width = int(data.shape[1]), int(data.shape[2])
        self.fy, self.fx = float(fy), float(fx)
        self.cache: np.ndarray | None = None if not isinstance(data, np.ndarray) else np.moveaxis(data, 0, -1)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if not isinstance(self.data, np.ndarray):
            state["cache"] = None  # re-read lazily in the receiving process
        return state

    @property
    def downsample(self) -> float:
        return max(self.fy, self.fx)

    def ensure_cache(self) -> None:
        if self.cache is None and self.data.nbytes <= _IN_MEMORY_MAX_BYTES:
            self.cache = np.ascontiguousarray(
                np.moveaxis(np.asarray(self.data.compute(scheduler="synchronous")), 0, -1)
            )


def _stored_levels(element: Any) -> list[_Level]:
    """The levels of an image element that are stored (read as they are), finest first.

    Levels that spatialdata computes lazily from level 0 (a pyramid built from an in-memory image) are left
    out: cropping level 0 and resizing once is faster and sharper than coarsening through dask.
    """
    levels = _image_levels(element)
    h0, w0 = _image_hw(levels[0])
    out = []
    for lv in levels:
        if lv is not levels[0] and _is_derived(lv, levels[0]):
            continue
        h, w = _image_hw(lv)
        out.append(_Level(lv.transpose("c", "y", "x").data[:3], h0 / h, w0 / w))
    return out


class _PatchReader:
    """Lazy, picklable access to one square patch per spot.

    Parameters are those of :func:`spacrd_sc.pp.spot_patches`; the image and the spots in its pixels come
    from :func:`spacrd_sc._spatial._spot_geometry`. Attributes: ``size``, ``image_key``, ``level`` (pyramid
    level read), ``diameter_px`` (spot diameter in level-0 pixels), ``side_px`` (field side in level-0 pixels:
    spot diameter × ``context``), ``centres_px`` (``(n, 2)`` spot centres ``x, y`` in level-0 pixels),
    ``height`` / ``width`` (of level 0), ``levels`` (the stored pyramid levels), ``n_obs``.

    Each call reads the coarsest stored pyramid level on which the field still spans ≥ ``size`` pixels
    (:func:`_choose_level`), and only the chunks (tiles) under each window; a level of at most 64 MiB is
    read into memory once per process instead. In-memory copies are not pickled, so sending a reader to
    DataLoader workers stays cheap.
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
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"Patch `size` must be an integer ≥ 1, got {size!r}.")
        if not (np.isfinite(context) and context > 0):
            raise ValueError(f"`context` must be a positive number, got {context!r}.")
        self.size = int(size)
        self.context = float(context)
        geo = _spot_geometry(data, image_key=image_key, table_key=table_key, diameter_px=diameter_px)
        self.image_key = geo.image_key
        self.height, self.width = geo.height, geo.width
        self.centres_px = geo.centres_px
        self.diameter_px = geo.diameter_px
        self.side_px = self.diameter_px * self.context
        self.n_obs = int(self.centres_px.shape[0])
        if geo.source == "uns":
            self.levels = [_Level(np.moveaxis(np.ascontiguousarray(geo.image), -1, 0), 1.0, 1.0)]
        else:
            self.levels = _stored_levels(data.images[geo.image_key])  # type: ignore[union-attr]
        self.level = _choose_level([lv.downsample for lv in self.levels], self.side_px, self.size)

        outside = _spots_outside(self.centres_px, self.diameter_px / 2, self.height, self.width)
        if outside.any():
            names = list(map(str, _get_table(data, table_key).obs_names[np.flatnonzero(outside)[:5]]))
            raise ValueError(
                f"{int(outside.sum())} of {self.n_obs} spots lie more than half a spot outside the "
                f"{self.width} x {self.height} px image {self.image_key!r} (e.g. {', '.join(names)}). "
                "The spot coordinates do not match the image."
            )
        if self.side_px * _UPSAMPLE_WARN < self.size:
            logger.warning(
                "Each patch spans only %.0f px of the finest level of image %r: it is upsampled %.1fx to %d px "
                "(the image is coarser than the backbone needs; a higher-resolution H&E gives sharper patches).",
                self.side_px,
                self.image_key,
                self.size / self.side_px,
                self.size,
            )
        lv = self.levels[self.level]
        logger.info(
            "Patches of %d px from level %d of image %r (%d x %d px, downsample %.3g, %s decoded%s): "
            "a %.0f px field per spot.",
            self.size,
            self.level,
            self.image_key,
            lv.width,
            lv.height,
            lv.downsample,
            _format_bytes(lv.data.nbytes),
            "" if isinstance(lv.data, np.ndarray) else f", chunks {lv.data.chunksize[1]} x {lv.data.chunksize[2]} px",
            self.side_px,
        )

    # ---------------------------------------------------------------------------------------------- pickling
    @property
    def _cache(self) -> np.ndarray | None:
        """The in-memory copy of the level read (``None`` while windows are read lazily)."""
        return self.levels[self.level].cache

    # ---------------------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self.n_obs

    def _geometry(
        self, i: int, lv: _Level, side_px: float
    ) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]:
        """Integer window ``(y0, y1, x0, x1)`` of level ``lv`` (with a filter margin) and the crop box inside it."""
        cx, cy = self.centres_px[i]
        hx, hy = side_px / 2 / lv.fx, side_px / 2 / lv.fy
        cx, cy = cx / lv.fx, cy / lv.fy  # pixel-edge frame: level-0 x ↦ x / downsample
        x0, x1, y0, y1 = cx - hx, cx + hx, cy - hy, cy + hy
        margin = int(math.ceil(max(1.0, 2 * max(hx, hy) / self.size))) + 1
        wx0, wy0 = math.floor(x0) - margin, math.floor(y0) - margin
        wx1, wy1 = math.ceil(x1) + margin, math.ceil(y1) + margin
        return (wy0, wy1, wx0, wx1), (x0 - wx0, y0 - wy0, x1 - wx0, y1 - wy0)

    @staticmethod
    def _clip(win: tuple[int, int, int, int], lv: _Level) -> tuple[int, int, int, int]:
        wy0, wy1, wx0, wx1 = win
        return (
            min(max(wy0, 0), lv.height),
            min(max(wy1, 0), lv.height),
            min(max(wx0, 0), lv.width),
            min(max(wx1, 0), lv.width),
        )

    def _pad(self, win: tuple[int, int, int, int], region: np.ndarray, lv: _Level) -> np.ndarray:
        """Place the clipped ``region`` (h, w, 3) into a window filled with :data:`PAD_VALUE`."""
        wy0, wy1, wx0, wx1 = win
        cy0, cy1, cx0, cx1 = self._clip(win, lv)
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

    def read(self, indices: Sequence[int] | np.ndarray | None = None, *, side_px: float | None = None) -> np.ndarray:
        """Patches of the spots ``indices`` (default: all), ``(k, size, size, 3)`` uint8 RGB.

        ``side_px``: field side in level-0 pixels for this call (default: the reader's ``side_px``); the
        level read is chosen for it.
        """
        if indices is None:
            idx = np.arange(self.n_obs)
        else:
            idx = np.asarray(indices)
            if idx.dtype == bool:
                if idx.shape != (self.n_obs,):
                    raise ValueError(f"A boolean mask must have length {self.n_obs}, got {idx.shape}.")
                idx = np.flatnonzero(idx)
            idx = np.array([self._index(i) for i in idx.ravel()], dtype=np.int64)
        side = self.side_px if side_px is None else float(side_px)
        level = self.level if side_px is None else _choose_level([v.downsample for v in self.levels], side, self.size)
        lv = self.levels[level]
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        lv.ensure_cache()
        geoms = [self._geometry(i, lv, side) for i in idx]
        if lv.cache is not None:
            for k, (win, box) in enumerate(geoms):
                cy0, cy1, cx0, cx1 = self._clip(win, lv)
                out[k] = self._resize(self._pad(win, lv.cache[cy0:cy1, cx0:cx1], lv), box)
            return out
        import dask

        for start in range(0, len(geoms), _BATCH):
            part = geoms[start : start + _BATCH]
            lazy = []
            for win, _ in part:
                cy0, cy1, cx0, cx1 = self._clip(win, lv)
                lazy.append(lv.data[:, cy0:cy1, cx0:cx1])
            regions = dask.compute(*lazy, scheduler="synchronous")
            for k, ((win, box), reg) in enumerate(zip(part, regions, strict=True)):
                region = np.moveaxis(np.asarray(reg, dtype=np.uint8), 0, -1)
                out[start + k] = self._resize(self._pad(win, region, lv), box)
        return out
