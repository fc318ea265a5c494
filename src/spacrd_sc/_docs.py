"""Shared parameter descriptions, substituted into docstrings with :func:`inject_docs`.

One description per shared parameter, so ``table_key`` (and the others) read the same everywhere::

    @inject_docs
    def f(data, *, table_key="table"):
        '''...

        Parameters
        ----------
        {data}
        {table_key}
        '''
"""

from __future__ import annotations

from collections.abc import Callable
from textwrap import dedent, indent
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_PARAMS: dict[str, str] = {
    "data": """\
data
    A section as :class:`~anndata.AnnData`, or a :class:`~spatialdata.SpatialData` whose table
    ``table_key`` holds the spots.""",
    "table_key": """\
table_key
    Name of the table in ``data.tables`` when ``data`` is a SpatialData (ignored for an AnnData).""",
    "image_key": """\
image_key
    Image element to read. Default: the one the reader recorded in
    ``uns['spatial'][library_id]['metadata']['image_key']``, else the only image.""",
    "device": """\
device
    ``"auto"`` (``spacrd_sc.settings.device``: CUDA when present, else CPU), ``"cpu"`` or ``"cuda[:N]"``.""",
    "seed": """\
seed
    Random seed: the same seed on the same device gives the same result.""",
    "progress_bar": """\
progress_bar
    Show a progress bar; ``None``: ``spacrd_sc.settings.progress_bar``.""",
    "copy": """\
copy
    Work on a copy of the table and return it instead of writing into ``data``.""",
    "library_key": """\
library_key
    ``obs`` column naming each spot's section (several concatenated sections); ``None`` for one section.""",
    "ax_show_save": """\
ax
    Axes to draw into; a new figure when ``None``.
show
    Show the figure; default: show unless ``save`` is given. With ``show=False`` the axes are returned.
save
    Path to write the figure to.""",
    "neighbors_key": """\
neighbors_key
    Prefix of the squidpy spatial graph ``obsp[f"{neighbors_key}_connectivities"]``.""",
}


def doc_param(name: str, level: int = 1) -> str:
    """The shared description of ``name``, indented for a numpy docstring at nesting ``level``."""
    return indent(_PARAMS[name], "    " * level).lstrip()


def inject_docs(func: F) -> F:
    """Replace ``{name}`` placeholders in ``func.__doc__`` with the shared descriptions (indented to fit)."""
    if func.__doc__:
        doc = func.__doc__
        for name, text in _PARAMS.items():
            token = "{" + name + "}"
            while token in doc:
                line_start = doc.rfind("\n", 0, doc.index(token)) + 1
                pad = doc[line_start : doc.index(token)]
                doc = doc.replace(token, indent(dedent(text), pad).lstrip(), 1)
        func.__doc__ = doc
    return func
