"""The research notebooks are committed clean and switchable: no outputs, one ``PAPER_SCALE`` switch at the top.

Executing them is the job of ``pytest --nbmake notebooks/``; these checks are static and take milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ["01_future_token_probes.ipynb", "02_interventions.ipynb", "03_precaching_vs_breadcrumbs.ipynb",
             "04_gradient_split.ipynb"]


def _read(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(notebook)
    return notebook


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_every_notebook_is_listed():
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_committed_outputs(name):
    for index, cell in enumerate(_code_cells(_read(name))):
        assert cell.outputs == [], f"{name}: code cell {index} has outputs; clear them before committing"
        assert cell.execution_count is None, f"{name}: code cell {index} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_paper_scale_switch_is_the_first_code_cell_and_off(name):
    first = ast.parse(_code_cells(_read(name))[0].source)
    assignments = [node for node in first.body if isinstance(node, ast.Assign)]
    assert len(first.body) == 1 and len(assignments) == 1, f"{name}: the first code cell must only set PAPER_SCALE"
    target, value = assignments[0].targets[0], assignments[0].value
    assert isinstance(target, ast.Name) and target.id == "PAPER_SCALE"
    assert isinstance(value, ast.Constant) and value.value is False, f"{name}: commit with PAPER_SCALE = False"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_code_parses_including_the_paper_scale_branch(name):
    """CI executes only the small setting; at least the whole source (both branches) must be valid Python."""
    for index, cell in enumerate(_code_cells(_read(name))):
        ast.parse(cell.source, filename=f"{name}[{index}]")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_paper_scale_is_read(name):
    sources = [cell.source for cell in _code_cells(_read(name))[1:]]
    assert any("PAPER_SCALE" in source for source in sources), f"{name}: PAPER_SCALE is set but never used"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_device_is_one_variable_at_the_top(name):
    """Every model and probe runs on ``DEVICE``, set once in the second code cell from ``FORETHOUGHT_DEVICE`` (which
    the test suite sets to its own device), so the notebook runs wherever the suite does."""
    cells = _code_cells(_read(name))
    setters = [index for index, cell in enumerate(cells)
               for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Assign)
               and any(isinstance(target, ast.Name) and target.id == "DEVICE" for target in node.targets)]
    assert setters == [1], f"{name}: DEVICE is set in code cells {setters}; set it once, in the second"
    assert 'os.environ.get("FORETHOUGHT_DEVICE")' in cells[1].source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_temporary_folders_are_removed(name):
    """A notebook that makes a temporary folder removes it before it ends."""
    source = "\n".join(cell.source for cell in _code_cells(_read(name)))
    assert source.count("mkdtemp(") == source.count("shutil.rmtree("), f"{name}: a temporary folder is left behind"
