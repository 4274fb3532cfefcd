"""Reports of a batch, sweep, search or set of runs: ``build_report(source)`` in a notebook,
``python -m lab.report SOURCE`` on the command line (``lab.report.cli`` says what SOURCE can be and
what a report holds).

One module per step, read in this order:

- ``lab.report.sources``: what a SOURCE names, resolved to its run records (``resolve_source``).
- ``lab.report.tables``: the tables read from the records (results, what varied and what was
  fixed, best run, per-class scores, environments).
- ``lab.report.figures``: the overlaid learning curves and figures drawn from predictions.
- ``lab.report.comparisons``: how sure the results are (intervals, verdicts against a baseline,
  warnings), from ``lab.runs.comparison``.
- ``lab.report.sections``: the sections of text, tables and figures (``build_sections``), made of
  the blocks of ``lab.report.document``.
- ``lab.report.rendering``: the sections as HTML and Markdown, through the Jinja2 templates in
  ``lab/report/templates/``.
- ``lab.report.build``: ``build_report``, which writes the files whole.
- ``lab.report.cli``: ``python -m lab.report``.

Every name below is importable from ``lab.report`` itself.
"""

from __future__ import annotations

from lab.report.build import Report, build_report
from lab.report.cli import main
from lab.report.comparisons import comparison_section
from lab.report.document import FIGURES, HTML_NAME, MARKDOWN_NAME, MARKED, Figure, Section, Table, Text
from lab.report.rendering import number, render, template_source
from lab.report.sections import build_sections
from lab.report.sources import FOLDERS, KINDS, Source, UnknownSourceError, available, resolve_source
from lab.report.tables import (DATA_SETTINGS, DERIVED, NOT_SETTINGS, PER_CLASS_KEYS, best_run, environment_table,
                               per_class_scores, results, run_settings, settings, unused_by_the_models,
                               varied_and_fixed)

__all__ = [
    "DATA_SETTINGS", "DERIVED", "FIGURES", "FOLDERS", "HTML_NAME", "KINDS", "MARKDOWN_NAME", "MARKED", "NOT_SETTINGS",
    "PER_CLASS_KEYS",
    "Figure", "Report", "Section", "Source", "Table", "Text", "UnknownSourceError", "available", "best_run",
    "build_report", "build_sections", "comparison_section", "environment_table", "main", "number", "per_class_scores", "render",
    "resolve_source", "results", "run_settings", "settings", "template_source", "unused_by_the_models",
    "varied_and_fixed",
]
