"""Writes that are all-or-nothing: a reader never sees a half-written file.

Everything the kit writes (downloads, run records, tables, plots) goes to a temporary file in
the same directory first and is then renamed over the target. ``os.replace`` is atomic on one
file system, so an interrupted process leaves either the old file or the new one, plus at worst
a ``.tmp-*`` file that nothing reads.

The files are created with the permissions ``open()`` gives (0666 less the umask: 0644 as a rule),
not the 0600 of ``tempfile.mkstemp``, so that a report or a record can be read by the course's
other users and served as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``target``; renames it to ``target`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and the
    target is left untouched.

    Example:
        >>> with atomic_path("reports/table.csv") as tmp:
        ...     frame.to_csv(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(target: Path) -> Path:
    """Creates an empty, uniquely named file beside ``target``, with the permissions ``open()``
    would give it (``tempfile.mkstemp`` makes 0600 files, which the rename would publish)."""
    while True:
        # Keep the real suffix last so that libraries choosing a format by extension still work.
        tmp = target.parent / f".tmp-{target.stem}-{uuid.uuid4().hex[:8]}{target.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue  # another writer drew the same name: draw again
        os.close(fd)
        return tmp


def write_text(target: str | os.PathLike, text: str) -> None:
    """Atomically writes ``text`` (UTF-8) to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, data: Any) -> None:
    """Atomically writes ``data`` as indented, key-sorted JSON (stable diffs)."""
    write_text(target, json.dumps(data, indent=2, sort_keys=True, default=json_default) + "\n")


def append_line(target: str | os.PathLike, line: str) -> None:
    """Appends one line to ``target`` with a single ``write`` on an O_APPEND descriptor.

    One small write to a file opened for appending lands whole or not at all on a local file
    system, so concurrent writers never interleave and an interrupted writer leaves at most a
    truncated final line, which readers skip (see ``records.read_index``). A new line is
    started first if such a truncated line is there, so it cannot swallow the next record.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    if target.exists() and target.stat().st_size:
        with open(target, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(target: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a JSON-lines file written by ``append_line``, skipping a line cut short by a crash."""
    target = Path(target)
    if not target.exists():
        return []
    entries = []
    for line in target.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted write
    return entries


def json_default(value: Any) -> Any:
    """Makes NumPy scalars, arrays and paths JSON-serialisable."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Cannot serialise {type(value).__name__} to JSON: {value!r}")


@contextlib.contextmanager
def exclusive(target: str | os.PathLike, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Holds an exclusive lock on ``<target>.lock`` while the block runs: one process at a time.

    POSIX ``flock`` (Linux, macOS): a process that dies releases its lock, so none is left held.
    The holder removes the ``.lock`` file before it lets go, so nothing is left behind either; a
    waiter that then wakes holding the removed file's lock tries again on the path's new file (the
    usual check that the file locked is still the one at the path). On Windows, where the kit is
    not supported, there is no lock.

    Args:
        target: the file the lock guards.
        on_wait: called once if another process holds the lock, before waiting for it.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    target = Path(target)
    lock = target.with_name(target.name + ".lock")
    waited = False
    while True:
        handle = open(lock, "a")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait()
                waited = True
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:  # interrupted while waiting: the file is closed, the lock never held
            handle.close()
            raise
        if current:
            break
        handle.close()  # the holder removed this file before this process got its lock: lock the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
