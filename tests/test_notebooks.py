"""Static checks of the experiment notebooks (nbval executes them in `make test`)."""

import ast

import nbformat
import pytest

from lab.notebooks import canonical, dumps, is_checked, notebooks

NOTEBOOKS = notebooks()


def test_the_experiments_have_notebooks():
    names = [p.name for p in NOTEBOOKS]
    for prefix in ("01-", "02-", "03-", "04-", "05-", "06-", "07-", "08-", "09-", "10-", "11-", "12-", "13-"):
        assert any(n.startswith(prefix) for n in names), prefix


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_flat_parameters_with_a_quick_switch(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    names = []
    for statement in ast.parse(first.source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1, ast.unparse(statement)
        ast.literal_eval(statement.value)  # flat values only: literals, lists and dicts of literals
        names.append(statement.targets[0].id)
    assert "quick" in names and "seed" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_canonical_and_carry_only_checked_outputs(path):
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    assert text == dumps(canonical(nb)), f"run `python -m lab.notebooks format` on {path.name}"
    checked = [c for c in nb.cells if is_checked(c)]
    assert checked, "nbval has something to compare"
    assert all(c.outputs for c in checked), "run `python -m lab.notebooks record` to store expected outputs"
    assert not any(c.outputs for c in nb.cells if c.cell_type == "code" and not is_checked(c))
