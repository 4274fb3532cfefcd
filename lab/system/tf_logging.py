"""TensorFlow's C++ start-up lines kept out of notebook outputs and batch logs.

TensorFlow's C++ code logs to file descriptor 2, under the level set by ``TF_CPP_MIN_LOG_LEVEL``
(0 all, 1 no INFO, 2 no WARNING, 3 no ERROR; FATAL always shows). The kit sets it to 3 unless it is
set already (``lab/__init__.py``): the ERROR lines of a CPU machine's start-up (``failed call to
cuInit``) and of tf.data (``NodeDef mentions attribute use_unbounded_threadpool``) are noise, and
every TensorFlow error a run can act on is raised as a Python exception anyway. The kit's own
warnings and Python's are not affected; set ``TF_CPP_MIN_LOG_LEVEL=0`` to see every line again
(when a GPU is not found, for example).

The level does not reach the lines TensorFlow writes while it is imported, before its logging is
set up: ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``,
then oneDNN, CUDA-stub and CPU-feature notices. A notebook kernel captures file descriptor 2, so
they would land in the first cell that imports the kit. ``install`` therefore wraps the first
``import tensorflow`` (by the kit or by anyone, through ``sys.meta_path``): file descriptor 2 goes
to a temporary file for the import, then the lines it received are written back except those the
level hides (``filter_native_log``). Python's own ``sys.stderr`` keeps writing straight through.
At level 0 nothing is captured.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

ENV_VAR = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "3"
_LEVELS = "IWEF"
_PREINIT_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# A C++ log record: absl's "I0000 00:00:1795794046.848462   23368 port.cc:153] ..." or TensorFlow's
# older "2026-11-27 15:46:12.249259: I external/.../cudart_stub.cc:31] ...".
_RECORD = re.compile(r"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]\s]+\]"
                     r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<tf>[IWEF]) [^\]\s]+\])")


def min_log_level() -> int:
    """The level ``TF_CPP_MIN_LOG_LEVEL`` asks for (0 when unset or not a number 0-3)."""
    value = os.environ.get(ENV_VAR, "0").strip()
    return int(value) if value in ("0", "1", "2", "3") else 0


def filter_native_log(text: str, min_level: int) -> str:
    """Returns ``text`` without the C++ log records below ``min_level``, as TensorFlow would filter them.

    A line that is not a record (a record's second line, like the CPU-feature notice's "To enable
    the following instructions") goes with the record before it; lines before any record are kept.
    The pre-initialisation banner goes when INFO is hidden. FATAL records are always kept.

    Args:
        text: what was written to file descriptor 2.
        min_level: 0-3, as ``TF_CPP_MIN_LOG_LEVEL``.

    Returns:
        The lines to show, with their line ends.
    """
    kept: list[str] = []
    keep = True
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if bare == _PREINIT_BANNER:
            if min_level < 1:
                kept.append(line)
            continue
        record = _RECORD.match(bare)
        if record:
            level = _LEVELS.index(record.group("absl") or record.group("tf"))
            keep = level >= min_level or level == _LEVELS.index("F")
        if keep:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def filtered_native_stderr(min_level: int) -> Iterator[None]:
    """Within the block, C++ output to file descriptor 2 is held, then written back filtered.

    Python's ``sys.stderr``, where it writes to descriptor 2, is pointed at the original for the
    block, so Python warnings and tracebacks pass straight through and in order.

    Args:
        min_level: the level applied to the held lines (``filter_native_log``).
    """
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    saved = os.dup(2)
    python_stderr = sys.stderr
    try:
        uses_fd2 = python_stderr is not None and python_stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):  # a kernel's stream has no descriptor
        uses_fd2 = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        if uses_fd2:
            sys.stderr = open(saved, "w", closefd=False, buffering=1, encoding=python_stderr.encoding,
                              errors=python_stderr.errors)
        try:
            yield
        finally:
            if uses_fd2:
                stand_in = sys.stderr
                stand_in.flush()
                sys.stderr = python_stderr
                # A logging handler made during the block (TensorFlow's own, at import) holds the
                # stand-in, whose descriptor is closed below: point it at the real stream again, or
                # its later warnings fail with "Bad file descriptor".
                _repoint_handlers(stand_in, python_stderr)
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            shown = filter_native_log(held.read().decode("utf-8", errors="replace"), min_level)
            if shown:
                os.write(2, shown.encode("utf-8"))


def _repoint_handlers(old_stream, new_stream) -> None:
    """Every logging stream handler writing to ``old_stream`` writes to ``new_stream`` instead."""
    loggers = [logging.getLogger(), *(value for value in logging.Logger.manager.loggerDict.values()
                                      if isinstance(value, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old_stream:
                handler.setStream(new_stream)


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` inside ``filtered_native_stderr``."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The real loader stays the module's, for importlib.resources and reloads.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with filtered_native_stderr(min_log_level()):
            self._loader.exec_module(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders once, and wraps its loader in ``_QuietLoader``."""

    def find_spec(self, fullname: str, path, target=None):
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: later imports find the module in sys.modules
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Sets ``TF_CPP_MIN_LOG_LEVEL`` (unless set) and filters the lines of the first TensorFlow import.

    Does nothing more where TensorFlow is already imported, or at level 0. Safe to call again.
    """
    os.environ.setdefault(ENV_VAR, DEFAULT_LEVEL)
    if "tensorflow" in sys.modules or min_log_level() == 0:
        return
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
