"""Collection records (``lab.runs.collection``): the four writers (sweep, batch, search, ablation) write
one schema, and the reader opens folders written before the record existed."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lab.system import atomic
from lab.runs.collection import COLLECTION_NAME, COLLECTION_VERSION, MEMBER_KEYS, write_collection
from lab.runs.records import RunWriter, list_collections, load_collection, load_run


def _run(name, *, status="completed", learning_rate=1e-3, tags=(), val_accuracy=0.5):
    """A run record written by hand (no training, no TensorBoard logs)."""
    config = {"name": name, "tags": list(tags), "learning_rate": learning_rate, "model": "mlp", "epochs": 2,
              "config_hash": f"hash-{name}", "task": "classification", "record_version": 2}
    writer = RunWriter(config, name=name)
    pd.DataFrame({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}).to_csv(writer.path / "history.csv", index=False)
    return load_run(writer.publish({"name": name, "status": status, "val_accuracy": val_accuracy, "val_loss": 0.7,
                                    "tags": list(tags), "epochs_run": 2}))


def _notebook(path):
    nb = new_notebook()
    nb.cells = [new_code_cell("learning_rate = 1e-3\nswitch = 'off'"), new_code_cell("print(learning_rate)")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


# -- folders of an older kit ---------------------------------------------------------------------

def test_an_old_sweep_folder_reads_through_the_new_reader(isolated_dirs):
    runs = [_run("fast", learning_rate=1e-2), _run("slow", status="diverged")]
    folder = isolated_dirs / "reports" / "sweeps" / "old-sweep"
    atomic.write_json(folder / "sweep.json", {"name": "old-sweep", "written": "2026-01-02T03:04:05", "runs": [
        {"run_id": r.run_id, "name": r.name, "status": r.status, "path": f"/elsewhere/{r.run_id}",
         "config_hash": r.config["config_hash"]} for r in runs]})
    record = load_collection("old-sweep")
    assert record.kind == "sweep" and record.version == 0 and record.folder == folder
    assert [run.run_id for run in record.runs()] == [run.run_id for run in runs]
    assert [m["status"] for m in record.members] == ["completed", "diverged"]
    assert record.varied == {"learning_rate": [1e-2, 1e-3]} and record.fixed["model"] == "mlp"
    assert record.written == "2026-01-02T03:04:05" and not (folder / COLLECTION_NAME).exists(), "left as written"


def test_an_old_batch_folder_reads_through_the_new_reader(isolated_dirs):
    run_a, run_c = _run("job-a"), _run("job-c", status="diverged")
    folder = isolated_dirs / "reports" / "batches" / "nightly"
    atomic.write_json(folder / "spec.json", {"notebook": "nb.ipynb", "kernel": "lab", "parameters": {"epochs": 2},
                                             "jobs": [{"key": "kb", "name": "job-b"}, {"key": "ka", "name": "job-a"},
                                                      {"key": "kc", "name": "job-c"}]})
    lines = [{"key": "ka", "name": "job-a", "status": "completed", "run_ids": [run_a.run_id], "attempt": "ka-1",
              "parameters": {"epochs": 2, "learning_rate": 0.1}, "seconds": 3.0},
             {"key": "kb", "name": "job-b", "status": "failed", "run_ids": [], "attempt": "kb-1",
              "parameters": {"epochs": 2, "learning_rate": 0.2}, "error": "Traceback\nValueError: first"},
             {"key": "kb", "name": "job-b", "status": "failed", "run_ids": [], "attempt": "kb-2",
              "parameters": {"epochs": 2, "learning_rate": 0.2}, "error": "Traceback\nValueError: bad"},
             {"key": "kc", "name": "job-c", "status": "diverged", "run_ids": [run_c.run_id, "deleted-run"],
              "attempt": "kc-1", "parameters": {"epochs": 2, "learning_rate": 0.3}}]
    for line in lines:
        atomic.append_line(folder / "batch.jsonl", json.dumps(line))
    record = load_collection(folder)
    assert record.kind == "batch" and record.version == 0 and record.details["kernel"] == "lab"
    # In the spec's order, the last attempt of each job; a job that trained nothing is one member.
    assert [(m["job"], m["run_id"]) for m in record.members] == [
        ("job-b", None), ("job-a", run_a.run_id), ("job-c", run_c.run_id), ("job-c", "deleted-run")]
    assert record.members[0]["attempt"] == "kb-2" and record.members[0]["tries"] == 2
    assert [m["status"] for m in record.members[1:3]] == ["completed", "diverged"], "each run's own status"
    assert record.varied == {"learning_rate": [0.2, 0.1, 0.3]} and record.fixed == {"epochs": 2}
    assert [run.run_id for run in record.runs()] == [run_a.run_id, run_c.run_id]
    notes = record.notes()
    assert "Batch job 'job-b' failed before training any run: ValueError: bad" in notes
    assert any("deleted-run has no record" in note for note in notes)


def test_an_old_search_folder_reads_through_the_new_reader(isolated_dirs):
    tags = ["search:lr", "search-id:s1"]
    trials = [_run("trial-0", tags=[*tags, "trial:0"]), _run("trial-1", tags=[*tags, "trial:1"], val_accuracy=0.9)]
    _run("replaced", tags=["search:lr", "search-id:s0", "trial:0"])  # an earlier search of the same name
    folder = isolated_dirs / "reports" / "searches" / "lr"
    manifest = {"name": "lr", "search_id": "s1", "objective": ["val_accuracy", "max"], "tuner": "random",
                "space": {"learning_rate": {"log": [1e-4, 1e-2]}, "filters": [4, 8]}, "base": {"model": "cnn"},
                "base_hash": "abc", "seed": 0, "data": None, "tuner_options": {}, "max_trials": 2,
                "updated": "2026-01-02T03:04:05"}
    atomic.write_json(folder / "search.json", manifest)
    # Stopped before its export (no trials.csv): the trials are the runs tagged with its name and id.
    record = load_collection(folder)
    assert record.kind == "search" and record.objective == ("val_accuracy", "max")
    assert [m["run_id"] for m in record.members] == [run.run_id for run in trials]
    assert [m["trial"] for m in record.members] == ["0", "1"]
    assert record.varied == {"learning_rate": {"min": 1e-4, "max": 1e-2}, "filters": [4, 8]}
    assert record.fixed == {"model": "cnn"} and record.details["base_hash"] == "abc"
    # With its trials table, the table names the trials and their scores.
    pd.DataFrame([{"trial": "1", "tuner_status": "COMPLETED", "score": 0.9, "run_id": trials[1].run_id},
                  {"trial": "2", "tuner_status": "RUNNING", "score": None, "run_id": None}]).to_csv(
        folder / "trials.csv", index=False)
    record = load_collection(folder)
    assert [(m["run_id"], m["trial"], m["score"]) for m in record.members] == [(trials[1].run_id, "1", 0.9)]


def test_collections_are_listed_and_looked_up_by_name_with_clear_errors(isolated_dirs):
    run = _run("only")
    for folder_name in ("sweeps", "batches"):
        write_collection(isolated_dirs / "reports" / folder_name / "same", kind="sweep" if folder_name == "sweeps"
                         else "batch", name="same", varied={}, fixed={}, members=[
                             {"run_id": run.run_id, "name": run.name, "status": run.status}], started=None)
    assert [(c.kind, c.name) for c in list_collections()] == [("batch", "same"), ("sweep", "same")]
    with pytest.raises(ValueError, match="names several collections \\(batch, sweep\\); pass kind="):
        load_collection("same")
    assert load_collection("same", kind="sweep").kind == "sweep"
    with pytest.raises(FileNotFoundError, match="No collection named 'other'. Collections: batch:same, sweep:same"):
        load_collection("other")
    with pytest.raises(ValueError, match="Unknown collection kind 'sweeps'; valid kinds: sweep, batch"):
        write_collection(isolated_dirs / "x", kind="sweeps", name="x", varied={}, fixed={}, members=[], started=None)
    with pytest.raises(ValueError, match=r"needs \['status'\]"):
        write_collection(isolated_dirs / "x", kind="sweep", name="x", varied={}, fixed={},
                         members=[{"run_id": "r", "name": "r"}], started=None)
    newer = isolated_dirs / "reports" / "sweeps" / "same" / COLLECTION_NAME
    newer.write_text(json.dumps({**json.loads(newer.read_text()), "version": COLLECTION_VERSION + 1}))
    with pytest.raises(ValueError, match="newer than this kit reads"):
        load_collection(newer.parent)


# -- one schema ----------------------------------------------------------------------------------

def test_the_four_writers_write_the_same_schema(isolated_dirs, tmp_path):
    from lab.studies.ablation import notebook_batch_spec
    from lab.studies.batch import _Commits, spec_from_dict, summarise
    from lab.config import RunConfig
    from lab.data.datasets import load_dataset
    from lab.studies.sweep import write_summary
    from lab.studies.tuning import search

    runs = [_run("a", learning_rate=1e-2), _run("b")]
    folders = {"sweep": write_summary("s", runs, varied=["learning_rate"]),
               "ablation": write_summary("abl", runs, varied=["learning_rate"], kind="ablation")}
    spec = spec_from_dict({"notebook": str(_notebook(tmp_path / "nb.ipynb")), "name": "b",
                           "runs": [{"name": "a", "learning_rate": 1e-2}, {"name": "b", "learning_rate": 1e-3}]})
    folder = isolated_dirs / "reports" / "batches" / "b"
    commits = _Commits(spec, folder, "python3", {"call": "test"})
    for job, run in zip(spec.jobs, runs):
        with commits.lock:
            commits.commit(job.key, [{"run_id": run.run_id, "name": run.name, "status": run.status, "job": job.label,
                                      "key": job.key, "parameters": job.parameters, "attempt": f"{job.key}-x"}])
    assert summarise(spec, folder).records[1]["run_ids"] == [runs[1].run_id]
    folders["batch"] = folder
    result = search(dict(dataset="digits", model="mlp", hidden_units=[4], epochs=1, verbose=0, save_model=False,
                         tensorboard=False), {"learning_rate": [1e-2]}, max_trials=1, name="one",
                    data=load_dataset("digits", limit=60), verbose=0)
    folders["search"] = result.directory
    assert notebook_batch_spec(RunConfig(dataset="digits"), [{"name": "1-plain"}], name="e1").kind == "ablation"

    records = {kind: json.loads((folder / COLLECTION_NAME).read_text()) for kind, folder in folders.items()}
    keys = {kind: set(record) for kind, record in records.items()}
    assert all(k == keys["sweep"] for k in keys.values()), keys
    assert keys["sweep"] >= {"version", "kind", "name", "varied", "fixed", "members", "started", "finished",
                             "seconds", "command", "written"}
    for kind, record in records.items():
        assert record["kind"] == kind and record["version"] == COLLECTION_VERSION
        assert record["finished"] and record["seconds"] is not None and record["command"]["call"]
        assert record["members"] and all(set(MEMBER_KEYS) <= set(m) for m in record["members"])
        assert all(m["path"] == f"runs/{m['run_id']}" for m in record["members"])
        collection = load_collection(folders[kind])
        assert [run.run_id for run in collection.runs()] == [m["run_id"] for m in record["members"]]
    assert records["sweep"]["varied"] == records["batch"]["varied"] == {"learning_rate": [1e-2, 1e-3]}
    assert records["search"]["details"]["tuner"] == "random" and records["search"]["members"][0]["trial"] == "0"
    assert records["batch"]["details"]["kernel"] == "python3" and records["batch"]["fixed"] == {}


# -- seeds ---------------------------------------------------------------------------------------

def test_members_carry_their_seed_and_the_configuration_they_repeat(isolated_dirs):
    from lab.runs.collection import member
    from lab.studies.sweep import write_summary

    runs = [_run("plain"), _run("plain", learning_rate=1e-2), _run("other")]
    for run, seed in zip(runs, (0, 1, 0)):  # the runs of a sweep with seeds=2 keep their configuration's name
        run.config["seed"] = seed
    assert member(runs[1])["seed"] == 1 and member(runs[1])["configuration"] == "plain"
    assert member(runs[1], configuration="job-a")["configuration"] == "job-a", "a batch names its job"
    folder = write_summary("seeded", runs, varied=["seed"])
    members = load_collection(folder).members
    assert [(m["configuration"], m["seed"]) for m in members] == [("plain", 0), ("plain", 1), ("other", 0)]
    groups = {}
    for entry in members:
        groups.setdefault(entry["configuration"], []).append(entry["seed"])
    assert groups == {"plain": [0, 1], "other": [0]}
