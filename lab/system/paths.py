"""Every path the kit reads or writes, defined in one place.

Datasets are cached under ``data/`` and run outputs go to ``reports/``, both relative to the
current working directory (the repository root when run through ``make``), unless the
environment variables ``LAB_DATA_DIR`` / ``LAB_REPORTS_DIR`` say otherwise. Functions, not
module constants, so that a test or a notebook that changes the variable is obeyed at once.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LAB_DATA_DIR"
REPORTS_DIR_ENV = "LAB_REPORTS_DIR"


def data_dir() -> Path:
    """Returns the dataset cache directory (``$LAB_DATA_DIR`` or ``./data``), creating it."""
    path = Path(os.environ.get(DATA_DIR_ENV, "data")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_dir(*, create: bool = True) -> Path:
    """Returns the run-output directory (``$LAB_REPORTS_DIR`` or ``./reports``), creating it
    unless ``create`` is False (for readers, see ``runs_dir``)."""
    path = Path(os.environ.get(REPORTS_DIR_ENV, "reports")).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir(reports: str | os.PathLike | None = None, *, create: bool = True) -> Path:
    """Returns the folder holding one subfolder per run, and the run index.

    Args:
        reports: the reports directory (default: ``reports_dir()``).
        create: make the folder (and the reports directory). Readers pass False: looking in a
            mistyped folder must not create it.
    """
    path = Path(reports).expanduser().resolve() if reports else reports_dir(create=create)
    path = path / "runs"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
