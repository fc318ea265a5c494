"""Sphinx configuration for spacrd_sc."""

from __future__ import annotations

from datetime import date
from importlib.metadata import version as _version

project = "spacrd_sc"
author = "spacrd_sc developers"
copyright = f"{date.today():%Y}, {author}"
release = version = _version("spacrd_sc")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
]
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "inherited-members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
typehints_defaults = "braces"
always_document_param_types = False
myst_enable_extensions = ["colon_fence", "dollarmath"]
nb_execution_mode = "off"  # tutorials are committed with their outputs; never re-executed at build time
nb_merge_streams = True
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
intersphinx_mapping = {}  # offline builds: no inventories are fetched
nitpicky = False
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

html_theme = "sphinx_book_theme"
html_title = "spacrd_sc"
html_static_path = ["_static"]
html_theme_options = {"repository_url": "https://github.com/spacrd-sc/spacrd_sc", "use_repository_button": False}
