"""The papermill batch runner: specs, failures that do not stop a batch, and kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lab.batch import load_spec, read_records, run_batch, spec_from_dict
from lab.records import read_index

PARAMETERS = '''
learning_rate = 1e-3
epochs = 1
hidden_units = [8]
extra = {"note": "none"}
fail = False
sleep = 0.0
tags = []
'''

BODY = '''
import json, time
from lab.training import train
assert isinstance(hidden_units, list) and isinstance(extra, dict), (type(hidden_units), type(extra))
time.sleep(sleep)
if fail:
    raise RuntimeError("this parameter set fails on purpose")
result = train(dataset="digits", limit=120, model="mlp", hidden_units=hidden_units, epochs=epochs,
               learning_rate=learning_rate, divergence_patience=2, verbose=0, save_model=False,
               name="tiny", tags=tags)
print(result.status, json.dumps(extra))
'''


@pytest.fixture
def tiny_notebook(tmp_path):
    nb = new_notebook()
    parameters = new_code_cell(PARAMETERS.strip())
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, new_code_cell(BODY.strip())]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def test_spec_grid_and_runs(tiny_notebook, tmp_path):
    spec = spec_from_dict({"notebook": str(tiny_notebook), "parameters": {"epochs": 2},
                           "grid": {"learning_rate": [1e-2, 1e-3], "hidden_units": [[8], [16, 8]]}})
    assert len(spec.jobs) == 4 and spec.varied == ["hidden_units", "learning_rate"]
    assert spec.jobs[3].parameters == {"epochs": 2, "learning_rate": 1e-3, "hidden_units": [16, 8]}
    assert len({j.key for j in spec.jobs}) == 4
    path = tmp_path / "spec.yaml"
    path.write_text(f"notebook: {tiny_notebook.name}\nruns:\n  - {{name: a, epochs: 1}}\n  - {{name: b, epochs: 2}}\n")
    spec = load_spec(path)
    assert [j.label for j in spec.jobs] == ["a", "b"] and spec.name == "spec"


@pytest.mark.parametrize("raw,message", [
    ({"grid": {"a": [1]}, "runs": [{}]}, "exactly one of 'grid'"),
    ({"runs": [{"name": "x"}, {"name": "x"}]}, "named 'x'"),
    ({"grid": {"a": []}}, "non-empty list"),
    ({"runs": [{}], "workrs": 2}, "Unknown batch spec key"),
    ({"runs": [{}], "workers": 0}, "workers must be at least 1"),
])
def test_bad_specs_are_refused(tiny_notebook, raw, message):
    with pytest.raises(ValueError, match=message):
        spec_from_dict({"notebook": str(tiny_notebook), **raw})
    with pytest.raises(FileNotFoundError):
        spec_from_dict({"notebook": "missing.ipynb", "runs": [{}]})


@pytest.mark.slow
def test_failed_and_diverged_runs_are_recorded_and_the_batch_goes_on(tiny_notebook, isolated_dirs):
    spec = spec_from_dict({"notebook": str(tiny_notebook), "name": "mixed", "runs": [
        {"name": "fails", "fail": True},
        {"name": "diverges", "learning_rate": 100.0, "epochs": 3},
        {"name": "learns", "hidden_units": [16, 8], "extra": {"note": "dict passed"}},
    ]})
    result = run_batch(spec, workers=2)
    statuses = {r["name"]: r["status"] for r in result.records}
    assert statuses == {"fails": "failed", "diverges": "diverged", "learns": "completed"}
    failed = next(r for r in result.records if r["name"] == "fails")
    assert "fails on purpose" in failed["error"]
    for name in ("fails", "diverges", "learns"):
        assert (result.folder / "notebooks" / f"{name}.ipynb").exists(), "every executed notebook is kept"
    executed = nbformat.read(result.folder / "notebooks" / "learns.ipynb", as_version=4)
    assert "dict passed" in json.dumps(executed.cells[-1].outputs)
    table = result.table.set_index("name")
    assert table.loc["diverges", "status"] == "diverged" and table.loc["fails", "status"] == "failed"
    assert (result.folder / "summary.md").exists() and (result.folder / "curves.png").exists()
    assert len(read_index()) == 2, "the failed notebook trained nothing"
    assert not any((result.folder / ".attempts").iterdir()), "committed attempts were applied and removed"
    # started again: nothing is rerun; with retry_failed only the failed one is
    again = run_batch(spec)
    assert len(read_records(again.folder)) == 3
    run_batch(spec, retry_failed=True)
    assert sorted(r["name"] for r in read_records(again.folder)) == ["diverges", "fails", "fails", "learns"]


@pytest.mark.slow
def test_a_killed_batch_resumes_without_losing_or_duplicating(tiny_notebook, isolated_dirs, tmp_path):
    spec_path = tmp_path / "kill.json"
    spec_path.write_text(json.dumps({"notebook": str(tiny_notebook), "name": "kill", "workers": 1,
                                     "parameters": {"sleep": 2.0},
                                     "grid": {"hidden_units": [[4], [6], [8], [10]]}}))
    folder = isolated_dirs / "reports" / "batches" / "kill"
    command = [sys.executable, "-m", "lab.batch", str(spec_path)]
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 180
    # Kill it while the second notebook is running: one record committed, one attempt in flight.
    while time.time() < deadline:
        if len(read_records(folder)) >= 1 and (folder / ".attempts").exists() and any((folder / ".attempts").iterdir()):
            break
        time.sleep(0.2)
    else:
        batch.kill()
        pytest.fail("the batch did not get going")
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    committed_before = len(read_records(folder))
    assert 1 <= committed_before < 4
    time.sleep(1.0)  # the orphaned papermill child is told to stop when its parent dies

    finished = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "already finished" in finished.stdout
    records = read_records(folder)
    assert sorted(r["name"] for r in records) == sorted(j.label for j in load_spec(spec_path).jobs)
    assert len(records) == 4, "no parameter set recorded twice"
    runs = [e for e in read_index() if "tiny" in e["name"]]
    assert len(runs) == 4 and len({e["run_id"] for e in runs}) == 4, "one run record per parameter set"
    assert all(r["status"] == "completed" for r in records)
    assert not list((folder / ".attempts").iterdir()), "the killed attempt's files were removed"
    assert len(list((folder / "notebooks").glob("*.ipynb"))) == 4


def test_unreadable_spec_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_spec(bad)
    result = subprocess.run([sys.executable, "-m", "lab.batch", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2 and "is not valid JSON" in result.stderr and "Traceback" not in result.stderr
