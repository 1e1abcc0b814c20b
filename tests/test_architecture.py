"""The package's layering (`.importlinter`) and what examples may import."""

import ast
import configparser
import json
import os
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


def _contract(name: str) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / ".importlinter", encoding="utf-8")
    return dict(parser[f"importlinter:contract:{name}"])


def test_no_package_may_hold_an_import_cycle():
    """The acyclic contract covers the root package, hence every subpackage below it."""
    contract = _contract("acyclic")
    assert contract["type"] == "acyclic_siblings"
    assert contract["ancestors"].split() == ["tf_smelu"]
    nesting = max(len(p.relative_to(REPO).parts) - 1 for p in (REPO / "tf_smelu").rglob("*.py"))
    assert int(contract.get("depth", 10)) >= nesting  # import-linter's default depth is 10


def test_the_acyclic_contract_catches_a_cycle_inside_a_subpackage(tmp_path):
    """Run on a package holding the cycle that `data/` once had (synthetic <-> click_model,
    one side behind `TYPE_CHECKING`), the contract fails and names the subpackage."""
    executable = shutil.which("lint-imports")
    assert executable, "import-linter is a test dependency: pip install -e '.[test]'"
    package = tmp_path / "tf_smelu" / "data"
    package.mkdir(parents=True)
    (tmp_path / "tf_smelu" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "synthetic.py").write_text("from tf_smelu.data.click_model import World\n")
    (package / "click_model.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from tf_smelu.data.synthetic import Config\nclass World: ...\n")
    config = (REPO / ".importlinter").read_text(encoding="utf-8")
    (tmp_path / ".importlinter").write_text(config, encoding="utf-8")
    result = subprocess.run([executable, "--no-cache", "--contract", "acyclic"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tf_smelu.data" in result.stdout and "BROKEN" in result.stdout


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
