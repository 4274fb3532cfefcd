import json
import subprocess
import sys

import pandas as pd
import pytest

from lab.system import atomic
from lab.config import RunConfig
from lab.runs.collection import write_collection
from lab.runs.records import (INDEX_NAME, RECORD_VERSION, RESULT_STATUSES, STATUSES, RunWriter, clean_partial,
                         load_collection, load_run, load_runs, read_index, rebuild_index, results_table, to_markdown,
                         upgrade_config, worst_status)
from lab.studies.sweep import grid, run_sweep

FAST = dict(dataset="digits", limit=200, model="cnn", depth=2, filters=8, dense_units=16, epochs=2, verbose=0)


def _publish(name, status="completed", accuracy=0.5, tags=()):
    writer = RunWriter({"name": name, "tags": list(tags), "learning_rate": 1e-3, "config_hash": name}, name=name)
    pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}).to_csv(writer.path / "history.csv", index=False)
    return writer.publish({"name": name, "status": status, "test_accuracy": accuracy, "val_loss": 0.7})


def test_publish_is_atomic_and_indexed(isolated_dirs):
    writer = RunWriter({"config_hash": "x"}, name="a run/with odd:name")
    assert writer.path.name.startswith(".partial-")
    with pytest.raises(ValueError, match="interrupted run"):
        load_run(writer.path)
    final = writer.publish({"name": "a", "status": "completed"})
    assert final.exists() and not writer.path.exists()
    assert "/" not in final.name and ":" not in final.name
    assert read_index()[0]["run_id"] == final.name


def test_index_reader_skips_a_truncated_line(isolated_dirs):
    _publish("one")
    index = isolated_dirs / "reports" / "runs" / INDEX_NAME
    with open(index, "a") as handle:
        handle.write('{"run_id": "cut sho')  # a writer killed mid-line
    _publish("two")
    assert [e["name"] for e in read_index()] == ["one", "two"]


def test_rebuild_index_and_clean_partial(isolated_dirs):
    final = _publish("lost")
    index = isolated_dirs / "reports" / "runs" / INDEX_NAME
    index.unlink()  # as if the process died between the rename and the append
    assert rebuild_index() == 1 and read_index()[0]["run_id"] == final.name
    assert rebuild_index() == 0
    live = RunWriter({}, name="being-written")
    assert clean_partial() == 0 and live.path.exists(), "a live process's run is never removed"
    # A run whose process is gone (killed with SIGKILL): removed by the next run in this directory.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = RunWriter({}, name="killed")
    owner = json.loads((killed.path / "owner.json").read_text())
    (killed.path / "owner.json").write_text(json.dumps({**owner, "pid": int(dead.stdout)}))
    unowned = isolated_dirs / "reports" / "runs" / ".partial-older-kit"
    unowned.mkdir()
    RunWriter({}, name="next")
    assert not killed.path.exists() and live.path.exists() and unowned.exists()
    assert clean_partial(unowned_after_seconds=0) == 1 and not unowned.exists()
    assert "owner.json" not in {p.name for p in live.publish({"status": "completed"}).iterdir()}


def test_results_table_and_filters(isolated_dirs):
    _publish("a", accuracy=0.9, tags=["e1"])
    _publish("b", status="diverged", accuracy=0.01)
    runs = load_runs()
    table = results_table(runs, ["name", "status", "test_accuracy", "learning_rate"])
    assert table["name"].tolist() == ["a", "b"] and table["status"].tolist() == ["completed", "diverged"]
    assert [r.name for r in load_runs(tags=["e1"])] == ["a"]
    assert [r.name for r in load_runs(where=lambda r: r.status == "diverged")] == ["b"]
    markdown = to_markdown(table)
    assert markdown.splitlines()[0].startswith("| name") and "0.9000" in markdown
    with pytest.raises(ValueError, match="No run has the column"):
        results_table(runs, ["name", "nonsense"])


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "table.csv"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_grid_is_the_cartesian_product():
    combos = grid(optimizer=["adam", "sgd", "rmsprop"], learning_rate=[1e-2, 1e-3, 1e-4])
    assert len(combos) == 9 and combos[1] == {"optimizer": "adam", "learning_rate": 1e-3}


def test_sweep_goes_on_after_a_divergence_and_resumes(isolated_dirs, capsys):
    variants = [{"name": "diverges", "learning_rate": 50.0, "divergence_patience": 1},
                {"name": "learns", "learning_rate": 3e-3}]
    result = run_sweep(FAST, variants, name="lr")
    assert [r.status for r in result.runs] == ["diverged", "completed"]
    table = pd.read_csv(result.summary_dir / "results.csv")
    assert table["name"].tolist() == ["diverges", "learns"] and "learning_rate" in table.columns
    for name in ("results.md", "curves.png", "collection.json"):
        assert (result.summary_dir / name).stat().st_size > 0
    record = load_collection(result.summary_dir)
    assert record.kind == "sweep" and record.name == "lr" and record.finished is not None
    assert [m["run_id"] for m in record.members] == [r.run_id for r in result.runs]
    assert [m["status"] for m in record.members] == ["diverged", "completed"]
    assert set(record.varied) == {"divergence_patience", "learning_rate"}
    assert record.varied["learning_rate"] == [50.0, 3e-3]
    assert record.fixed["model"] == "cnn" and "learning_rate" not in record.fixed
    assert record.command["call"] == "lab.studies.sweep.run_sweep" and record.command["lab_version"]

    again = run_sweep(FAST, variants, name="lr", resume=True)
    assert [r.run_id for r in again.runs] == [r.run_id for r in result.runs]
    assert "reusing finished run" in capsys.readouterr().out
    assert len(read_index()) == 2, "resuming ran nothing twice"


def test_sweep_validates_every_variant_before_training(isolated_dirs):
    with pytest.raises(ValueError, match="dropout_rate must be in"):
        run_sweep(FAST, [{"name": "ok"}, {"name": "bad", "dropout_rate": 1.5}], name="bad")
    assert read_index() == []
    with pytest.raises(ValueError, match="at least one variant"):
        run_sweep(FAST, [], name="empty")


def test_the_e1_notebook_batch_names_each_run_after_its_configuration():
    from lab.studies.ablation import E1_VARIANTS, notebook_batch_spec
    from lab.studies.notebooks import parameter_names

    spec = notebook_batch_spec(RunConfig(dataset="digits", pipeline_size=16, epochs=2), E1_VARIANTS[:3], name="e1")
    assert "name" in parameter_names(spec.notebook), "the notebook takes its run's name as a parameter"
    assert [job.parameters["name"] for job in spec.jobs] == [v["name"] for v in E1_VARIANTS[:3]]
    assert all(job.parameters["pipeline_size"] == 16 and job.parameters["epochs"] == 2 for job in spec.jobs)
    assert set(spec.jobs[0].parameters) <= set(parameter_names(spec.notebook)), "every parameter is the notebook's"


@pytest.mark.parametrize("recorded, expected", [
    # Version 2 still called Mask R-CNN's input side input_size, and pretrained_unet's backbone encoder.
    ({"record_version": 2, "task": "instance", "model": "maskrcnn", "input_size": 128}, {"pipeline_size": 128}),
    ({"model": "maskrcnn", "input_size": 256}, {"pipeline_size": 256}),
    ({"record_version": 2, "task": "segmentation", "model": "pretrained_unet", "encoder": "vgg16", "unfreeze": 0},
     {"backbone": "vgg16", "unfreeze": 0}),
    ({"model": "pretrained_unet", "encoder": "vgg16", "trainable_encoder": True},
     {"backbone": "vgg16", "unfreeze": "all"}),
    ({"record_version": 2, "task": "classification", "model": "transfer", "backbone_input_size": 64},
     {"backbone_input_size": 64}),
])
def test_older_records_are_read_under_the_new_names(recorded, expected):
    config = upgrade_config(recorded)
    assert {key: config[key] for key in expected} == expected
    assert not {"input_size", "encoder", "trainable_encoder"} & set(config)
    assert upgrade_config({**config, "record_version": RECORD_VERSION}) == {**config, "record_version": RECORD_VERSION}


def test_an_old_never_learned_run_reads_as_stalled_and_its_file_is_kept(isolated_dirs):
    def old(name, reason, version=3):
        versioned = {"record_version": version} if version else {}  # the first records had no version
        writer = RunWriter({"name": name, "config_hash": name, **versioned}, name=name)
        return writer.publish({"name": name, "status": "diverged", "divergence_reason": reason})

    never = old("never", "never learned: the best val_accuracy in 3 epochs was 0.1000, not above chance ...")
    unversioned = old("unversioned", "never learned: in 3 epochs ...", version=None)
    nan = old("nan", "training loss became nan at batch 3")
    current = RunWriter({"name": "now", "config_hash": "now", "record_version": RECORD_VERSION}, name="now").publish(
        {"name": "now", "status": "diverged", "divergence_reason": "never learned (as a newer kit never writes)"})
    assert [load_run(p).status for p in (never, unversioned, nan, current)] == ["stalled", "stalled", "diverged",
                                                                                 "diverged"]
    assert json.loads((never / "metrics.json").read_text())["status"] == "diverged", "the file is left as written"
    # The index still says "diverged" for the old run: the filter reads the record.
    assert [r.name for r in load_runs(status="stalled")] == ["never", "unversioned"]
    assert [r.name for r in load_runs(status=("diverged", "failed"))] == ["nan", "now"]
    assert [r.name for r in load_runs(status=RESULT_STATUSES)] == ["never", "unversioned", "nan", "now"]
    with pytest.raises(ValueError, match=r"Unknown run status\(es\) \['divergd'\]; a run's status is one of "
                                         r"completed, stalled, diverged, failed"):
        load_runs(status="divergd")
    # A collection an older kit wrote says "diverged" for its members: they read as their runs do.
    write_collection(isolated_dirs / "reports" / "sweeps" / "old", kind="sweep", name="old", varied={}, fixed={},
                     started=None, members=[{"run_id": p.name, "name": p.name, "status": "diverged"}
                                            for p in (never, nan)])
    assert [m["status"] for m in load_collection("old").members] == ["stalled", "diverged"]


def test_the_worst_status_names_a_group():
    assert worst_status(["completed", "stalled", "completed"]) == "stalled"
    assert worst_status(["stalled", "diverged"]) == "diverged" and worst_status(["diverged", "failed"]) == "failed"
    assert worst_status([]) == worst_status(["unknown"]) == "completed"
    assert STATUSES[:3] == RESULT_STATUSES and "failed" not in RESULT_STATUSES


def test_a_sweep_runs_each_variant_once_per_seed_and_resumes_the_missing_seeds(isolated_dirs, capsys):
    variants = [{"name": "small", "learning_rate": 3e-3}]
    first = run_sweep({**FAST, "epochs": 1}, variants, name="seeded", seeds=2)
    assert [(r.name, r.config["seed"]) for r in first.runs] == [("small", 0), ("small", 1)]
    record = load_collection(first.summary_dir)
    assert [(m["configuration"], m["seed"]) for m in record.members] == [("small", 0), ("small", 1)]
    assert record.varied["seed"] == [0, 1] and "seed" in pd.read_csv(first.summary_dir / "results.csv")
    capsys.readouterr()

    again = run_sweep({**FAST, "epochs": 1}, variants, name="seeded", seeds=[0, 1, 2], resume=True)
    out = capsys.readouterr().out
    assert [r.run_id for r in again.runs[:2]] == [r.run_id for r in first.runs], "seeds 0 and 1 are reused"
    assert out.count("reusing finished run") == 2 and again.runs[2].config["seed"] == 2
    assert len(read_index()) == 3, "only the third seed ran"
    assert [m["seed"] for m in load_collection(again.summary_dir).members] == [0, 1, 2]
    with pytest.raises(ValueError, match="received seeds=0"):
        run_sweep(FAST, variants, name="none", seeds=0)


def test_a_collection_written_before_seeds_reads_with_no_seed_and_its_name_as_configuration(isolated_dirs):
    from lab.runs.collection import write_collection

    folder = write_collection(isolated_dirs / "reports" / "sweeps" / "old", kind="sweep", name="old", varied={},
                              fixed={}, members=[{"run_id": "r1", "name": "a", "status": "completed"}],
                              started=None)
    record = json.loads((folder / "collection.json").read_text())
    for entry in record["members"]:  # as a kit before seeds wrote it
        del entry["seed"], entry["configuration"]
    (folder / "collection.json").write_text(json.dumps(record))
    member = load_collection(folder).members[0]
    assert member["seed"] is None and member["configuration"] == "a" and member["run_id"] == "r1"


def test_the_e1_notebook_batch_runs_all_seeds_of_a_configuration_in_one_notebook(capsys):
    from lab.studies.ablation import E1_VARIANTS, main, notebook_batch_spec
    from lab.studies.batch import _executions
    from lab.studies.notebooks import parameter_names

    spec = notebook_batch_spec(RunConfig(dataset="digits", pipeline_size=16, epochs=2, seed=5), E1_VARIANTS[:2],
                               name="e1", seeds=3)
    assert {"seed", "seeds"} <= set(parameter_names(spec.notebook))
    assert [(job.label, job.seed) for job in spec.jobs] == [
        ("1-plain", 5), ("1-plain", 6), ("1-plain", 7), ("2-batchnorm", 5), ("2-batchnorm", 6), ("2-batchnorm", 7)]
    assert [[job.seed for job in jobs] for jobs in _executions(spec, spec.jobs)] == [[5, 6, 7], [5, 6, 7]]
    assert [[job.seed for job in jobs] for jobs in _executions(spec, spec.jobs[2:])] == [[7], [5, 6, 7]]
    with pytest.raises(SystemExit) as exited:
        main(["--seeds", "1,x"])
    assert exited.value.code == 2 and "received '1,x'" in capsys.readouterr().err
