"""keras-tuner searches whose trials are run records: spaces, refusals, exports, resume."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import keras_tuner
import pytest

from lab.runs.callbacks import LOSS_GREW, NON_FINITE_LOSS
from lab.config import RunConfig
from lab.runs.records import PARTIAL_PREFIX, load_collection, load_run, load_runs, read_index
from lab.studies.tuning import cnn_space, make_objective, parse_space, record_metrics, search, transfer_space
from lab.studies.tuning.space import declare, space_values
from lab.studies.tuning.tuner import RunTuner

# The E1 CNN with two narrow blocks, one or two epochs on a few real digits: seconds per trial.
BASE = dict(dataset="digits", model="cnn", depth=2, filters=8, dense_units=16, epochs=1, batch_size=64,
            early_stopping_patience=None, verbose=0)
SPACE = {"learning_rate": {"log": [1e-3, 1e-2]}, "filters": [4, 8]}


@pytest.fixture(scope="module")
def digits_small():
    from lab.data.datasets import load_dataset

    return load_dataset("digits", limit=100)


@pytest.fixture
def no_plots(monkeypatch):
    """Skips writing the run records' PNGs (a second per trial) where a test does not read them."""
    import matplotlib.pyplot as plt

    monkeypatch.setattr("lab.runs.plots.save", lambda figure, path: plt.close(figure))


def _tag(run, prefix: str) -> str | None:
    return next((t[len(prefix):] for t in run.config["tags"] if t.startswith(prefix)), None)


# -- spaces and refusals (no training) --------------------------------------------------------

def test_space_entries_become_keras_tuner_hyperparameters():
    space = {"learning_rate": {"log": [1e-4, 1e-2]}, "depth": {"min": 2, "max": 4}, "filters": [16, 32],
             "dropout_rate": {"min": 0.0, "max": 0.5, "step": 0.1}, "label_smoothing": [0, 0.1],
             "hidden_units": [[64], [128, 64]], "optimizer": ["adam", "sgd"],
             "momentum": {"values": [0.0, 0.9], "when": {"optimizer": ["sgd"]}}}
    entries = parse_space(space)
    hp = keras_tuner.HyperParameters()
    values = declare(hp, entries)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"learning_rate": "Float", "depth": "Int", "filters": "Choice", "dropout_rate": "Float",
                     "label_smoothing": "Choice", "hidden_units": "Choice", "optimizer": "Choice", "momentum": "Choice"}
    assert hp.space[0].sampling == "log"
    # defaults: the first value of a list, the low end of a range; momentum is off with Adam
    assert values == {"learning_rate": 1e-4, "depth": 2, "filters": 16, "dropout_rate": 0.0, "label_smoothing": 0.0,
                      "hidden_units": [64], "optimizer": "adam"}
    hp.values["optimizer"], hp.values["hidden_units"] = "sgd", "[128, 64]"
    hp.ensure_active_values()  # as keras-tuner's oracle does: momentum is now active
    chosen = declare(hp, entries)
    assert chosen["momentum"] in (0.0, 0.9) and chosen["hidden_units"] == [128, 64]  # lists survive as JSON text
    assert space_values({**hp.values, "tuner/epochs": 3}, entries)["hidden_units"] == [128, 64]
    assert {e.name for e in parse_space(cnn_space())} >= {"filters", "depth", "normalization", "dropout_rate", "l2",
                                                          "learning_rate", "optimizer"}
    assert "optimizer" not in cnn_space(optimizer=None, momentum=None)
    assert {"backbone", "unfreeze", "head_units", "learning_rate", "backbone_lr_factor"} <= set(transfer_space())


@pytest.mark.parametrize("space, message", [
    ({}, "The search space is empty"),
    ({"learnig_rate": [1e-3]}, r"Unknown configuration key\(s\) \['learnig_rate'\].*did you mean 'learning_rate'"),
    ({"learning_rate": 1e-3}, "A single value belongs in the base configuration"),
    ({"learning_rate": {"min": 1e-2, "max": 1e-3}}, "min < max"),
    ({"learning_rate": {"log": [0.0, 1e-2]}}, "log sampling needs a positive range"),
    ({"filters": {"values": []}}, "an empty list of values"),
    ({"momentum": {"values": [0.9], "when": {"optimizer": ["sgd"]}}}, "must be a list \\(Choice\\) entry earlier"),
    ({"normalization": ["none", "bn"]}, "normalization='bn' makes an invalid configuration"),
    ({"learning_rate": {"min": -1.0, "max": 1.0}}, "learning_rate=-1.0 makes an invalid configuration"),
    ({"name": ["a", "b"]}, "cannot be tuned"),
])
def test_bad_spaces_are_refused_before_any_trial(space, message, isolated_dirs):
    with pytest.raises(ValueError, match=message):
        search(BASE, space, name="bad")
    assert read_index() == [] and not (isolated_dirs / "reports" / "searches" / "bad").exists()


def test_bad_tuners_and_objectives_are_refused_before_any_trial(isolated_dirs):
    with pytest.raises(ValueError, match="Unknown tuner 'grid'. Available tuners: random, hyperband, bayesian"):
        search(BASE, SPACE, tuner="grid")
    with pytest.raises(ValueError, match="'val_f1' is not a metric of classification run records. "
                                         "Metrics: .*val_macro_auc"):
        search(BASE, SPACE, objective="val_f1")
    with pytest.raises(ValueError, match="would choose hyperparameters on the test split"):
        search(BASE, SPACE, objective="test_accuracy")
    with pytest.raises(ValueError, match="Cannot tell whether 'best_epoch' should be minimised or maximised"):
        search(BASE, SPACE, objective="best_epoch")
    with pytest.raises(ValueError, match="direction is 'min' or 'max'"):
        search(BASE, SPACE, objective=("val_loss", "down"))
    with pytest.raises(ValueError, match="max_trials must be a positive integer"):
        search(BASE, SPACE, max_trials=0)
    assert read_index() == [] and not (isolated_dirs / "reports" / "searches").exists()


def test_objectives_are_record_metrics_of_the_task_with_their_direction():
    classification = {"val_loss", "val_accuracy", "val_macro_auc", "train_loss", "best_epoch_val_accuracy"}
    assert classification <= set(record_metrics())
    assert {"val_mean_iou", "val_mean_dice", "train_mean_iou"} <= set(record_metrics("segmentation"))
    assert {"val_mask_ap", "val_box_ap"} <= set(record_metrics("instance"))
    assert "val_accuracy" not in record_metrics("reconstruction")  # an autoencoder has no accuracy
    assert make_objective("val_mean_iou", "segmentation") == keras_tuner.Objective("val_mean_iou", "max")
    assert make_objective("val_mask_ap", "instance") == keras_tuner.Objective("val_mask_ap", "max")  # its monitor
    with pytest.raises(ValueError, match="not a metric of classification run records"):
        make_objective("val_mean_iou")
    with pytest.raises(ValueError, match="test split.*Use a validation metric: val_loss, val_accuracy, val_mean_iou"):
        make_objective("test_mean_iou", "segmentation")
    assert make_objective("val_loss") == keras_tuner.Objective("val_loss", "min")
    assert make_objective("val_accuracy") == keras_tuner.Objective("val_accuracy", "max")
    assert make_objective("val_macro_auc").direction == "max"
    assert make_objective(("best_epoch", "min")).direction == "min"
    assert make_objective(keras_tuner.Objective("seconds_per_epoch", "min")).name == "seconds_per_epoch"


def test_a_failed_run_is_a_failed_trial_not_a_crash():
    failed = dataclasses.make_dataclass("FakeRun", ["run_id", "status", "metrics"])(
        "r1", "failed", {"status": "failed", "error": "ResourceExhaustedError: OOM"})
    tuner = RunTuner.__new__(RunTuner)
    tuner.oracle = keras_tuner.oracles.RandomSearchOracle(objective=make_objective("val_loss"), max_trials=1)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="r1 failed: ResourceExhaustedError: OOM"):
        tuner._report(failed)
    diverged = dataclasses.replace(failed, status="diverged", metrics={"status": "diverged", "val_loss": None,
                                                                       "divergence_reason": "loss is NaN"})
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="no finite val_loss: loss is NaN"):
        tuner._report(diverged)
    ok = dataclasses.replace(failed, status="diverged", metrics={"val_loss": 4.6, "test_loss": 4.6, "params": 10})
    assert tuner._report(ok) == {"val_loss": 4.6, "params": 10.0}  # the test split stays out of the search


def test_a_worker_with_another_space_than_the_chiefs_stops():
    from lab.studies.tuning.tuner import RunHyperModel

    tuner = RunTuner.__new__(RunTuner)
    tuner.hypermodel = RunHyperModel(RunConfig(**BASE), parse_space(SPACE))
    hp = keras_tuner.HyperParameters()
    hp.values = {"learning_rate": 1e-3, "filters": 4, "depth": 3, "lab/search_id": "x"}  # the chief tunes depth
    trial = keras_tuner.engine.trial.Trial(hp, trial_id="0")
    with pytest.raises(keras_tuner.errors.FatalError, match=r"sets \['depth'\].*same spec"):
        tuner.run_trial(trial)


# -- searches ---------------------------------------------------------------------------------

def test_a_search_records_every_trial_and_exports_the_best(digits_small, isolated_dirs):
    result = search(BASE, SPACE, max_trials=2, name="lr-filters", data=digits_small, verbose=0)
    runs = load_runs(tags=["search:lr-filters"])
    assert len(runs) == 2 and sorted(_tag(r, "trial:") for r in runs) == ["0", "1"]
    assert all(r.status != "failed" for r in runs) and {_tag(r, "tuner:") for r in runs} == {"tuner0"}
    # the trial's values are in its record's configuration, and the record's metric is its score
    table = result.trials.set_index("trial")
    for run in runs:
        row = table.loc[_tag(run, "trial:")]
        assert run.config["filters"] == row["filters"] and run.config["learning_rate"] == row["learning_rate"]
        assert row["score"] == pytest.approx(run.metrics["val_accuracy"]) and row["run_id"] == run.run_id
    best_score = max(r.metrics["val_accuracy"] for r in runs)
    folder = isolated_dirs / "reports" / "searches" / "lr-filters"
    best = json.loads((folder / "best_hyperparameters.json").read_text())
    assert best["score"] == pytest.approx(best_score) and set(best["hyperparameters"]) == {"learning_rate", "filters"}
    assert load_run(best["run_path"]).metrics["val_accuracy"] == pytest.approx(best_score)
    assert (folder / "best_model.keras").read_bytes() == (result.best_run.path / "model.keras").read_bytes()
    for name in ("trials.csv", "trials.md", "curves.png", "collection.json"):
        assert (folder / name).stat().st_size > 0, name
    # The collection record names the trials' runs with their scores, and what resuming checks.
    record = load_collection(folder)
    assert record.kind == "search" and record.finished is not None and record.objective == ("val_accuracy", "max")
    assert [m["run_id"] for m in record.members] == table["run_id"].tolist()
    assert [m["score"] for m in record.members] == pytest.approx(table["score"].tolist())
    assert record.varied == {"learning_rate": {"min": 1e-3, "max": 1e-2}, "filters": [4, 8]}
    assert record.details["search_id"] == result.search_id and record.fixed["model"] == "cnn"
    assert result.best_config().filters == best["hyperparameters"]["filters"]
    assert len(result.table(["name", "val_accuracy"])) == 2

    # resuming is explicit, and only the same search resumes
    with pytest.raises(ValueError, match="already exists .* Pass resume=True to continue it, or resume=False"):
        search(BASE, SPACE, max_trials=2, name="lr-filters", data=digits_small)
    with pytest.raises(ValueError, match="was set up differently \\(space: saved"):
        search(BASE, {**SPACE, "filters": [4, 16]}, max_trials=2, name="lr-filters", data=digits_small, resume=True)
    with pytest.raises(ValueError, match="base_hash"):
        search({**BASE, "epochs": 2}, SPACE, max_trials=2, name="lr-filters", data=digits_small, resume=True)
    again = search(BASE, SPACE, max_trials=2, name="lr-filters", data=digits_small, resume=True, verbose=0)
    assert len(read_index()) == 2, "a finished search resumed trains nothing"
    assert again.best["run_id"] == best["run_id"]

    fresh = search(BASE, SPACE, max_trials=1, name="lr-filters", data=digits_small, resume=False, verbose=0)
    assert fresh.search_id != result.search_id and len(fresh.runs) == 1
    assert len(read_index()) == 3, "the old search's records are kept"
    replaced = list((isolated_dirs / "reports" / "searches" / ".replaced").iterdir())
    assert len(replaced) == 1 and (replaced[0] / "best_hyperparameters.json").exists()
    assert len(load_runs(tags=[f"search-id:{result.search_id}"])) == 2


@pytest.mark.slow
def test_hyperband_trains_each_trial_for_its_budget(digits_small, no_plots):
    # max_epochs=2, factor=2: two trials of 1 epoch, then the better one again for 2 epochs.
    result = search(BASE, SPACE, tuner="hyperband", max_epochs=2, factor=2, max_trials=3, name="hb",
                    objective="val_loss", data=digits_small, verbose=0)
    assert [r.metrics["epochs_run"] for r in result.runs] == [1, 1, 2]
    first_round = {r.config["learning_rate"] for r in result.runs[:2]}
    assert result.runs[2].config["learning_rate"] in first_round, "the second round continues a first-round trial"


def test_a_diverging_trial_is_recorded_and_the_bayesian_search_goes_on(digits_small, no_plots):
    # 1e8: the loss grows to about 1e35 in the first epoch, where training stops (it would be NaN in the second).
    space = {"learning_rate": [1e-2, 1e8]}
    result = search({**BASE, "epochs": 2}, space, tuner="bayesian", max_trials=2, name="diverge", objective="val_loss",
                    data=digits_small, verbose=0)
    runs = {r.config["learning_rate"]: r for r in result.runs}
    assert runs[1e8].status == "diverged" and runs[1e8].metrics["divergence_reason"].startswith((LOSS_GREW,
                                                                                                NON_FINITE_LOSS))
    assert runs[1e-2].status == "completed"
    table = result.trials.set_index("learning_rate")
    if runs[1e8].metrics["val_loss"] is None:  # no finite loss at all: no score to report
        assert table.loc[1e8, "tuner_status"] == "FAILED"
    else:  # the weights before the NaN were evaluated: a real, poor score
        assert table.loc[1e8, "tuner_status"] == "COMPLETED" and table.loc[1e8, "score"] > table.loc[1e-2, "score"]
    assert result.best["hyperparameters"] == {"learning_rate": 1e-2}


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_without_losing_or_repeating_trials(tmp_path, isolated_dirs):
    spec = {"base": {**BASE, "limit": 60, "save_model": False}, "space": SPACE, "max_trials": 3, "name": "killed",
            "verbose": 0}
    (tmp_path / "search.json").write_text(json.dumps(spec))
    command = [sys.executable, "-m", "lab.studies.tuning", str(tmp_path / "search.json")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs_dir = isolated_dirs / "reports" / "runs"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=_die_with_parent)
    try:
        deadline = time.time() + 180
        # Kill it while a trial is training, after at least one trial finished.
        while time.time() < deadline and process.poll() is None:
            if read_index() and any(p.name.startswith(PARTIAL_PREFIX) for p in runs_dir.iterdir()):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the search did not reach its second trial")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    before = {e["run_id"] for e in read_index()}
    assert 1 <= len(before) < 3

    finished = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-3000:]
    assert "Resuming search 'killed'" in finished.stdout
    runs = load_runs(tags=["search:killed"])
    assert sorted(_tag(r, "trial:") for r in runs) == ["0", "1", "2"], "every trial once, none lost or repeated"
    assert before <= {r.run_id for r in runs}, "the trials finished before the kill were not run again"
    assert len(read_index()) == 3
    trials = (isolated_dirs / "reports" / "searches" / "killed" / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 3 and all(",COMPLETED," in line for line in trials[1:])


@pytest.mark.skipif("backbone" not in {f.name for f in dataclasses.fields(RunConfig)},
                    reason="transfer models (RunConfig.backbone) are not in this tree")
def test_a_transfer_search_runs_a_trial(digits_small, no_plots):
    space = transfer_space(backbone=["mobilenetv2"], unfreeze=[0, 1], head_units=[[], [8]])
    base = {k: v for k, v in BASE.items() if k not in ("depth", "filters", "dense_units")}
    result = search({**base, "model": "transfer", "backbone": "mobilenetv2", "weights": None, "backbone_input_size": 32,
                     "batch_size": 32}, space,
                    max_trials=1, name="transfer", data=digits_small.limit(40), verbose=0)
    [run] = result.runs
    assert run.status != "failed" and run.config["backbone"] == "mobilenetv2"
    assert set(result.best["hyperparameters"]) >= {"backbone", "unfreeze", "head_units", "learning_rate"}


def test_the_command_line_refuses_a_bad_spec_before_any_trial(tmp_path, capsys, isolated_dirs):
    from lab.studies.tuning.__main__ import main

    spec = tmp_path / "search.json"
    spec.write_text(json.dumps({"base": {"dataset": "digits"}, "space": {"learning_rate": [1e-3]}, "trials": 3}))
    assert main([str(spec)]) == 2
    assert "Unknown search spec key(s) ['trials']" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (isolated_dirs / "reports").exists() or not any((isolated_dirs / "reports").rglob("*.json"))


# -- the final retraining, once per seed ------------------------------------------------------

def test_the_final_retraining_runs_the_best_configuration_once_per_seed_and_resumes(digits_small, no_plots,
                                                                                     isolated_dirs):
    result = search(BASE, SPACE, max_trials=1, name="final", data=digits_small, verbose=0)
    final = result.retrain(seeds=2, data=digits_small, epochs=2)
    assert [(r.name, r.config["seed"], r.config["epochs"]) for r in final.runs] == [("final-best", 0, 2),
                                                                                   ("final-best", 1, 2)]
    assert all("search-final:final" in r.config["tags"] for r in final.runs)
    assert all(r.config["filters"] == result.best_hyperparameters["filters"] for r in final.runs)
    record = load_collection(final.summary_dir)
    assert record.name == "final-final" and [(m["configuration"], m["seed"]) for m in record.members] == [
        ("final-best", 0), ("final-best", 1)]
    again = result.retrain(seeds=[0, 1, 2], data=digits_small, epochs=2)
    assert [r.run_id for r in again.runs[:2]] == [r.run_id for r in final.runs] and again.runs[2].config["seed"] == 2
    assert len(read_index()) == 4, "one trial, then seeds 0 and 1, then only seed 2"


def test_the_command_line_refuses_bad_seeds_or_retrain_before_any_trial(tmp_path, capsys, isolated_dirs):
    from lab.studies.tuning.__main__ import main

    spec = tmp_path / "search.json"
    spec.write_text(json.dumps({"base": {"dataset": "digits"}, "space": {"learning_rate": [1e-3]}, "retrain": 60}))
    assert main([str(spec)]) == 2
    assert "'retrain' must map configuration fields to values" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([str(spec), "--seeds", "0"])
    assert exited.value.code == 2 and "received seeds=0" in capsys.readouterr().err
    assert read_index() == []
