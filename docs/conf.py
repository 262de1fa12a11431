"""Sphinx configuration of anyrdzv's documentation.

Build it with ``sphinx-build -W --keep-going -n docs docs/_build/html``: every warning,
a broken cross-reference included, fails the build.
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))

import anyrdzv

project = "anyrdzv"
author = "anyrdzv developers"
copyright = "anyrdzv developers"
version = release = anyrdzv.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxcontrib_trio",
    "sphinxarg.ext",
    "anyrdzv_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README-map.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"anyrdzv {release}"
html_static_path: list[str] = []
pygments_style = "friendly"
pygments_dark_style = "monokai"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}

# Every cross-reference must resolve (-n): a reference to anyrdzv that does not is an
# error. References to other projects cannot resolve here (no network for intersphinx
# inventories), so those, and only those, are let through.
nitpicky = True
_OUTSIDE = (
    "anyio",
    "trio",
    "httpx",
    "ssl",
    "socket",
    "collections",
    "typing",
    "typing_extensions",
    "types",
    "contextlib",
    "datetime",
    "logging",
    "asyncio",
    "torch",
    "random",
    "os",
    "enum",
    "ipaddress",
    "argparse",
    "weakref",
    "dataclasses",
    "functools",
    "concurrent",
    "_ssl",
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_OUTSIDE)})(\..*)?"),
    (r"py:.*", rf"({'|'.join(n for n in dir(builtins) if not n.startswith('_'))})"),
    # Type variables and ParamSpecs of signatures.
    (r"py:.*", r"_?[A-Z]|_[A-Z]\w*|_?P\.(args|kwargs)"),
    # A signature's ``tuple[str, ...]`` that autodoc splits at its comma.
    (r"py:class", r"tuple\[.*"),
]
