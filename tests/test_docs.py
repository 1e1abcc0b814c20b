"""The documentation site builds strictly, offline, and names every public name.

`mkdocs build --strict` fails on a broken link, a reference mkdocstrings
cannot resolve and a docstring it cannot parse; the API pages are generated
from the docstrings, so a public name missing from them is a page missing
from `mkdocs.yml` or a package whose `__all__` grew.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _public_names(init: pathlib.Path) -> list[str]:
    """`__all__` of a package's `__init__.py`, read statically."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                getattr(target, "id", None) == "__all__" for target in node.targets):
            return [element.value for element in node.value.elts]
    return []


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return site_dir


@pytest.mark.slow
def test_the_site_builds_strictly(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "activations" / "index.html").is_file()


@pytest.mark.slow
def test_every_public_name_is_in_the_api_reference(site):
    anchors = set()
    for page in site.rglob("*.html"):
        anchors.update(re.findall(r'id="(tf_smelu[\w.]*)"', page.read_text(encoding="utf-8")))
    short_names = {anchor.rsplit(".", 1)[-1] for anchor in anchors}
    missing = []
    for init in sorted((ROOT / "tf_smelu").glob("**/__init__.py")):
        package = ".".join(init.parent.relative_to(ROOT).parts)
        for name in _public_names(init):
            # Re-exports are documented where they are defined (or under the package).
            if f"{package}.{name}" not in anchors and name not in short_names:
                missing.append(f"{package}.{name}")
    assert not missing, f"public names without an API entry: {missing}"


def test_the_docs_extra_lists_what_mkdocs_yml_uses():
    setup_text = (ROOT / "setup.py").read_text(encoding="utf-8")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "name: material" in config and "mkdocstrings" in config
    for requirement in ("mkdocs-material", "mkdocstrings[python]"):
        assert requirement in setup_text
