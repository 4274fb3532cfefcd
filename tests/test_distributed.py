"""Scale-out on 127.0.0.1: keras-tuner's chief and two workers finish one search together, and
two MultiWorkerMirroredStrategy workers train like one worker. Each process is a subprocess
with a deadline; whatever happens, none is left running."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from lab.system import hardware
from lab.runs.records import load_runs, read_index

# The E1 CNN, two narrow blocks, on 200 real digits per split.
TINY = dict(dataset="digits", limit=200, model="cnn", depth=2, filters=8, dense_units=16, batch_size=32,
            early_stopping_patience=None, verbose=0)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:  # a killed pytest must not leave training processes behind
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def processes(commands: list[tuple[list[str], dict[str, str], Path]]):
    """Starts every (command, extra environment, log file) and stops any still running at the end."""
    started, handles = [], []
    try:
        for command, extra, log in commands:
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
            handles.append(open(log, "wb"))
            started.append(subprocess.Popen(command, env=env, stdout=handles[-1], stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent))
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()
        for handle in handles:
            handle.close()


def wait_all(started: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    deadline = time.time() + timeout
    for process, log in zip(started, logs):
        try:
            process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{log.name} still running after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        assert process.returncode == 0, f"{log.name} exited {process.returncode}:\n{log.read_text()[-3000:]}"


def test_is_chief_follows_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert hardware.is_chief() and hardware.task_info() is None
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for task, chief in (({"type": "worker", "index": 0}, True), ({"type": "worker", "index": 1}, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": workers, "task": task}))
        assert hardware.is_chief() is chief
    with_chief = {"chief": ["127.0.0.1:3"], **workers}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}}))
    assert not hardware.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": with_chief, "task": {"type": "chief", "index": 0}}))
    assert hardware.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON"):
        hardware.is_chief()


@pytest.mark.slow
def test_two_multiworker_workers_train_like_one(tmp_path):
    """Two MultiWorkerMirroredStrategy workers (global batch 32, 16 each) end where one worker
    with the same global batch ends, and only the chief writes a run record."""
    # steps_per_execution is left at its default (16): with two replicas the runner compiles one
    # step per call (keras-team/keras#19246); the one-worker reference keeps 16.
    config = {**TINY, "epochs": 2, "distribute": "multiworker", "name": "mwms"}
    (tmp_path / "run.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "lab.studies.distributed", str(tmp_path / "run.json")]
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    two, one = tmp_path / "two-workers", tmp_path / "one-worker"
    scratch = tmp_path / "tmp"  # the workers' temporary folders go here
    scratch.mkdir()
    jobs = [(command, {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                       "LAB_REPORTS_DIR": str(two), "TMPDIR": str(scratch)}, tmp_path / f"worker{i}.log")
            for i in range(2)]
    # The reference: the same strategy with one worker (no TF_CONFIG). The same strategy, so
    # Keras reads the data the same way (it takes one batch for its shapes first).
    jobs.append((command, {"LAB_REPORTS_DIR": str(one)}, tmp_path / "single.log"))
    with processes(jobs) as started:
        wait_all(started, [log for _, _, log in jobs], timeout=240)
    assert "worker 1: done (the chief keeps the run record)" in (tmp_path / "worker1.log").read_text()
    [distributed] = load_runs(two)  # one record for the two workers
    [single] = load_runs(one)
    assert distributed.status == single.status == "completed"
    assert (distributed.metrics["steps_per_execution"], single.metrics["steps_per_execution"]) == (1, 16)
    assert list(scratch.glob("lab-worker-*")) == [], "the non-chief worker's run folder is deleted"
    for key in ("train_loss", "val_loss", "test_loss", "val_accuracy", "test_accuracy"):
        assert distributed.metrics[key] == pytest.approx(single.metrics[key], abs=1e-4), key
    a = keras.models.load_model(distributed.path / "model.keras", compile=False).get_weights()
    b = keras.models.load_model(single.path / "model.keras", compile=False).get_weights()
    moved = max(np.abs(w).max() for w in b)
    assert len(a) == len(b) and moved > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-4)


@pytest.mark.slow
def test_chief_and_two_workers_finish_one_search(tmp_path):
    """keras-tuner's own distributed mode: a chief serves the oracle, two workers train; every
    trial runs exactly once, on one of the workers, and both workers take part."""
    max_trials = 4
    spec = {"base": {**TINY, "limit": 100, "epochs": 1}, "space": {"learning_rate": {"log": [1e-3, 1e-2]},
                                                                   "filters": [4, 8]},
            "tuner": "random", "max_trials": max_trials, "name": "together", "verbose": 0}
    (tmp_path / "search.json").write_text(json.dumps(spec))
    [port] = free_ports(1)
    command = [sys.executable, "-m", "lab.studies.tuning", str(tmp_path / "search.json")]
    common = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port),
              "LAB_REPORTS_DIR": str(tmp_path / "reports")}
    jobs = [(command, {**common, "KERASTUNER_TUNER_ID": tuner_id}, tmp_path / f"{tuner_id}.log")
            for tuner_id in ("chief", "tuner0", "tuner1")]
    with processes(jobs) as started:
        wait_all(started, [log for _, _, log in jobs], timeout=300)
    runs = load_runs(tmp_path / "reports", tags=["search:together"])
    trial_ids = sorted(_tag(r, "trial:") for r in runs)
    assert trial_ids == [str(i) for i in range(max_trials)], "every trial ran, none twice"
    assert len(read_index(tmp_path / "reports")) == max_trials
    workers = {_tag(r, "tuner:") for r in runs}
    assert workers == {"tuner0", "tuner1"}, "both workers trained, the chief only served"
    assert len({_tag(r, "search-id:") for r in runs}) == 1
    folder = tmp_path / "reports" / "searches" / "together"
    best = json.loads((folder / "best_hyperparameters.json").read_text())
    assert best["run_id"] in {r.run_id for r in runs} and (folder / "best_model.keras").exists()
    assert "best val_accuracy" in (tmp_path / "chief.log").read_text()


def _tag(run, prefix: str) -> str | None:
    return next((t[len(prefix):] for t in run.config["tags"] if t.startswith(prefix)), None)


def test_the_worker_entry_point_refuses_a_run_that_is_not_multiworker(tmp_path, capsys):
    from lab.studies.distributed import main, train_worker

    with pytest.raises(ValueError, match="distribute='multiworker'"):
        train_worker({**TINY, "epochs": 1})
    (tmp_path / "run.json").write_text(json.dumps({**TINY, "image_size": 16}))
    assert main([str(tmp_path / "run.json")]) == 2
    assert "'image_size' is now called pipeline_size" in capsys.readouterr().err
