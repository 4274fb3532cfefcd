"""Static checks of the experiment notebooks (nbval executes them in `make test`)."""

import ast

import nbformat
import pytest

from lab.studies.notebooks import canonical, dumps, is_checked, notebooks, repository_url

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
    assert text == dumps(canonical(nb, path.name, repository_url())), f"run `python -m lab.studies.notebooks format` on {path.name}"
    checked = [c for c in nb.cells if is_checked(c)]
    assert checked, "nbval has something to compare"
    assert all(c.outputs for c in checked), "run `python -m lab.studies.notebooks record` to store expected outputs"
    assert not any(c.outputs for c in nb.cells if c.cell_type == "code" and not is_checked(c))


# -- the guard on the quick runs' statuses (make test runs `check-runs` after nbval) --------------

def _record(reports_dir, name, status, *, best=None, threshold=0.16, trained=(0.1, 0.12), reason=None,
            version=None, **metrics):
    """Writes a run record as the runner does (of ``version``: the current one by default), with the
    chance figures and a training history."""
    import math

    import pandas as pd

    from lab.runs.records import RECORD_VERSION, RunWriter

    writer = RunWriter({"name": name, "tags": ["test"], "background_flag_ratio": 0.1,
                        "record_version": version or RECORD_VERSION}, name=name, reports_dir=str(reports_dir))
    pd.DataFrame({"epoch": range(len(trained)), "accuracy": trained}).to_csv(writer.path / "history.csv", index=False)
    if best is not None:
        metrics["chance"] = {"accuracy": 0.1, "threshold": threshold, "baseline_loss": math.log(10),
                             "best_val_accuracy": best}
    writer.publish({"name": name, "status": status, "divergence_reason": reason, **metrics})


def test_check_runs_names_every_status_a_float_difference_could_flip(tmp_path):
    from lab.studies.notebooks import check_runs, main

    _record(tmp_path, "learns-clearly", "completed", best=0.5)
    _record(tmp_path, "nan-loss", "diverged", reason="training loss became nan at batch 3")
    _record(tmp_path, "learned-nothing", "stalled", best=0.14, reason="never learned: ...")
    _record(tmp_path, "far-below", "stalled", best=0.05, trained=(0.3, 0.6), reason="never learned: ...")
    _record(tmp_path, "segmentation-flag", "completed", all_background=True, foreground_fraction_true=0.2,
            foreground_fraction_predicted=0.0)
    assert check_runs(tmp_path) == []
    assert main(["check-runs", str(tmp_path)]) == 0

    _record(tmp_path, "at-the-edge", "completed", best=0.17)
    _record(tmp_path, "was-learning", "stalled", best=0.14, trained=(0.2, 0.5), reason="never learned: ...")
    _record(tmp_path, "flag-at-the-edge", "completed", all_background=False, foreground_fraction_true=0.2,
            foreground_fraction_predicted=0.03)
    _record(tmp_path, "broke", "failed", error="ValueError: no")
    problems = check_runs(tmp_path)
    assert [p.split(" ")[0] for p in problems] == ["at-the-edge", "was-learning", "flag-at-the-edge", "broke"]
    assert "+0.010 above its chance threshold 0.160" in problems[0]
    assert main(["check-runs", str(tmp_path)]) == 1


def test_check_runs_fails_where_the_notebooks_wrote_nothing(tmp_path):
    from lab.studies.notebooks import main

    assert main(["check-runs", str(tmp_path)]) == 1


def test_prepare_injects_another_seed(tmp_path):
    from lab.studies.notebooks import main

    assert main(["prepare", str(tmp_path), "--seed", "7"]) == 0
    nb = nbformat.read(tmp_path / NOTEBOOKS[0].name, as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "quick = True" in injected.source and "seed = 7" in injected.source


def test_check_runs_judges_an_old_never_learned_run_as_stalled_and_a_tiny_split_as_clear(tmp_path):
    from lab.studies.notebooks import check_runs

    # Before record version 4 a run that never learned was recorded "diverged": it is judged as the
    # stalled run it is (this one was learning: its status could flip).
    _record(tmp_path, "old-was-learning", "diverged", best=0.14, trained=(0.2, 0.5), reason="never learned: ...",
            version=3)
    # A loss that grew tenfold is as clear as a NaN; a split too small to judge (threshold above 1)
    # cannot flip a completed run to stalled, however low its accuracy.
    _record(tmp_path, "loss-grew", "diverged", best=0.1, reason="training loss grew to 40 in epoch 2, ...")
    _record(tmp_path, "two-images", "completed", best=0.5, threshold=1.56, status_note="the validation split ...")
    problems = check_runs(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("old-was-learning")
    assert "stalled (never learned: ...) only 0.020 below its chance threshold 0.160" in problems[0]
