"""Image elements: build them (pyramid, chunks), list their levels, read image files, map frames (affines).

Internal seam shared by :mod:`spacrd_sc.io`, :mod:`spacrd_sc._spatial` and :mod:`spacrd_sc._patch_reader`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._logging import logger

if TYPE_CHECKING:
    import xarray as xr
    from spatialdata import SpatialData


#: Images whose longer side exceeds this many pixels are stored as a multiscale pyramid.
MULTISCALE_MIN_PX = 4096
#: The pyramid is halved until its coarsest level is at most this many pixels on its longer side.
PYRAMID_COARSEST_PX = 1024
#: Chunk size (pixels, y and x) of image elements: small enough that one spot patch reads few bytes.
IMAGE_CHUNK_PX = 512
#: Decompression-bomb limit used while reading a whole-slide H&E (PIL's default is ~89 Mpx).
MAX_IMAGE_PIXELS = 50_000 * 50_000
#: Coordinate system of the full-resolution H&E pixel frame.
GLOBAL_CS = "global"
#: File name endings read as (pyramidal) TIFF: tile by tile, stored levels kept (SVS through the same path).
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".svs")

#: A TIFF chunk above this size is not read chunk by chunk (it is memory-mapped where possible).
_IN_MEMORY_WINDOW_BYTES = 64 * 2**20
#: Level 0 up to this size may be read whole to make the ``hires`` copy when the pyramid is not stored.
_DIRECT_RESIZE_MAX_BYTES = 2**30


# ----------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------
def _format_bytes(n: float) -> str:
    """``n`` bytes as ``"12.3 MiB"`` / ``"4.50 GiB"`` for log messages."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _check_path(
    path: str | os.PathLike[str], what: str, *, kind: Literal["file", "dir"] = "file", hint: str = ""
) -> Path:
    """``path`` as a :class:`~pathlib.Path`; :class:`FileNotFoundError` naming it (and what it is) when absent.

    The one path check of the package (readers, datasets): ``kind="dir"`` for folders.
    """
    noun = f"{what} folder" if kind == "dir" else what
    if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
        raise TypeError(f"{noun} must be a path (str or os.PathLike); got {type(path).__name__} {path!r}.")
    p = Path(path).expanduser()
    if not (p.is_dir() if kind == "dir" else p.is_file()):
        # a file where a folder is expected (or the reverse) is named as such
        other = " (it is a file, not a folder)" if kind == "dir" and p.is_file() else ""
        other = " (it is a folder, not a file)" if kind == "file" and p.is_dir() else other
        raise FileNotFoundError(f"{noun} not found: {str(p)!r}{other}.{(' ' + hint) if hint else ''}")
    return p


@contextlib.contextmanager
def _allow_large_images(limit: int = MAX_IMAGE_PIXELS) -> Iterator[None]:
    """Raise PIL's decompression-bomb limit for the duration of one read, then restore it."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    if previous is not None and previous < limit:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _read_image_file(path: str | Path) -> np.ndarray:
    """Read a jpg/png/tif H&E into a ``(height, width, channels)`` numpy array (no conversion of dtype).

    Whole-slide images above PIL's default pixel limit are allowed for this read only (up to 2.5 Gpx).
    Palette / CMYK / YCbCr images are converted to RGB; grayscale stays 2-D (rejected by the image model).
    """
    p = _check_path(path, "Image file")
    if p.suffix.lower() in {".tif", ".tiff"}:
        import tifffile

        try:
            arr = tifffile.imread(p)
        except tifffile.TiffFileError as err:
            raise ValueError(f"Image file {str(p)!r} is not a readable TIFF ({err}).") from None
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)  # channel-first TIFF
        return np.asarray(arr)
    from PIL import Image, UnidentifiedImageError

    with _allow_large_images():
        try:
            opened = Image.open(p)
        except UnidentifiedImageError:
            raise ValueError(f"Image file {str(p)!r} is not a readable image (damaged, not jpg/png/tif).") from None
        with opened as img:
            logger.debug("Reading %s (%d x %d px, mode %s).", p, img.width, img.height, img.mode)
            if img.mode in {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}:
                img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
            return np.asarray(img)


#: Downsample factors of one pyramid level may differ between y and x by this much (relative) before the
#: pyramid is refused: rounding of odd sizes stays far below it.
_LEVEL_ASPECT_TOL = 0.05


class _TiffLevel:
    """One level of a TIFF series as a window-readable, picklable array (tifffile's zarr store underneath).

    The file is opened on first read in each process (and reopened after a fork or unpickling), so DataLoader
    workers never share a file handle (forked processes share the file offset) and pickling sends only the
    path. ``memmap=True``: an uncompressed contiguous level is memory-mapped instead (one chunk would be the
    whole image).
    """

    def __init__(
        self, file: Path, series: int, level: int, shape: tuple[int, ...], dtype: Any, *, memmap: bool = False
    ) -> None:
        self.file, self.series, self.level, self.memmap = Path(file), int(series), int(level), bool(memmap)
        self.shape, self.dtype, self.ndim = tuple(int(v) for v in shape), np.dtype(dtype), len(shape)
        self._array: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None, "_pid": -1}

    def _open(self) -> Any:
        if self._array is None or self._pid != os.getpid():
            import tifffile

            if self.memmap:
                self._array = tifffile.memmap(self.file, series=self.series, level=self.level, mode="r")
            else:
                import zarr

                store = tifffile.imread(self.file, aszarr=True, series=self.series, level=self.level)
                self._array = zarr.open(store, mode="r")
            self._pid = os.getpid()
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._open()[key])


def _tiff_levels(file: Path, what: str = "H&E image") -> list[Any]:
    """The pyramid levels (tifffile series levels, finest first) of series 0 of a TIFF; header only.

    Raises
    ------
    ValueError
        Naming the file: not a readable TIFF; levels not ordered finest → coarsest; a level whose y and x
        downsample factors differ (not a downsampled copy of level 0); levels with another axis layout or
        channel count than level 0; a compression whose codec is not installed (JPEG tiles need
        ``imagecodecs``).
    """
    import tifffile

    try:
        with tifffile.TiffFile(file) as tf:
            if not tf.series:
                raise ValueError(f"{what} {str(file)!r} holds no image series.")
            levels = list(tf.series[0].levels)
            info = [(lv.shape, lv.axes, lv.dtype, lv.keyframe.compression) for lv in levels]
    except tifffile.TiffFileError as err:
        raise ValueError(f"{what} {str(file)!r} is not a readable TIFF ({err}).") from None
    shape0, axes0, _, _ = info[0]
    if "Y" not in axes0 or "X" not in axes0:
        raise ValueError(f"{what} {str(file)!r} has no Y / X axes (axes {axes0!r}, shape {shape0}).")
    h0, w0 = shape0[axes0.index("Y")], shape0[axes0.index("X")]
    sizes = []
    for i, (shape, axes, dtype, _) in enumerate(info):
        rest0 = [s for a, s in zip(axes0, shape0, strict=True) if a not in "YX"]
        rest = [s for a, s in zip(axes, shape, strict=True) if a not in "YX"]
        if axes != axes0 or rest != rest0 or dtype != info[0][2]:
            raise ValueError(
                f"{what} {str(file)!r}: pyramid level {i} (axes {axes!r}, shape {shape}, {dtype}) does not match "
                f"level 0 (axes {axes0!r}, shape {shape0}, {info[0][2]}): not a pyramid of one image."
            )
        sizes.append((shape[axes.index("Y")], shape[axes.index("X")]))
    for i in range(1, len(sizes)):
        (hp, wp), (h, w) = sizes[i - 1], sizes[i]
        fy, fx = h0 / h, w0 / w
        # a level of an odd-sized image is rounded up or down: allow one pixel of rounding either way
        same = abs(fy - fx) <= _LEVEL_ASPECT_TOL * max(fy, fx) or abs(h0 / fx - h) <= 1 or abs(w0 / fy - w) <= 1
        if not (h < hp and w < wp) or not same:
            raise ValueError(
                f"{what} {str(file)!r}: pyramid level {i} ({w} x {h} px) is not a downsampled copy of level 0 "
                f"({w0} x {h0} px): downsample factors x {fx:.3g}, y {fy:.3g}"
                + ("" if h < hp and w < wp else f", not smaller than level {i - 1} ({wp} x {hp} px)")
                + ". Levels must shrink y and x by the same factor; re-export the pyramid."
            )
    _check_codec(file, info[0][3], what)
    return levels


def _check_codec(file: Path, compression: Any, what: str) -> None:
    """:class:`ValueError` when tifffile cannot decode ``compression`` here (JPEG / JPEG 2000 need imagecodecs)."""
    from tifffile import TIFF

    if int(compression) == 1:  # uncompressed
        return
    try:
        TIFF.DECOMPRESSORS[compression]  # resolves the codec (imagecodecs or tifffile's own) or fails
    except (KeyError, ValueError, ImportError) as err:
        name = getattr(compression, "name", str(compression))
        raise ValueError(
            f"{what} {str(file)!r} is {name}-compressed and no decoder for it is installed ({err}); "
            "`pip install imagecodecs` adds JPEG, JPEG 2000, JPEG XR and LZW decoders."
        ) from None


def _read_he_lazy(he_image: str | os.PathLike[str], what: str = "H&E image") -> list[Any]:
    """The levels of an H&E file, finest first, each ``(y, x, c)``: a TIFF / OME-TIFF / SVS pyramid lazily.

    Every level of series 0 of a TIFF (the stored pyramid of an OME-TIFF, SVS or tiled TIFF) becomes a dask
    array read tile by tile (no pixel is decoded here); an uncompressed contiguous level is memory-mapped
    instead. Other files (PNG, JPEG) are read into memory as one level. ``what`` names the file in errors.
    """
    file = _check_path(he_image, what)
    if not file.name.lower().endswith(TIFF_SUFFIXES):
        return [_read_image_file(file)]
    import dask.array as da
    import tifffile

    tiff_levels = _tiff_levels(file, what)
    out: list[Any] = []
    for i, lv in enumerate(tiff_levels):
        axes, shape = lv.axes, tuple(lv.shape)
        kf = lv.keyframe
        chunk = (kf.tilelength, kf.tilewidth) if kf.is_tiled else (kf.rowsperstrip, shape[axes.index("X")])
        contiguous = kf.is_contiguous and int(kf.compression) == 1
        big_chunk = int(np.prod(chunk)) * kf.samplesperpixel * lv.dtype.itemsize > _IN_MEMORY_WINDOW_BYTES
        memmap = contiguous and (big_chunk or not kf.is_tiled)
        src = _TiffLevel(file, 0, i, shape, lv.dtype, memmap=memmap)
        if memmap:
            chunks: Any = tuple(IMAGE_CHUNK_PX if a in "YX" else s for a, s in zip(axes, shape, strict=True))
        else:
            yx = {"Y": min(chunk[0], shape[axes.index("Y")]), "X": min(chunk[1], shape[axes.index("X")])}
            if int(np.prod(chunk)) * kf.samplesperpixel > _IN_MEMORY_WINDOW_BYTES:
                yx = {"Y": IMAGE_CHUNK_PX, "X": IMAGE_CHUNK_PX}  # one big compressed strip: no better choice
            chunks = tuple(yx.get(a, s) for a, s in zip(axes, shape, strict=True))
        token = f"{file.resolve()}-{file.stat().st_mtime_ns}-{i}"
        arr = da.from_array(src, chunks=chunks, asarray=False, lock=False, name=f"tiff-{tifffile.__version__}-{token}")
        out.append(_to_yxc(arr, axes, file, what))
    logger.info(
        "H&E %s: %d pyramid level%s (%s), %s tiles of %d x %d px, level 0 %s decoded; read lazily, tile by tile.",
        file.name,
        len(out),
        "" if len(out) == 1 else "s",
        ", ".join(f"{a.shape[1]} x {a.shape[0]}" for a in out),
        getattr(tiff_levels[0].keyframe.compression, "name", "?"),
        out[0].chunksize[0],
        out[0].chunksize[1],
        _format_bytes(out[0].nbytes),
    )
    return out


def _to_yxc(arr: Any, axes: str, file: Path, what: str) -> Any:
    """A TIFF array with tifffile ``axes`` as ``(y, x[, c])``: singleton axes dropped, channel last."""
    channel = next((a for a in ("S", "C") if a in axes and arr.shape[axes.index(a)] > 1), None)
    index: list[Any] = []
    keep: list[str] = []
    for ax, size in zip(axes, arr.shape, strict=True):
        if ax in ("Y", "X") or ax == channel:
            index.append(slice(None))
            keep.append(ax)
        elif size == 1:
            index.append(0)
        else:
            raise ValueError(f"{what} {str(file)!r} has a non-singleton {ax!r} axis (axes {axes}, shape {arr.shape}).")
    arr = arr[tuple(index)]
    order = [keep.index("Y"), keep.index("X")] + ([keep.index(channel)] if channel else [])
    return arr.transpose(order)


# ----------------------------------------------------------------------------------------------------------
# image elements
# ----------------------------------------------------------------------------------------------------------
def _auto_scale_factors(height: int, width: int) -> list[int]:
    """Factors of 2 for a pyramid: none up to :data:`MULTISCALE_MIN_PX`, else halve to ≤ 1024 px."""
    side = max(height, width)
    if side <= MULTISCALE_MIN_PX:
        return []
    factors: list[int] = []
    while side > PYRAMID_COARSEST_PX:
        factors.append(2)
        side //= 2
    return factors


def _image_model(
    image: Any | Sequence[Any],
    *,
    scale_factors: Sequence[int] | Literal["auto"] | None = "auto",
    transformations: Mapping[str, Any] | None = None,
    chunks: int | None = IMAGE_CHUNK_PX,
) -> xr.DataArray | xr.DataTree:
    """Turn an ``(height, width, channel)`` uint8 RGB(A) array into a spatialdata image element.

    Parameters
    ----------
    image
        numpy or dask array, ``(y, x, c)``, dtype uint8, 3 channels (a 4th alpha channel is dropped); or a
        list of such arrays, finest first: a stored pyramid (from :func:`_read_he_lazy`), whose levels become
        ``scale0 … scaleN`` as they are (no level is recomputed; coarser levels are added by averaging 2 x 2
        pixels until the longer side is ≤ 1024 px).
    scale_factors
        ``"auto"``: a multiscale pyramid (factors of 2) when the longer side exceeds 4096 px, a single
        scale otherwise; a list of factors; or ``None``/``[]`` for a single scale. Ignored for a stored
        pyramid.
    transformations
        Mapping coordinate system → transformation; default: identity to ``"global"``.
    chunks
        Chunk side in pixels (all channels in one chunk).

    Returns
    -------
    :class:`~spatialdata.models.Image2DModel` element with dims ``(c, y, x)`` and channel names
    ``r, g, b``: an :class:`xarray.DataArray`, or an :class:`xarray.DataTree` when multiscale.
    """
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    if isinstance(image, list | tuple):
        if len(image) > 1:
            return _stored_pyramid(image, transformations=transformations, chunks=chunks)
        image = image[0]
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) == 2:
        raise ValueError(f"The H&E image is grayscale (shape {shape}); an RGB image (height, width, 3) is required.")
    if len(shape) != 3:
        raise ValueError(f"Expected an RGB image of shape (height, width, 3); got shape {shape}.")
    n_channels = shape[2]
    if n_channels == 4:
        logger.info("Dropping the alpha channel of the H&E image.")
        image = image[..., :3]
    elif n_channels == 1:
        raise ValueError(f"The H&E image is grayscale (shape {shape}); an RGB image (height, width, 3) is required.")
    elif n_channels != 3:
        raise ValueError(
            f"Expected an RGB image of shape (height, width, 3); got {n_channels} channels (shape {shape}). "
            "Images must be channel-last."
        )
    dtype = np.dtype(image.dtype)
    if dtype != np.uint8:
        raise ValueError(
            f"The H&E image must be uint8 (0-255 RGB); got dtype {dtype}. Convert it first, "
            "e.g. `skimage.util.img_as_ubyte(image)`."
        )
    height, width = int(shape[0]), int(shape[1])
    if scale_factors == "auto":
        factors: list[int] | None = _auto_scale_factors(height, width) or None
    else:
        factors = list(scale_factors) if scale_factors else None
    if transformations is None:
        transformations = {GLOBAL_CS: Identity()}
    chunk_arg = (3, int(chunks), int(chunks)) if chunks else None
    return Image2DModel.parse(
        image.transpose(2, 0, 1),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=factors,
        transformations=dict(transformations),
        chunks=chunk_arg,
    )


def _stored_pyramid(
    levels: Sequence[Any], *, transformations: Mapping[str, Any] | None, chunks: int | None
) -> xr.DataTree:
    """A multiscale image element whose ``scale<i>`` is stored level ``i`` (see :func:`_image_model`)."""
    import dask.array as da
    import xarray as xr
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity, set_transformation
    from spatialdata.transformations._utils import compute_coordinates

    arrays = [_image_model(lv, scale_factors=None, chunks=chunks).data for lv in levels]
    while max(arrays[-1].shape[1:]) > PYRAMID_COARSEST_PX:  # a sparse pyramid: add derived coarse levels
        last = arrays[-1]
        even = last[:, : last.shape[1] // 2 * 2, : last.shape[2] // 2 * 2]
        even = even.rechunk((-1, IMAGE_CHUNK_PX, IMAGE_CHUNK_PX))  # even chunks: 2 x 2 blocks never straddle
        arrays.append(da.coarsen(np.mean, even, {1: 2, 2: 2}).round().astype(np.uint8))
    tree = xr.DataTree.from_dict(
        {
            f"scale{i}": xr.Dataset({"image": xr.DataArray(a, dims=("c", "y", "x"), coords={"c": ["r", "g", "b"]})})
            for i, a in enumerate(arrays)
        }
    )
    set_transformation(tree, dict(transformations or {GLOBAL_CS: Identity()}), set_all=True)
    tree = compute_coordinates(tree)
    Image2DModel.validate(tree)
    return tree


def _image_levels(element: Any) -> list[xr.DataArray]:
    """The resolution levels of an image element, finest (level 0) first."""
    import xarray as xr

    if isinstance(element, xr.DataArray):
        return [element]
    levels: list[tuple[int, xr.DataArray]] = []
    for node in element.children.values():
        data_vars = list(node.ds.data_vars.values())
        if not data_vars:
            continue
        levels.append((int(np.prod(data_vars[0].shape)), data_vars[0]))
    if not levels:
        raise ValueError("The multiscale image element holds no data.")
    levels.sort(key=lambda t: -t[0])
    return [arr for _, arr in levels]


def _image_hw(arr: xr.DataArray) -> tuple[int, int]:
    """(height, width) of a ``(c, y, x)`` image level."""
    return int(arr.sizes["y"]), int(arr.sizes["x"])


def _global_to_pixel(sdata: SpatialData, image_key: str) -> np.ndarray:
    """3×3 affine mapping global ``(x, y, 1)`` to pixel ``(x, y, 1)`` of level 0 of ``sdata[image_key]``.

    It is the inverse of the image's transformation to the ``"global"`` coordinate system
    (identity for a full-resolution H&E written by :mod:`spacrd_sc.io`).
    """
    from spatialdata.transformations import get_transformation

    if image_key not in sdata.images:
        raise KeyError(f"No image {image_key!r} in the SpatialData (images: {list(sdata.images) or 'none'}).")
    element = sdata.images[image_key]
    transforms = get_transformation(element, get_all=True)
    if GLOBAL_CS not in transforms:
        raise ValueError(
            f"Image {image_key!r} has no transformation to the {GLOBAL_CS!r} coordinate system "
            f"(it has {list(transforms)})."
        )
    to_global = np.asarray(
        transforms[GLOBAL_CS].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float
    )
    try:
        return np.linalg.inv(to_global)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"The transformation of image {image_key!r} to {GLOBAL_CS!r} is singular.") from err


def _apply_affine(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 3×3 affine to ``(n, 2)`` points."""
    xy = np.asarray(xy, dtype=float)
    return xy @ affine[:2, :2].T + affine[:2, 2]


def _affine_scale(affine: np.ndarray) -> float:
    """Isotropic length scale of a 3×3 affine (square root of the determinant of its linear part)."""
    return float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))


def _is_derived(level: Any, level0: Any) -> bool:
    """Whether a pyramid level is computed lazily from level 0 (more dask layers) rather than stored."""
    try:
        return len(level.data.dask.layers) > len(level0.data.dask.layers)
    except AttributeError:  # numpy-backed or a dask without high-level graphs
        return False


def _downscaled_rgb(element: Any, affine: np.ndarray, max_px: int) -> tuple[np.ndarray, float] | None:
    """A ``(h, w, 3)`` uint8 copy of an image element, longer side ≤ ``max_px``, and its global→pixel scale.

    Reads the coarsest pyramid level whose longer side is still ≥ the target and resizes it with PIL
    (antialiased). Returns ``None`` when the image cannot be expressed by one scalar scale factor
    (rotation, shear, anisotropy or a translation in its transform to global).
    """
    from PIL import Image

    lin = affine[:2, :2]
    sx, sy = float(lin[0, 0]), float(lin[1, 1])
    off_diag = max(abs(lin[0, 1]), abs(lin[1, 0]))
    if sx <= 0 or off_diag > 1e-9 * max(sx, 1.0) or abs(sx - sy) > 1e-6 * sx or np.abs(affine[:2, 2]).max() > 0.5:
        logger.warning(
            "The image's transformation to global is not a pure isotropic scale; no 'hires' image is "
            "written to uns['spatial'] (squidpy cannot express it with one scale factor)."
        )
        return None
    levels = _image_levels(element)
    h0, w0 = _image_hw(levels[0])
    f = min(1.0, max_px / max(h0, w0))
    th, tw = max(1, int(round(h0 * f))), max(1, int(round(w0 * f)))
    target_side = max(th, tw)
    chosen = levels[0]
    for lvl in levels[1:]:
        if max(_image_hw(lvl)) >= target_side:
            chosen = lvl
    if chosen is not levels[0] and _is_derived(chosen, levels[0]) and levels[0].nbytes <= _DIRECT_RESIZE_MAX_BYTES:
        # a pyramid built lazily from an in-memory level 0: resizing level 0 with PIL is several times
        # faster than computing the coarsened level through dask (stored pyramids are read as they are)
        chosen = levels[0]
    hl, wl = _image_hw(chosen)
    data = chosen.data
    rgb = np.asarray(data.compute() if hasattr(data, "compute") else data)
    rgb = np.ascontiguousarray(np.moveaxis(rgb, 0, -1)[..., :3]).astype(np.uint8, copy=False)
    if (hl, wl) != (th, tw):
        # box in the chosen level's pixels covering exactly (tw / f, th / f) level-0 pixels
        lx, ly = wl / w0, hl / h0
        # (clamped: rounding the target size can overshoot the source by a fraction of a pixel)
        box = (0.0, 0.0, min(tw / f * lx, float(wl)), min(th / f * ly, float(hl)))
        rgb = np.asarray(Image.fromarray(rgb).resize((tw, th), Image.Resampling.BILINEAR, box=box))
    return rgb, f * sx


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
