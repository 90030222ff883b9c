"""Sphinx configuration of the Vaurien documentation.

Build it with ``sphinx-build -W -b html docs docs/_build/html``. The reference pages are
generated from the code by ``docs/_ext/vaurien_docs.py``; the checkout itself is imported, so
the build needs no install of Vaurien.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

from vaurien import __version__  # noqa: E402

project = "Vaurien"
author = "the Vaurien contributors"
copyright = "the Vaurien contributors"
version = release = __version__

extensions = ["sphinx.ext.autodoc", "vaurien_docs"]
exclude_patterns = ["_build", "examples"]
root_doc = "index"
highlight_language = "none"
autodoc_member_order = "bysource"
autodoc_typehints = "none"
html_theme = "alabaster"
html_theme_options = {"description": "a chaos TCP proxy", "fixed_sidebar": True}
html_show_sourcelink = False
