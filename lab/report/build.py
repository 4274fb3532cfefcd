"""``build_report``: a report of a batch, sweep, search, run ids or a tag, written to its folder
(``report.html``, ``report.md`` and ``figures/``), each file whole or not at all.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from lab.system import atomic
from lab.runs.records import Run
from lab.report.document import FIGURES, HTML_NAME, MARKDOWN_NAME, Section
from lab.report.rendering import render
from lab.report.sections import build_sections
from lab.report.sources import Source, resolve_source


@dataclasses.dataclass
class Report:
    """A written report.

    Attributes:
        source: what it was built from.
        html: the self-contained HTML file.
        markdown: the Markdown file (its figures in ``figures/`` beside it).
        figures: the figure files.
        sections: the content both files hold.
        best: the best run (None when no run completed with a value of the metric).
        results: the results table, one row per run with its run id.
    """

    source: Source
    html: Path
    markdown: Path
    figures: list[Path]
    sections: list[Section]
    best: Run | None
    results: pd.DataFrame


def build_report(source: str | os.PathLike | Sequence[str | os.PathLike] | Source, *,
                 out: str | os.PathLike | None = None, reports_dir: str | os.PathLike | None = None,
                 baseline: str | None = None) -> Report:
    """Builds the report of a batch, sweep, search, run ids or a tag, and writes it.

    Args:
        source: what to report on (see ``resolve_source``), or a resolved Source.
        out: the folder for ``report.html``, ``report.md`` and ``figures/`` (default: ``report/``
            inside the batch, sweep, search or run folder; ``reports/run-reports/<name>/`` for
            run ids and tags).
        reports_dir: the reports directory (default: the kit's, ``$LAB_REPORTS_DIR``).
        baseline: the configuration the comparison section compares the others with (a run name;
            default: the first configuration).

    Returns:
        A Report with the paths written and the content. Each file is written to a temporary
        name and renamed, the figures first and the HTML last, so an interrupted build leaves
        the previous report's files whole.

    Raises:
        UnknownSourceError: a source that names nothing (the message lists what exists).
        ValueError: a baseline that names no configuration of the source (the message lists them).

    Example:
        >>> report = build_report("e4-adam-learning-rate")
        >>> report.html   # reports/sweeps/e4-adam-learning-rate/report/report.html
    """
    from lab.runs import plots

    resolved = source if isinstance(source, Source) else resolve_source(source, reports_dir=reports_dir)
    folder = Path(out).expanduser().resolve() if out else _default_out(resolved)
    figure_dir = folder / FIGURES
    sections, figures, best, table = build_sections(resolved, baseline=baseline)
    written = []
    for name, figure in figures:
        target = figure_dir / name
        if isinstance(figure, Path):  # the record's own plot, copied as it is
            with atomic.atomic_path(target) as tmp:
                tmp.write_bytes(figure.read_bytes())
        else:
            plots.save(figure, target)
        written.append(target)
    counts = collections.Counter(run.status for run in resolved.runs)
    title = f"{resolved.label}: report"
    subtitle = (f"{len(resolved.runs)} run(s) ({', '.join(f'{n} {s}' for s, n in counts.items())}) from the run "
                f"records under {resolved.reports_dir / 'runs'}; written {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    html, markdown = render(sections, title=title, subtitle=subtitle, figure_dir=figure_dir)
    atomic.write_text(folder / MARKDOWN_NAME, markdown)
    atomic.write_text(folder / HTML_NAME, html)
    for stale in figure_dir.glob("*.png"):  # figures of an earlier report in this folder that this one lacks
        if stale not in written:
            stale.unlink()
    return Report(resolved, folder / HTML_NAME, folder / MARKDOWN_NAME, written, sections, best, table)


def _default_out(source: Source) -> Path:
    if source.folder is not None:
        return source.folder / "report"
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in source.name)[:80]
    return source.reports_dir / "run-reports" / slug

