"""Lazy per-spot H&E patch reader: the package-level seam behind ``pp.spot_patches`` and ``tl.extract_uni``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._constants import TABLE_KEY
from ._spatial import _spot_geometry, _spots_outside
from ._utils import _get_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


#: Value of the pixels of a patch that fall outside the image (white, like the H&E background).
PAD_VALUE = 255
#: A dask-backed image at most this large is read into memory once instead of window by window.
_IN_MEMORY_MAX_BYTES = 64 * 2**20
#: Patches computed together in one dask call (chunks shared by neighbouring spots are read once).
_BATCH = 64


class _PatchReader:
    """Lazy, picklable access to one square patch per spot.

    Parameters are those of :func:`spacrd_sc.pp.spot_patches`; the image and the spots in its pixels come
    from :func:`spacrd_sc._spatial._spot_geometry`. Attributes: ``size``, ``image_key``, ``level``, ``diameter_px``
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
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"Patch `size` must be an integer ≥ 1, got {size!r}.")
        if not (np.isfinite(context) and context > 0):
            raise ValueError(f"`context` must be a positive number, got {context!r}.")
        self.size = int(size)
        self.context = float(context)
        geo = _spot_geometry(data, image_key=image_key, table_key=table_key, diameter_px=diameter_px)
        self.image_key = geo.image_key
        self.level = geo.level
        self.height, self.width = geo.height, geo.width
        self.centres_px = geo.centres_px
        self.diameter_px = geo.diameter_px
        self.side_px = self.diameter_px * self.context
        self.n_obs = int(self.centres_px.shape[0])
        self._cache: np.ndarray | None = None
        self._source: Any = None
        if geo.source == "uns":
            self._cache = geo.image
        else:
            arr = geo.image.data
            if isinstance(arr, np.ndarray):
                self._cache = np.ascontiguousarray(np.moveaxis(arr[:3], 0, -1))
            else:
                self._source = arr[:3]  # dask: only the windows around spots are read

        outside = _spots_outside(self.centres_px, self.diameter_px / 2, self.height, self.width)
        if outside.any():
            names = list(map(str, _get_table(data, table_key).obs_names[np.flatnonzero(outside)[:5]]))
            raise ValueError(
                f"{int(outside.sum())} of {self.n_obs} spots lie more than half a spot outside the "
                f"{self.width} x {self.height} px image {self.image_key!r} (e.g. {', '.join(names)}). "
                "The spot coordinates do not match the image."
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
