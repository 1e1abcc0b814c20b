"""The Python code blocks of the README and the documentation pages run as written.

Every ```python block of README.md and of docs/**/*.md runs, page by page, in
order, in one namespace per page and in a temporary directory (`/tmp/` in a
block becomes that directory), so the documentation cannot drift from the code.
The API pages hold no blocks of their own: they are generated from the
docstrings, whose examples tests/test_docstring_examples.py runs. A block that
cannot run on its own (it needs the reader's model, data or cluster) is
preceded by a visible marker `<!-- not-run: reason -->`; the fast tests check
that every marker gives a reason and stands right before a block, and compile
every block, run or not. Shell blocks are not run here: their command lines are
parsed and configured by tests/test_documented_commands.py, and the programs
they call have their own end-to-end tests (e.g. tests/test_main_job.py).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_RUN = re.compile(r"<!--\s*not-run:(?P<reason>.*?)-->")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced ```python block of a page."""

    page: str
    line: int  # of the block's first code line, 1-based
    code: str
    not_run: str | None  # the marker's reason, if the block is shown only


def documentation_pages() -> list[pathlib.Path]:
    """README.md and every Markdown page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(page: pathlib.Path) -> tuple[list[Block], list[int]]:
    """The page's python blocks and the lines of markers that precede no python block.

    Args:
        page: A Markdown file.

    Returns:
        The blocks in page order, and the 1-based lines of `not-run` markers
        whose next non-blank line is not the opening of a ```python block.
    """
    lines = page.read_text(encoding="utf-8").splitlines()
    name = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name
    blocks, orphans, marker, index = [], [], None, 0
    while index < len(lines):
        line = lines[index].strip()
        found = NOT_RUN.search(line)
        if found:
            if marker is not None:
                orphans.append(marker[0])
            marker = (index + 1, found.group("reason").strip())
        elif line.startswith("```"):
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if line == "```python":
                blocks.append(Block(name, index + 2, "\n".join(lines[index + 1:end]) + "\n",
                                    marker[1] if marker else None))
            elif marker is not None:
                orphans.append(marker[0])
            marker, index = None, end
        elif line and marker is not None:
            orphans.append(marker[0])
            marker = None
        index += 1
    if marker is not None:
        orphans.append(marker[0])
    return blocks, orphans


def _all_blocks() -> list[Block]:
    return [block for page in documentation_pages() for block in python_blocks(page)[0]]


def _pages_with_runnable_blocks() -> list[str]:
    return sorted({block.page for block in _all_blocks() if block.not_run is None})


def test_the_readme_and_the_guide_have_examples():
    pages = {block.page for block in _all_blocks()}
    assert "README.md" in pages
    assert {"docs/guide/activations.md", "docs/guide/own-training.md",
            "docs/guide/your-data-and-model.md"} <= pages


def test_every_not_run_block_says_why_and_most_blocks_run():
    blocks = _all_blocks()
    not_run = [block for block in blocks if block.not_run is not None]
    assert all(block.not_run for block in not_run), [
        f"{block.page}:{block.line}" for block in not_run if not block.not_run]
    orphans = {page.name: python_blocks(page)[1] for page in documentation_pages()}
    assert not {page: lines for page, lines in orphans.items() if lines}, (
        "a not-run marker must stand right before a ```python block")
    # Shown-only blocks are the exception: a page of them would test nothing.
    assert len(not_run) * 4 <= len(blocks), [f"{b.page}:{b.line}" for b in not_run]


@pytest.mark.parametrize("block", _all_blocks(), ids=lambda b: f"{b.page}:{b.line}")
def test_every_block_compiles(block):
    compile(block.code, f"{block.page}:{block.line}", "exec")


def test_the_extractor_sees_markers_blocks_and_orphans(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not-run: needs a cluster -->\n\n```python\nx = 1\n```\n"
        "```bash\nls\n```\n```python\ny = 2\n```\n"
        "<!-- not-run: stray -->\ntext\n<!-- not-run: -->\n```python\nz = 3\n```\n"
        "<!-- not-run: before shell -->\n```bash\nls\n```\n", encoding="utf-8")
    blocks, orphans = python_blocks(page)
    assert [(b.code, b.not_run) for b in blocks] == [
        ("x = 1\n", "needs a cluster"), ("y = 2\n", None), ("z = 3\n", "")]
    assert orphans == [12, 18]


@pytest.mark.slow  # trains the pages' small models: kept out of the fast tier
@pytest.mark.parametrize("page", _pages_with_runnable_blocks())
def test_the_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(ROOT / page)[0]
    namespace = {}
    for block in blocks:
        if block.not_run is None:
            code = block.code.replace("/tmp/", f"{tmp_path}/")
            exec(compile(code, f"{page}:{block.line}", "exec"), namespace)
    if page == "docs/guide/activations.md":
        # The values the page prints in comments.
        import numpy as np
        import tf_smelu

        np.testing.assert_allclose(
            tf_smelu.smelu(namespace["x"], beta=1.0), [0, 0.0625, 0.25, 0.5625, 2], rtol=1e-6)
        np.testing.assert_allclose(
            tf_smelu.rescu(namespace["x"], beta=1.0, order=2),
            [0, 0.0208333, 0.1666667, 0.5208333, 2], rtol=1e-5)
