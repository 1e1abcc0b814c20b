"""The package's layering (`.importlinter`) and what examples may import."""

import ast
import json
import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_imports_follow_the_layers():
    """`lint-imports` fails on a cycle or on an import from a higher layer."""
    executable = shutil.which("lint-imports")
    assert executable, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([executable, "--no-cache"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "0 broken" in result.stdout


def test_every_package_module_is_in_a_layer():
    """A new top-level module must be placed in the layers contract."""
    config = (REPO / ".importlinter").read_text(encoding="utf-8")
    top = config.split("[importlinter:contract:layers]")[1].split("[importlinter:")[0]
    layered = set(re.findall(r"\b([a-z_]+)\b", top.split("layers =")[1].split("containers")[0]))
    modules = {p.stem for p in (REPO / "tf_smelu").glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in (REPO / "tf_smelu").glob("*/__init__.py")}
    assert modules <= layered, modules - layered


def _imported_modules(source: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _client_sources():
    for path in [*REPO.glob("examples/*.py"), *REPO.glob("benchmarks/*.py")]:
        yield path.name, path.read_text(encoding="utf-8")
    for path in REPO.glob("notebooks/*.ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        yield path.name, "\n".join(line for line in code.splitlines()
                                   if not line.lstrip().startswith(("%", "!")))


@pytest.mark.parametrize("name, source", list(_client_sources()), ids=lambda v: str(v)[:40])
def test_examples_notebooks_and_benchmarks_use_only_the_public_api(name, source):
    """No private module or name (leading underscore), no `sys.path` edits."""
    for module, names in _imported_modules(source):
        if module.split(".")[0] != "tf_smelu":
            continue
        private = [part for part in [*module.split("."), *names] if part.startswith("_")]
        assert not private, f"{name} imports private {private} from {module}"
    assert "sys.path.insert" not in source and "sys.path.append" not in source, name
