"""Progress bars for the kit's long work: the one place that makes them (a thin layer over tqdm).

    from lab.system.progress import progress
    for image in progress(images, desc="features", unit="img"):
        ...
    with progress(total=size, desc="cifar-10.tar.gz", unit="B", unit_scale=True) as bar:
        bar.update(len(chunk))

``tqdm.auto`` picks the bar: a widget in Jupyter and Colab (where ``ipywidgets`` is installed), a
text bar on stderr in a terminal. Where neither can be drawn, nothing is written at all: tqdm's
``disable=None`` turns a text bar off when its stream is not a terminal. That is what keeps bars
out of the places whose text is kept or compared:

* a notebook kernel without ``ipywidgets`` (the kit's venv, hence papermill and nbval runs): its
  stderr is not a terminal, so no ``\\r``-redrawn bar lands in the saved outputs that nbval checks;
* batch logs, redirected output and pytest's captured streams (none is a terminal).

``LAB_PROGRESS=0`` (or ``off``/``false``/``no``) turns every bar off, also the widget ones: the
kit's batches and ``python -m lab.studies.notebooks record`` set it for the kernels they start, since their
notebooks are kept and a widget's text form would be stored in them. ``enabled=False`` (what a
caller's ``verbose=0`` maps to) turns one bar off.

A batch's notebooks run in other processes; ``wait_reporting_epochs`` follows their epoch lines,
so that a batch shows "epoch k of n" for each running job, in a terminal and in a notebook alike.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm.std import TqdmExperimentalWarning, TqdmWarning

with warnings.catch_warnings():
    # tqdm.auto warns "IProgress not found" in a kernel without ipywidgets (it then falls back to a
    # text bar, which the rule below keeps out of the outputs) and "experimental" where it picks the
    # widget; neither tells a student anything to do, and each would show as a stderr output.
    warnings.simplefilter("ignore", TqdmWarning)
    warnings.simplefilter("ignore", TqdmExperimentalWarning)
    from tqdm.auto import tqdm

ENV_VAR = "LAB_PROGRESS"
_OFF = ("0", "off", "false", "no")

__all__ = ["ENV_VAR", "bars_enabled", "progress", "wait_reporting_epochs", "write"]


def bars_enabled() -> bool:
    """Whether ``LAB_PROGRESS`` allows bars (read on every call, so a test or a kernel can set it)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in _OFF


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    unit_scale: bool = False,
    initial: float = 0,
    enabled: bool = True,
    leave: bool = True,
) -> tqdm:
    """Returns a progress bar over ``iterable``, or one to advance with ``.update(n)``.

    Use it as tqdm is used: iterate over it, or hold it in a ``with`` block (which closes it,
    also when the work raises) and call ``update``. A disabled bar costs nothing and writes nothing.

    Args:
        iterable: what to iterate over (None: a bar advanced by ``update``).
        total: the expected number of units (default: ``len(iterable)`` where it has one); None
            when it is unknown (a download without a Content-Length): then the bar shows the count
            and rate without a percentage or ETA.
        desc: what is being done, shown before the bar ("cifar-10.tar.gz", "features train").
        unit: the unit counted ("B", "img", "run").
        unit_scale: show 1.2M rather than 1234567 (for bytes, with ``unit="B"``: 1.2MB).
        initial: units already done when the bar starts (a resumed batch).
        enabled: False turns this bar off (a caller's ``verbose=0``).
        leave: keep the finished bar on screen (False: it disappears when closed).

    Returns:
        A ``tqdm`` bar (a text bar, a notebook widget, or a disabled one).
    """
    # disable=None: tqdm shows a text bar only when its stream is a terminal (see the docstring).
    disable = None if (enabled and bars_enabled()) else True
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, initial=initial,
                disable=disable, leave=leave, dynamic_ncols=True)


def write(message: str) -> None:
    """Prints a line to stdout without breaking a bar being drawn (the bar is redrawn below it).

    Args:
        message: the line, without its newline.
    """
    tqdm.write(message, file=sys.stdout)
    # Lines like a batch's [start]/[finish] are read live through pipes and logs: flush each.
    sys.stdout.flush()


# The epoch line every run prints (lab.runs.callbacks.format_epoch_line: "Epoch 2/5 | TrainLoss: ...").
_EPOCH_LINE = re.compile(rb"^Epoch (\d+)/(\d+) \|", re.M)
POLL_SECONDS = 2.0


def wait_reporting_epochs(child: subprocess.Popen, timeout: float | None, stdout: Path,
                          on_epoch: Callable[[int, int], None]) -> int | None:
    """Waits for a notebook's process (a batch job), calling ``on_epoch(done, total)`` for each
    new epoch line in the file its output goes to, so that a batch shows progress within a job.

    Args:
        child: the process.
        timeout: seconds to wait at most (None: no limit).
        stdout: the file the notebook's printed lines are written to as they come.
        on_epoch: called with the latest epoch line's numbers whenever a line was added.

    Returns:
        The process's exit code, or None when it was still running at the timeout.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0  # epoch lines reported (a notebook's second run starts again at epoch 1)
    while True:
        wait = POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
        try:
            return child.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                return None
        try:
            epochs = _EPOCH_LINE.findall(stdout.read_bytes())
        except OSError:  # not written yet
            continue
        if len(epochs) > seen:
            seen = len(epochs)
            on_epoch(int(epochs[-1][0]), int(epochs[-1][1]))
