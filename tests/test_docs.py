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


# ---- The README is a front page whose links resolve (on GitHub and in a checkout) ----

README_MAX_LINES = 250
LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and the site, see mkdocs.yml's slugify) gives a heading.

    Args:
        heading: The heading's Markdown text, without the leading `#`s.

    Returns:
        Lower case, link targets and punctuation other than `-` and `_`
        dropped, spaces as `-`.
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def heading_anchors(page: pathlib.Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeats get `-1`, `-2`, ... as on GitHub)."""
    anchors: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            anchor = github_anchor(line.lstrip("#"))
            repeat, candidate = 0, anchor
            while candidate in anchors:
                repeat += 1
                candidate = f"{anchor}-{repeat}"
            anchors.add(candidate)
    return anchors


def broken_links(page: pathlib.Path) -> list[str]:
    """The page's relative links whose file, or heading anchor in a Markdown file, is missing.

    Args:
        page: A Markdown file; links are resolved from its directory.

    Returns:
        One `target: why` line per broken link; links with a scheme (https:,
        mailto:) are not checked.
    """
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    return broken


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    # The two commands, verbatim: .ci/run runs the second.
    text = "\n".join(lines)
    assert "python -m pip install -e . && python examples/recsys_reproducibility.py" in text
    ci_command = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci_command in text
    assert 'python -m pip install -e ".[docs]" && mkdocs serve' in text


def test_every_relative_link_in_the_readme_resolves():
    readme = ROOT / "README.md"
    assert len(LINK.findall(readme.read_text(encoding="utf-8"))) >= 10
    assert not broken_links(readme)


def test_the_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "guide.md").write_text("# Guide\n\n## Which one? (`--max_auc_loss`)\n\n"
                                       "```\n# not a heading\n```\n## Guide\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](guide.md) [ok](guide.md#which-one---max_auc_loss) [ok](guide.md#guide-1)\n"
        "![ok](guide.md) [ok](https://example.org/x.md#y) [ok](#front)\n# Front\n"
        "[no file](missing.md) [no anchor](guide.md#not-a-heading) [no anchor](#back)\n",
        encoding="utf-8")
    assert broken_links(page) == [
        "missing.md: no such file",
        "guide.md#not-a-heading: no heading with that anchor in guide.md",
        "#back: no heading with that anchor in README.md",
    ]


def test_every_finding_states_its_date_setting_and_raw_results():
    findings = sorted(path for path in (ROOT / "docs" / "findings").glob("*.md")
                      if path.name != "index.md")
    index = (ROOT / "docs" / "findings" / "index.md").read_text(encoding="utf-8")
    assert len(findings) >= 8
    problems = []
    for page in findings:
        text = page.read_text(encoding="utf-8")
        head = "\n".join(text.splitlines()[:20])
        if not re.search(r"\b20\d\d-\d\d-\d\d\b", head):
            problems.append(f"{page.name}: no date near the top")
        if "R = " not in text or "learning rate" not in text.lower():
            problems.append(f"{page.name}: no operating point (learning rate, R)")
        if not re.search(r"\]\(\.\./[\w.-]+\.json\)", text) and "no raw results file" not in head:
            problems.append(f"{page.name}: links no raw results (or says none was kept)")
        if "learning rate 1e-3, " in head and '!!! warning "Superseded' not in head:
            problems.append(f"{page.name}: measured at the former default 1e-3, not marked superseded")
        if f"]({page.name})" not in index:
            problems.append(f"{page.name}: missing from findings/index.md")
    assert not problems, problems
