"""The documentation site in ``docs/``: what the build itself cannot see. (CI builds it
with ``sphinx-build -W --keep-going -n``, so a broken reference or a page left out of
the tree fails there; ``tests/test_readme.py`` runs and type-checks every snippet.)"""

from __future__ import annotations

import re

import anyrdzv
import anyrdzv.testing
from tests._support import README, ROOT

DOCS = ROOT / "docs"


def test_the_api_reference_documents_every_public_name() -> None:
    text = (DOCS / "reference" / "api.rst").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto\w+:: (\w+)$", text, re.MULTILINE))
    assert set(anyrdzv.__all__) - documented == set()
    assert set(anyrdzv.testing.__all__) - documented == set()


def test_every_page_is_in_the_tree() -> None:
    """Sphinx warns of a page outside every toctree; this says which, without a build."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([\w/-]+)$", index, re.MULTILINE))
    pages = {
        str(path.relative_to(DOCS).with_suffix(""))
        for path in [*DOCS.rglob("*.md"), *DOCS.rglob("*.rst")]
        if "_build" not in path.parts and path.name not in ("index.md", "README-map.md")
    }
    assert pages - listed == set()


def test_the_readme_links_only_to_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#:]+)\)", README.read_text(encoding="utf-8")):
        assert (ROOT / target).exists(), target
