"""Package-wide settings: the local data folder, the default device, progress bars.

``spacrd_sc.settings`` is the one place these live; functions read it at call time, so a change applies
to every later call::

    import spacrd_sc as sc_crd

    sc_crd.settings.data_dir = "/data/shared"  # folder holding her2st/ (default: $SPACRD_DATA_DIR)
    sc_crd.settings.device = "cpu"  # what device="auto" resolves to
    sc_crd.settings.progress_bar = False
"""

from __future__ import annotations

import os
from pathlib import Path

from ._constants import DATA_DIR_ENV, MIN_GENES

_DEVICES = ("auto", "cpu", "cuda", "mps")


class Settings:
    """Settings read by every function at call time.

    Attributes
    ----------
    data_dir
        Folder holding local copies of example data (``her2st/``, ...). Until it is set, the environment
        variable ``$SPACRD_DATA_DIR`` (read at each call), else ``None`` (data sets are downloaded into a
        cache). Set it to ``None`` to go back to the environment variable.
    device
        What ``device="auto"`` means: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda[:N]"``
        or ``"mps"``.
    progress_bar
        Default of ``progress_bar=None`` in long-running functions.
    min_genes
        Fewest genes :func:`~spacrd_sc.tl.align`, :func:`~spacrd_sc.tl.fit_vrbca`,
        :func:`~spacrd_sc.tl.cancer_score` and :func:`~spacrd_sc.datasets.her2st_model` accept (model genes,
        or genes shared with the section), default :data:`~spacrd_sc._constants.MIN_GENES` (50). Lower it
        only for toy data and tests.
    """

    def __init__(self) -> None:
        self._data_dir: Path | None = None
        self._device = "auto"
        self._progress_bar = True
        self._min_genes = MIN_GENES

    @property
    def data_dir(self) -> Path | None:
        if self._data_dir is not None:
            return self._data_dir
        env = os.environ.get(DATA_DIR_ENV)
        return Path(env).expanduser() if env else None

    @data_dir.setter
    def data_dir(self, value: str | os.PathLike[str] | None) -> None:
        self._data_dir = None if value is None else Path(value).expanduser()

    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        if not (isinstance(value, str) and (value in _DEVICES or value.startswith("cuda:"))):
            raise ValueError(f"settings.device must be one of {_DEVICES} or 'cuda:N', got {value!r}.")
        self._device = value

    @property
    def progress_bar(self) -> bool:
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"settings.progress_bar must be a bool, got {value!r}.")
        self._progress_bar = value

    @property
    def min_genes(self) -> int:
        return self._min_genes

    @min_genes.setter
    def min_genes(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"settings.min_genes must be a positive integer, got {value!r}.")
        self._min_genes = value

    def __repr__(self) -> str:
        return f"Settings(data_dir={self.data_dir!r}, device={self.device!r}, progress_bar={self.progress_bar!r})"


settings = Settings()
