"""The papermill batch runner: specs, failures that do not stop a batch, and kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lab.studies.batch import committed_jobs, load_spec, main, run_batch, spec_from_dict
from lab.runs.records import read_index

PARAMETERS = '''
learning_rate = 1e-2
epochs = 2
hidden_units = [8]
extra = {"note": "none"}
fail = False
sleep = 0.0
tags = []
break_fit = False
fail_after = False
'''

BODY = '''
import json, time
import keras
from lab.runs.training import train
assert isinstance(hidden_units, list) and isinstance(extra, dict), (type(hidden_units), type(extra))
time.sleep(sleep)
if fail:
    raise RuntimeError("this parameter set fails on purpose")
if break_fit:
    # A training run that fails inside a notebook that goes on: keras' own fit raises mid-run.
    def broken_fit(*args, **kwargs):
        raise RuntimeError("training breaks on purpose")
    keras.Model.fit = broken_fit
result = train(dataset="digits", model="mlp", hidden_units=hidden_units, epochs=epochs,
               learning_rate=learning_rate, divergence_patience=2, verbose=0, save_model=False,
               name="tiny", tags=tags, raise_on_error=not break_fit)
print(result.status, json.dumps(extra))
if fail_after:
    raise RuntimeError("the notebook fails after training on purpose")
'''


def _write_notebook(path, parameters, body):
    nb = new_notebook()
    cells = [new_code_cell(body.strip())]
    if parameters is not None:
        cells.insert(0, new_code_cell(parameters.strip()))
        cells[0].metadata["tags"] = ["parameters"]
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def tiny_notebook(tmp_path):
    # All of digits, two epochs at 1e-2: clearly above chance, so "learns" is not read as
    # "never learned" (lab.runs.callbacks.DivergenceMonitor), and still a few seconds a notebook.
    return _write_notebook(tmp_path / "tiny.ipynb", PARAMETERS, BODY)


@pytest.fixture
def untrained_notebook(tmp_path):
    """No TensorFlow, no run records: a kernel that starts, maybe raises, and ends (a few seconds)."""
    return _write_notebook(tmp_path / "untrained.ipynb", "fail = False\nnote = ''",
                           'if fail:\n    raise RuntimeError("this notebook stops on purpose")\nprint(note)')


def _spec_file(path, notebook, runs, name):
    path.write_text(json.dumps({"notebook": str(notebook), "name": name, "workers": 2, "runs": runs}))
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


@pytest.mark.parametrize("raw,where", [
    ({"parameters": {"lerning_rate": 0.1}, "runs": [{}]}, "'lerning_rate' (in 'parameters')"),
    ({"grid": {"epochs": [1, 2], "lerning_rate": [0.1, 0.01]}}, "'lerning_rate' (in 'grid')"),
    ({"runs": [{"name": "a", "epochs": 2}, {"name": "b", "lerning_rate": 0.1}]}, "'lerning_rate' (in 'runs' 'b')"),
])
def test_a_parameter_the_notebook_does_not_define_is_refused_before_anything_runs(
        tiny_notebook, isolated_dirs, tmp_path, capsys, raw, where):
    with pytest.raises(ValueError) as refused:
        spec_from_dict({"notebook": str(tiny_notebook), **raw})
    message = str(refused.value)
    assert where in message and str(tiny_notebook) in message
    assert "Valid names (its 'parameters' cells): learning_rate, epochs, hidden_units, extra, fail" in message
    assert "Did you mean 'learning_rate' for 'lerning_rate'?" in message
    # Through the command: a usage error, and no batch folder (nor reports folder) is made.
    spec = tmp_path / "typo.json"
    spec.write_text(json.dumps({"notebook": str(tiny_notebook), "name": "typo", **raw}))
    with pytest.raises(SystemExit) as exited:
        main([str(spec)])
    assert exited.value.code == 2 and "Did you mean 'learning_rate'" in capsys.readouterr().err
    assert not (isolated_dirs / "reports").exists(), "a refused spec writes nothing"


def test_unknown_parameters_are_all_named_and_a_run_name_is_not_a_parameter(tiny_notebook):
    with pytest.raises(ValueError) as refused:
        spec_from_dict({"notebook": str(tiny_notebook), "parameters": {"zzz": 1},
                        "runs": [{"name": "a", "hiden_units": [4]}, {"hiden_units": [8]}]})
    message = str(refused.value)
    assert "'zzz' (in 'parameters'), 'hiden_units' (in 'runs' 'a', 'run2')" in message
    assert "Did you mean 'hidden_units' for 'hiden_units'?" in message and "for 'zzz'" not in message
    # The tiny notebook defines no ``name``: a run's name labels the job and is not passed on.
    spec = spec_from_dict({"notebook": str(tiny_notebook), "runs": [{"name": "a", "epochs": 2}]})
    assert spec.jobs[0].label == "a" and spec.jobs[0].parameters == {"epochs": 2}


def test_a_notebook_without_a_parameters_cell_takes_no_parameters(tmp_path):
    untagged = _write_notebook(tmp_path / "untagged.ipynb", None, "epochs = 1\nprint(epochs)")
    with pytest.raises(ValueError, match="has no cell tagged 'parameters'") as refused:
        spec_from_dict({"notebook": str(untagged), "runs": [{"name": "a", "epochs": 2}]})
    assert "'epochs' (in 'runs' 'a')" in str(refused.value) and str(untagged) in str(refused.value)
    spec = spec_from_dict({"notebook": str(untagged), "runs": [{"name": "a"}, {"name": "b"}]})
    assert [job.parameters for job in spec.jobs] == [{}, {}], "named runs without parameters are fine"


def test_the_command_exits_1_when_a_job_failed_and_0_when_none_did(untrained_notebook, isolated_dirs, tmp_path,
                                                                    capsys):
    spec = _spec_file(tmp_path / "exit.json", untrained_notebook,
                      [{"name": "stops", "fail": True}, {"name": "passes", "note": "fine"}], name="exit")
    assert main([str(spec)]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 jobs failed (stops)" in out and f"python -m lab.studies.batch {spec} --retry-failed" in out
    folder = isolated_dirs / "reports" / "batches" / "exit"
    # No job trained anything, so there are no metrics: the status column must still be there.
    table = pd.read_csv(folder / "summary.csv").set_index("name")
    assert table.loc["stops", "status"] == "failed" and table.loc["passes", "status"] == "completed"
    assert table.loc["stops", "error"] == "RuntimeError: this notebook stops on purpose"
    markdown = (folder / "summary.md").read_text()
    assert "failed" in next(line for line in markdown.splitlines() if "stops" in line)

    # A spec of the job that passed: it is not run again, nothing failed, exit 0.
    passing = _spec_file(tmp_path / "passing.json", untrained_notebook, [{"name": "passes", "note": "fine"}],
                         name="exit")
    assert main([str(passing)]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "failed" not in out
    assert len(_jobs(folder)) == 2


@pytest.mark.parametrize("statuses,code", [(["failed", "completed"], 1), (["diverged", "completed"], 0)])
def test_the_ablation_command_exits_1_when_a_configuration_failed(monkeypatch, tmp_path, capsys, statuses, code):
    from lab.studies import ablation, batch

    # The E1 notebook takes minutes a configuration, so the batch itself is replaced; the spec is
    # still built, and its parameters checked, against the real notebook.
    jobs = []

    def finished_batch(spec, **options):
        jobs.extend(job.label for job in spec.jobs)
        (tmp_path / "summary.md").write_text("| name | status |\n")
        records = [{"name": job.label, "status": status} for job, status in zip(spec.jobs, statuses)]
        return batch.BatchResult(spec.name, tmp_path, records, pd.DataFrame(records))

    monkeypatch.setattr(batch, "run_batch", finished_batch)
    assert ablation.main(["--only", "1-plain", "2-batchnorm"]) == code
    assert jobs == ["1-plain", "2-batchnorm"]
    assert ("1 configuration(s) failed: 1-plain" in capsys.readouterr().out) == (code == 1)


@pytest.mark.slow
def test_a_failed_job_reads_failed_in_the_summary_even_when_its_runs_completed(tiny_notebook, isolated_dirs,
                                                                              tmp_path, capsys):
    spec = _spec_file(tmp_path / "honest.json", tiny_notebook, [
        {"name": "fails-after-training", "fail_after": True},
        {"name": "training-breaks", "break_fit": True},
        {"name": "diverges", "learning_rate": 100.0, "epochs": 3},
        {"name": "learns"},
    ], name="honest")
    assert main([str(spec)]) == 1
    out = capsys.readouterr().out
    assert "2 of 4 jobs failed (fails-after-training, training-breaks)" in out and "--retry-failed" in out
    folder = isolated_dirs / "reports" / "batches" / "honest"
    records = {r["name"]: r for r in _jobs(folder)}
    trained = read_index()
    completed = {e["run_id"] for e in trained if e["status"] == "completed"}
    assert set(records["fails-after-training"]["run_ids"]) <= completed, "its run completed before it raised"
    assert "'tiny' (RuntimeError: training breaks on purpose)" in records["training-breaks"]["error"]

    table = pd.read_csv(folder / "summary.csv").set_index("name")
    assert table.loc["fails-after-training", "status"] == "failed"
    assert "fails after training on purpose" in table.loc["fails-after-training", "error"]
    assert pd.notna(table.loc["fails-after-training", "val_accuracy"]), "its metrics are still shown"
    assert table.loc["training-breaks", "status"] == "failed"
    assert "training breaks on purpose" in table.loc["training-breaks", "error"]
    assert table.loc["diverges", "status"] == "diverged" and table.loc["learns", "status"] == "completed"
    assert table.loc[["diverges", "learns"], "error"].isna().all()
    markdown = (folder / "summary.md").read_text().splitlines()
    row = next(line for line in markdown if "fails-after-training" in line)
    assert "failed" in row and "completed" not in row


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
    assert len(_jobs(again.folder)) == 3
    run_batch(spec, retry_failed=True)
    tries = {r["name"]: r["tries"] for r in _jobs(again.folder)}
    assert tries == {"fails": 2, "diverges": 1, "learns": 1}, "only the failed job ran again"


@pytest.mark.slow
def test_a_killed_batch_resumes_without_losing_or_duplicating(tiny_notebook, isolated_dirs, tmp_path):
    spec_path = tmp_path / "kill.json"
    spec_path.write_text(json.dumps({"notebook": str(tiny_notebook), "name": "kill", "workers": 1,
                                     "parameters": {"sleep": 2.0},
                                     "grid": {"hidden_units": [[4], [6], [8], [10]]}}))
    folder = isolated_dirs / "reports" / "batches" / "kill"
    command = [sys.executable, "-m", "lab.studies.batch", str(spec_path)]
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 180
    # Kill it while the second notebook is running: one record committed, one attempt in flight.
    while time.time() < deadline:
        if len(_jobs(folder)) >= 1 and (folder / ".attempts").exists() and any((folder / ".attempts").iterdir()):
            break
        time.sleep(0.2)
    else:
        batch.kill()
        pytest.fail("the batch did not get going")
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    committed_before = len(_jobs(folder))
    assert 1 <= committed_before < 4
    time.sleep(1.0)  # the orphaned papermill child is told to stop when its parent dies

    finished = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "already finished" in finished.stdout
    records = _jobs(folder)
    assert sorted(r["name"] for r in records) == sorted(j.label for j in load_spec(spec_path).jobs)
    assert len(records) == 4, "no parameter set recorded twice"
    runs = [e for e in read_index() if "tiny" in e["name"]]
    assert len(runs) == 4 and len({e["run_id"] for e in runs}) == 4, "one run record per parameter set"
    assert all(r["status"] == "completed" for r in records)
    assert not list((folder / ".attempts").iterdir()), "the killed attempt's files were removed"
    assert len(list((folder / "notebooks").glob("*.ipynb"))) == 4


def _jobs(folder) -> list[dict]:
    """The batch's committed jobs (the last attempt of each), from its collection record."""
    return list(committed_jobs(folder).values())


def test_unreadable_spec_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_spec(bad)
    result = subprocess.run([sys.executable, "-m", "lab.studies.batch", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2 and "is not valid JSON" in result.stderr and "Traceback" not in result.stderr


def test_a_batch_of_an_older_kit_resumes_from_its_batch_jsonl(untrained_notebook, isolated_dirs, capsys):
    """A batch folder from before collection records: its committed jobs are read from batch.jsonl,
    kept when the batch starts again, and written into its collection record from then on."""
    from lab.system import atomic

    spec = spec_from_dict({"notebook": str(untrained_notebook), "name": "old",
                           "runs": [{"name": "done", "note": "a"}, {"name": "todo", "note": "b"}]})
    folder = isolated_dirs / "reports" / "batches" / "old"
    done = spec.jobs[0]
    atomic.append_line(folder / "batch.jsonl", json.dumps({
        "key": done.key, "name": "done", "parameters": done.parameters, "status": "completed", "run_ids": [],
        "attempt": f"{done.key}-1", "seconds": 1.0, "notebook": "notebooks/done.ipynb"}))
    (folder / ".attempts" / f"{done.key}-1").mkdir(parents=True)  # committed, not yet applied
    (folder / ".attempts" / "killed-2").mkdir()  # never committed
    assert list(committed_jobs(folder)) == [done.key]
    result = run_batch(spec)
    assert "1 of 2 runs already finished; running 1" in capsys.readouterr().out
    assert not any((folder / ".attempts").iterdir()), "the committed attempt applied, the killed one removed"
    assert [(r["name"], r["status"], r["tries"]) for r in result.records] == [("done", "completed", 1),
                                                                             ("todo", "completed", 1)]
    record = json.loads((folder / "collection.json").read_text())
    assert [m["job"] for m in record["members"]] == ["done", "todo"] and record["members"][0]["seconds"] == 1.0
    assert record["kind"] == "batch" and record["finished"] and record["details"]["jobs"][1]["name"] == "todo"


# -- seeds -----------------------------------------------------------------------------------

SEEDED_PARAMETERS = "seed = 0\nseeds = None\nname = 'x'\nlearning_rate = 1e-2"

SEEDED_BODY = '''
from lab.runs.training import train
# As notebook 01 does it: one run per seed, in one kernel.
for run_seed in seeds or [seed]:
    result = train(dataset="digits", limit=300, model="mlp", hidden_units=[8], epochs=1, learning_rate=learning_rate,
                   seed=run_seed, verbose=0, save_model=False, tensorboard=False, name=name)
    print(result.status, run_seed)
'''


def test_a_spec_with_seeds_has_one_job_per_configuration_and_seed(tmp_path, tiny_notebook):
    seeded = _write_notebook(tmp_path / "seeded.ipynb", SEEDED_PARAMETERS, SEEDED_BODY)
    spec = spec_from_dict({"notebook": str(seeded), "parameters": {"seed": 4}, "seeds": 2,
                           "runs": [{"name": "a"}, {"name": "b", "learning_rate": 1e-3}]})
    assert [(job.label, job.seed, job.parameters["seed"]) for job in spec.jobs] == [
        ("a", 4, 4), ("a", 5, 5), ("b", 4, 4), ("b", 5, 5)]
    assert len({job.key for job in spec.jobs}) == 4 and spec.seeds == [4, 5] and "seed" in spec.varied
    one_seed = spec_from_dict({"notebook": str(seeded), "seeds": [7], "runs": [{"name": "a"}]})
    assert [job.seed for job in one_seed.jobs] == [7] and "seed" not in one_seed.varied
    unseeded = spec_from_dict({"notebook": str(seeded), "runs": [{"name": "a"}]})
    assert unseeded.jobs[0].seed is None and "seed" not in unseeded.jobs[0].parameters, "no seeds: as before"


@pytest.mark.parametrize("raw, message", [
    ({"seeds": 0, "runs": [{"name": "a"}]}, "received seeds=0"),
    ({"seeds": [1, 1], "runs": [{"name": "a"}]}, r"\[1\] repeated"),
    ({"seeds": "x", "runs": [{"name": "a"}]}, "received 'x'"),
    ({"seeds": 2, "runs": [{"name": "a", "seed": 3}]}, r"parameter set\(s\) \['a'\] set 'seed' too"),
])
def test_bad_seeds_in_a_spec_are_refused(tmp_path, raw, message):
    seeded = _write_notebook(tmp_path / "seeded.ipynb", SEEDED_PARAMETERS, SEEDED_BODY)
    with pytest.raises(ValueError, match=message):
        spec_from_dict({"notebook": str(seeded), **raw})


def test_seeds_need_a_notebook_with_a_seed_parameter(tiny_notebook):
    with pytest.raises(ValueError, match="has no 'seed' parameter"):
        spec_from_dict({"notebook": str(tiny_notebook), "seeds": 2, "runs": [{"name": "a"}]})


def test_without_a_seeds_parameter_each_seed_is_a_notebook_of_its_own(tmp_path, isolated_dirs):
    notebook = _write_notebook(tmp_path / "plain.ipynb", "seed = 0", "print('seed', seed)")
    result = run_batch(spec_from_dict({"notebook": str(notebook), "name": "each", "seeds": [3, 4],
                                       "runs": [{"name": "a"}]}))
    assert [(r["name"], r["parameters"]["seed"], r["status"]) for r in result.records] == [
        ("a", 3, "completed"), ("a", 4, "completed")]
    folder = isolated_dirs / "reports" / "batches" / "each"
    assert sorted(p.name for p in (folder / "notebooks").iterdir()) == ["a-seed-3.ipynb", "a-seed-4.ipynb"]
    members = json.loads((folder / "collection.json").read_text())["members"]
    assert [(m["configuration"], m["seed"], m["run_id"]) for m in members] == [("a", 3, None), ("a", 4, None)]


@pytest.mark.slow
def test_the_seeds_of_a_configuration_run_in_one_notebook_and_resume_per_seed(tmp_path, isolated_dirs, capsys):
    notebook = _write_notebook(tmp_path / "seeded.ipynb", SEEDED_PARAMETERS, SEEDED_BODY)
    raw = {"notebook": str(notebook), "name": "repeat", "runs": [{"name": "a"}]}
    first = run_batch(spec_from_dict({**raw, "seeds": 2}))
    folder = isolated_dirs / "reports" / "batches" / "repeat"
    assert [p.name for p in (folder / "notebooks").iterdir()] == ["a-seed-0-1.ipynb"], "one notebook, both seeds"
    assert [(r["name"], r["parameters"]["seed"], r["status"]) for r in first.records] == [
        ("a", 0, "completed"), ("a", 1, "completed")]
    members = load_collection_members(folder)
    assert [(m["configuration"], m["seed"], m["name"]) for m in members] == [("a", 0, "a"), ("a", 1, "a")]
    assert "seed" in first.table.columns and first.table["seed"].tolist() == [0, 1]
    capsys.readouterr()

    again = run_batch(spec_from_dict({**raw, "seeds": 3}))
    assert "2 of 3 runs already finished; running 1" in capsys.readouterr().out
    assert len(read_index()) == 3, "only the third seed ran"
    assert sorted(p.name for p in (folder / "notebooks").iterdir()) == ["a-seed-0-1.ipynb", "a-seed-2.ipynb"]
    assert [m["seed"] for m in load_collection_members(folder)] == [0, 1, 2]
    assert [r["run_ids"] for r in again.records[:2]] == [r["run_ids"] for r in first.records]


def load_collection_members(folder):
    from lab.runs.records import load_collection

    return load_collection(folder).members


RECORDING_BODY = '''
from lab.runs.records import RunWriter
# A run record written by hand per seed (no training): what the batch reads back.
for run_seed in ([seed] if ignore_seeds else seeds or [seed]):
    RunWriter({"seed": run_seed, "config_hash": f"{name}-{run_seed}"}, name=name).publish(
        {"name": name, "status": "completed"})
'''


@pytest.mark.parametrize("ignore_seeds", [False, True])
def test_each_run_of_a_notebook_goes_to_the_job_of_its_seed(tmp_path, isolated_dirs, ignore_seeds):
    notebook = _write_notebook(tmp_path / "recording.ipynb", "seed = 0\nseeds = None\nname = 'x'\nignore_seeds = False",
                               RECORDING_BODY)
    result = run_batch(spec_from_dict({"notebook": str(notebook), "name": "recording", "seeds": [1, 2],
                                       "parameters": {"ignore_seeds": ignore_seeds}, "runs": [{"name": "a"}]}))
    members = load_collection_members(isolated_dirs / "reports" / "batches" / "recording")
    if not ignore_seeds:
        assert [(m["seed"], m["status"], m["run_id"] is not None) for m in members] == [(1, "completed", True),
                                                                                      (2, "completed", True)]
    else:  # a notebook that does not loop over its seeds: the seed it did not run is not "completed"
        assert [(m["seed"], m["status"], m["run_id"] is not None) for m in members] == [(1, "completed", True),
                                                                                      (2, "failed", False)]
        assert "recorded no run with seed 2" in result.records[1]["error"]
