"""Progress bars (lab.system.progress) where work is long: downloads, feature extraction, batches.

A bar is drawn on a terminal only: these tests give ``sys.stderr`` a terminal's face (``isatty``)
to see it, and check that nothing is written where no terminal is (logs, notebooks, pytest).
"""

import hashlib
import io
import sys
import types

import numpy as np
import pytest

import lab.system.download
import lab.models.features
from lab.system import progress as progress_module
from lab.system.download import DatasetNotAvailableError, fetch
from lab.system.progress import progress, write


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch) -> _Terminal:
    """stderr as a terminal, with bars allowed: what a bar writes is in the returned buffer.

    Called in the test itself: pytest's capture puts its own sys.stderr back after fixtures run.
    """
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.delenv(progress_module.ENV_VAR, raising=False)
    return screen


@pytest.fixture
def recorded_bars(monkeypatch):
    """Keeps every bar lab.system.download and lab.models.features make, to read its count and total."""
    bars = []

    def recording(*args, **kwargs):
        bars.append(progress(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(lab.system.download, "progress", recording)
    monkeypatch.setattr(lab.models.features, "progress", recording)
    return bars


def test_a_bar_on_a_terminal_counts_every_item(monkeypatch):
    terminal = _terminal(monkeypatch)
    assert list(progress(range(5), desc="work", unit="img")) == list(range(5))
    text = terminal.getvalue()
    assert "work" in text and "5/5" in text and "img" in text


@pytest.mark.parametrize("case", ["not a terminal", "enabled=False", "LAB_PROGRESS=0"])
def test_no_bar_is_written_off_a_terminal_or_when_turned_off(monkeypatch, case):
    screen = io.StringIO() if case == "not a terminal" else _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.delenv(progress_module.ENV_VAR, raising=False)
    if case == "LAB_PROGRESS=0":
        monkeypatch.setenv(progress_module.ENV_VAR, "0")
    bar = progress(range(3), desc="work", enabled=case != "enabled=False")
    assert list(bar) == [0, 1, 2], "a disabled bar must still yield every item"
    assert bar.disable and screen.getvalue() == ""


def test_write_prints_a_whole_line_to_stdout(capsys):
    write("[start] job")
    assert capsys.readouterr().out == "[start] job\n"


def test_a_download_counts_its_bytes_against_the_announced_size(tmp_path, monkeypatch, recorded_bars):
    terminal = _terminal(monkeypatch)
    content = b"x" * 3000
    source = tmp_path / "source.bin"
    source.write_bytes(content)
    target = tmp_path / "cache" / "file.bin"
    fetch(source.as_uri(), target, md5=hashlib.md5(content).hexdigest())
    [bar] = recorded_bars
    assert (bar.n, bar.total, bar.unit) == (3000, 3000, "B")
    assert "file.bin" in terminal.getvalue()


def test_a_download_cut_short_is_an_error_and_leaves_only_its_part_file(tmp_path, monkeypatch, quick_downloads,
                                                                        fault_server, recorded_bars):
    from download_servers import CONTENT

    _terminal(monkeypatch)
    target = tmp_path / "cache" / "file.bin"
    with pytest.raises(DatasetNotAvailableError, match=f"cut short after {len(CONTENT) // 2} of {len(CONTENT)} bytes"):
        fetch(f"{fault_server.base}/short/file.bin", target)
    # The bytes received are kept for the next call to resume from, never under the file's name.
    assert [path.name for path in target.parent.iterdir()] == ["file.bin.part"]
    # One bar per attempt (this server ignores the Range asked for, so the second starts again).
    assert [(bar.n, bar.total) for bar in recorded_bars] == [(len(CONTENT) // 2, len(CONTENT))] * 2


def test_feature_extraction_counts_every_image_of_every_split_and_pass(monkeypatch, recorded_bars):
    terminal = _terminal(monkeypatch)
    import keras

    from lab.data.datasets import Dataset
    from lab.models.features import clear_memory_cache, compute_features
    from lab.models.transfer import transfer_model

    rng = np.random.default_rng(0)

    def split(n):
        return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), np.arange(n, dtype=np.int64) % 3

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(12), split(6), split(6)
    data = Dataset("tiny", x_train, y_train, x_val, y_val, x_test, y_test, ["a", "b", "c"])
    model = transfer_model((8, 8, 1), 3, backbone="resnet18", weights=None, backbone_input_size=32)
    augmenter = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=0)])
    clear_memory_cache()
    try:
        # Two augmented passes: the clean training split, two augmented ones, then val and test.
        compute_features(model, data, cache=None, passes=2, augmenter=augmenter, batch_size=5)
        [bar] = recorded_bars
        assert (bar.n, bar.total) == (12 * 3 + 6 + 6, 12 * 3 + 6 + 6)
        assert "features" in terminal.getvalue()
        compute_features(model, data, cache=None, progress_bar=False)
        assert recorded_bars[1].disable
    finally:
        clear_memory_cache()


def test_a_batch_prints_a_line_per_start_and_finish_and_counts_done_over_total(monkeypatch, capsys):
    terminal = _terminal(monkeypatch)
    from lab.studies.batch import _Progress

    tracker = _Progress(total=3, skipped=1, name="grid")
    job = types.SimpleNamespace(label="lr=0.01")
    tracker.started(job)
    tracker.finished(job, "completed", 12.0, None)
    tracker.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[start] lr=0.01  (1/3 done, 1 running)", "[completed] lr=0.01 in 12 s  (2/3 done, 0 running)"]
    assert tracker.bar.n == 2 and tracker.bar.total == 3
    assert "grid" in terminal.getvalue() and "2/3" in terminal.getvalue()


def test_a_batch_job_reports_each_epoch_while_its_notebook_runs(tmp_path, monkeypatch):
    """The notebook's printed lines (papermill --stdout-file) are read while it runs: epoch k of n
    per job, a second run's epochs too, before the job ends."""
    import subprocess
    import sys

    from lab.system import progress as progress_module

    monkeypatch.setattr(progress_module, "POLL_SECONDS", 0.05)
    stdout = tmp_path / "stdout.txt"
    script = (
        "import pathlib, time\n"
        f"out = pathlib.Path({str(stdout)!r})\n"
        "for line in ['Epoch 1/2 | TrainLoss: 1.0', 'Epoch 2/2 | TrainLoss: 0.5', 'a table\\nEpoch 1/3 | TrainLoss: 2']:\n"
        "    with out.open('a') as f: f.write(line + '\\n')\n"
        "    time.sleep(0.5)\n")
    child = subprocess.Popen([sys.executable, "-c", script])
    reported = []
    assert progress_module.wait_reporting_epochs(
        child, 60, stdout, lambda done, total: reported.append((done, total, child.poll()))) == 0
    assert [(d, t) for d, t, _ in reported] == [(1, 2), (2, 2), (1, 3)]
    assert [running for _, _, running in reported][:2] == [None, None]  # reported while the notebook ran


def test_a_job_past_its_timeout_is_left_to_the_caller(tmp_path):
    import subprocess
    import sys

    from lab.system.progress import wait_reporting_epochs

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert wait_reporting_epochs(child, 0.2, tmp_path / "missing.txt", lambda d, t: None) is None
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
