"""Every notebook runs top to bottom in small mode and is stored without outputs.

Notebooks are found by glob, so a new `notebooks/NN_*.ipynb` is tested without
editing this file. Conventions checked for each one: no stored outputs, a
first markdown cell that says so, and sizes read from the
`TF_SMELU_NOTEBOOK_SMALL` environment variable in the first code cell (CI sets
it to "1" so that each notebook runs in well under a minute).
"""

import pathlib

import nbformat
import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SMALL_MODE_VARIABLE = "TF_SMELU_NOTEBOOK_SMALL"
KERNEL_NAME = "python3"
CELL_TIMEOUT = 300  # seconds; small mode needs a small fraction of this per cell


def _read(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    return notebook


def _ensure_kernel_spec():
    """Registers the `python3` kernel for this interpreter if Jupyter lacks it."""
    from jupyter_client.kernelspec import find_kernel_specs

    if KERNEL_NAME not in find_kernel_specs():
        from ipykernel.kernelspec import install

        install(user=True)


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_stored_without_outputs(path):
    notebook = _read(path)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: cell {index} has stored outputs; clear them before committing "
                f"(jupyter nbconvert --clear-output --inplace {path.name})"
            )
    assert notebook.cells[0].cell_type == "markdown"
    assert "without outputs" in notebook.cells[0].source, (
        f"{path.name}: the first markdown cell should say the notebook is stored without outputs"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_sizes_follow_small_mode_variable(path):
    code_cells = [cell for cell in _read(path).cells if cell.cell_type == "code"]
    assert code_cells and SMALL_MODE_VARIABLE in code_cells[0].source, (
        f"{path.name}: read the sizes from {SMALL_MODE_VARIABLE} in the first code cell"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_runs_top_to_bottom(path, monkeypatch):
    from nbclient import NotebookClient

    _ensure_kernel_spec()
    # The kernel inherits this process's environment.
    monkeypatch.setenv(SMALL_MODE_VARIABLE, "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = _read(path)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL_NAME,
        allow_errors=False,  # any error raises CellExecutionError naming the cell
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # run from notebooks/
    )
    client.execute()
