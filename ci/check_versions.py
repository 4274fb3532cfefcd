"""Exits with an error naming every package of a constraints file whose installed version differs.

``make test-colab`` runs it after installing the kit and the test tools: Colab's packages must
still be at Colab's versions (``ci/colab-constraints.txt``), or the lane would test something
other than Colab::

    python ci/check_versions.py ci/colab-constraints.txt
"""

from __future__ import annotations

import importlib.metadata
import sys

from packaging.requirements import Requirement


def moved(constraints_file: str) -> list[str]:
    """The pins of a constraints file that the installed packages do not satisfy.

    Args:
        constraints_file: lines ``name==version`` (comments and blank lines ignored).

    Returns:
        One ``"name installed (wanted)"`` per package that is missing or at another version.
    """
    problems = []
    with open(constraints_file, encoding="utf-8") as file:
        for line in file:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pin = Requirement(line.strip())
            try:
                installed = importlib.metadata.version(pin.name)
            except importlib.metadata.PackageNotFoundError:
                installed = "missing"
            if installed == "missing" or not pin.specifier.contains(installed, prereleases=True):
                problems.append(f"{pin.name} {installed} (wanted {pin.specifier})")
    return problems


if __name__ == "__main__":
    problems = moved(sys.argv[1])
    if problems:
        sys.exit(f"Installed versions differ from {sys.argv[1]}: {', '.join(problems)}")
