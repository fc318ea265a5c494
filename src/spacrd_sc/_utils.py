"""Small helpers shared by the public modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._constants import TABLE_KEY

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _get_table(data: AnnData | SpatialData, table_key: str = TABLE_KEY) -> AnnData:
    """Return the :class:`~anndata.AnnData` behind ``data``.

    ``data`` is either an AnnData (returned as it is) or a SpatialData whose ``tables[table_key]`` is returned.
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data
    tables = getattr(data, "tables", None)
    if tables is None:
        raise TypeError(f"Expected an AnnData or a SpatialData, got {type(data).__name__}.")
    if table_key not in tables:
        have = list(tables.keys())
        raise KeyError(
            f"The SpatialData has no table {table_key!r} (tables: {have or 'none'}). "
            "Pass `table_key=` naming the table that holds the spots."
        )
    return tables[table_key]


def _resolve_device(device: str | None = "auto") -> str:
    """``'auto'`` → ``'cuda'`` when a GPU is available, else ``'cpu'``; other values are checked and returned."""
    import torch

    from ._settings import settings

    if device is None or device == "auto":
        device = settings.device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = str(device)
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={dev!r} was requested but CUDA is not available here; use device='cpu'.")
    if not (dev == "cpu" or dev.startswith("cuda") or dev == "mps"):
        raise ValueError(f"Unknown device {dev!r}; use 'auto', 'cpu' or 'cuda[:N]'.")
    return dev


def _progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar: the notebook widget where ipywidgets is installed, the text bar otherwise.

    ``tqdm.auto`` in a notebook without ipywidgets warns "IProgress not found" on every bar; the text bar
    renders fine there, so it is used instead.
    """
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, **kwargs)
