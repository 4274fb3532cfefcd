"""MkDocs hooks (``hooks:`` in mkdocs.yml): what the site generates, and checks that fail a
``mkdocs build --strict`` (a warning logged here counts as one).

- ``<!-- import-graph -->`` on a page becomes the output of ``benchmarks/import_graph.py
  --import-time``, run while the site is built, so the graph shown is always the current one; a
  cycle in it (the script exits 1) fails the build.
- The architecture page must name every module of ``lab/`` in backticks, so a module added
  without its line there fails the build instead of leaving the table stale.

This file is excluded from the site (``exclude_docs``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("mkdocs.plugins.lab_docs")

ROOT = Path(__file__).resolve().parent.parent
IMPORT_GRAPH = "<!-- import-graph -->"
ARCHITECTURE_PAGE = "architecture.md"


def lab_modules() -> list[str]:
    """Every module of the package as a dotted name (``__main__`` and the root ``lab`` left out)."""
    names = []
    for path in sorted((ROOT / "lab").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        if len(parts) > 1:
            names.append(".".join(parts))
    return names


def import_graph() -> str:
    """The import-time graph as a fenced block; a warning (a failed strict build) if it has cycles."""
    script = ROOT / "benchmarks" / "import_graph.py"
    result = subprocess.run([sys.executable, str(script), "--import-time"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        log.warning("benchmarks/import_graph.py --import-time exited %s:\n%s%s", result.returncode,
                    result.stdout[-2000:], result.stderr[-2000:])
    return "```text\n" + result.stdout.strip() + "\n```"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if IMPORT_GRAPH in markdown:
        markdown = markdown.replace(IMPORT_GRAPH, import_graph())
    if page.file.src_uri == ARCHITECTURE_PAGE:
        named = set(re.findall(r"`(lab(?:\.\w+)+)`", markdown))
        missing = [name for name in lab_modules() if name not in named]
        if missing:
            log.warning("docs/%s does not name these modules of lab/ (add a line for each to its table): %s",
                        ARCHITECTURE_PAGE, ", ".join(missing))
    return markdown
