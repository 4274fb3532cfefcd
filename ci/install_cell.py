"""Runs a notebook's install cell (the code cell starting ``# In Colab, install the kit first``).

``make test-colab`` installs the kit into its Colab-like environment with this, so that the lane
tests the very code a student runs in Colab, not a copy of it. It runs it as a student without
the repository's address would: without LAB_REPO, in a folder holding the kit's wheel (as if
uploaded to the session)::

    cd build/colab/dist && python ../../../ci/install_cell.py ../../../notebooks/01-cnn-regularisation.ipynb

(``LAB_REPO=/path/to/repo`` or a pip URL installs from there instead.)

The cell runs in this interpreter (``sys.executable`` is the environment's Python, as it is the
kernel's in Colab). Standard library only: the kit is not installed when this runs.
``tests/test_install_cell.py`` checks that every notebook carries the same cell.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MARKER = "# In Colab, install the kit first"


def install_cell(notebook: Path) -> str:
    """Returns the source of the notebook's install cell.

    Args:
        notebook: path of an ``.ipynb`` file.

    Returns:
        The cell's source text.

    Raises:
        ValueError: the notebook has no such cell, or more than one.
    """
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    sources = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    found = [source for source in sources if source.startswith(MARKER)]
    if len(found) != 1:
        raise ValueError(f"{notebook}: expected one code cell starting {MARKER!r}, found {len(found)}")
    return found[0]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: [LAB_REPO=<pip URL, folder or archive>] {Path(__file__).name} NOTEBOOK", file=sys.stderr)
        return 2
    source = install_cell(Path(argv[0]))
    exec(compile(source, f"<install cell of {argv[0]}>", "exec"), {"__name__": "__main__"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
