"""
Sphinx's configuration of rpisensor's documentation: Markdown pages (MyST),
the options reference generated from the code (C{_ext/rpisensor_options.py}).
Build: C{.venv/bin/sphinx-build -W -n docs docs/_build/html}.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]  # the extension, and rpisensor from this checkout

from rpisensor import __version__  # noqa: E402

project = "rpisensor"
author = "the rpisensor authors"
copyright = "the rpisensor authors, MIT licence"
release = version = __version__

extensions = ["myst_parser", "rpisensor_options", "outside_links"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Anchors for headings down to ###, as GitHub makes them, so that links such as
# [Limits](../reference/limits.md#limits) work both on GitHub and here.
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"rpisensor {release}"
pygments_style = "sphinx"

# Files outside docs/ that pages link to as they are (../README.md, so that the links work on
# GitHub), and the page here that includes each: such a link goes there.
rpisensor_included_files = {
    "README.md": "index",
    "bench/README.md": "performance/method",
    "tests/uml/README.md": "development/uml",
}
smartquotes = False  # option names (--listen) and quotes stay as typed
