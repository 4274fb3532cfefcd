"""The report's sections written out: as one self-contained HTML page (figures embedded as PNG
data URIs, tables from pandas' Styler) and as Markdown (pipe tables, figures linked), both from
the Jinja2 templates in ``lab/report/templates/`` (``report.html`` with its ``report.css``, and
``report.md``).
"""

from __future__ import annotations

import base64
import functools
import math
from pathlib import Path
from typing import Any, Callable

import jinja2
import pandas as pd
from markupsafe import Markup

from lab.report.document import FIGURES, MARKED, Figure, Section, Table

TEMPLATES = "templates"  # the folder of lab.report that holds them (package data: see pyproject.toml)
HTML_PAGE, CSS_FILE, MARKDOWN_PAGE = "report.html", "report.css", "report.md"


@functools.cache
def _environment(markdown: bool) -> jinja2.Environment:
    """The templates' environment: the HTML autoescaped (a run name or an error message is text,
    never markup), the Markdown as written, with its final newline."""
    return jinja2.Environment(loader=jinja2.PackageLoader("lab.report", TEMPLATES), autoescape=not markdown,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=markdown)


def template_source(name: str) -> str:
    """The text of one of the report's templates (``report.html``, ``report.css``, ``report.md``).

    Args:
        name: the template's file name in ``lab/report/templates/``.

    Returns:
        The template as written, before rendering.
    """
    environment = _environment(name == MARKDOWN_PAGE)
    return environment.loader.get_source(environment, name)[0]


def number(value: Any, digits: int = 4) -> str:
    """How both files show a float: ``digits`` decimals (a table's column may ask for fewer: the
    digits its split supports), or four in scientific notation from a million up (a diverged
    run's loss of 3.8e+08 would otherwise widen its column by half)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4e}" if abs(value) >= 1e6 else f"{value:.{digits}f}"


def _formatter(table: Table, column: Any) -> Callable[[Any], str]:
    digits = table.digits.get(column, 4)
    return lambda value: number(value, digits)


def _float_columns(frame: pd.DataFrame) -> list:
    return [c for c in frame.columns if frame[c].dtype.kind == "f"]


def _table_html(table: Table, uuid: str) -> str:
    """A pandas Styler table: numbers to 4 decimals and right-aligned, cells HTML-escaped, long
    texts wrapped, marked rows shaded with their status in bold."""
    frame = table.frame

    def shade(row: pd.Series) -> list[str]:
        status = table.marked.get(row.name)
        style = MARKED.get(status, "")
        return [style + (" font-weight: bold;" if column == "status" and status else "") for column in row.index]

    numeric = [c for c in frame.columns if frame[c].dtype.kind in "iuf" or str(frame[c].dtype) == "Int64"]
    styler = (frame.style.set_uuid(uuid).hide(axis="index")
              .format(escape="html", na_rep="")
              .format({column: _formatter(table, column) for column in _float_columns(frame)}, na_rep="")
              # A break opportunity after each underscore lets long column names wrap in a narrow column.
              .format_index(lambda name: str(name).replace("_", "_\u200b"), escape="html", axis=1)
              .map(lambda value: "white-space: normal; min-width: 14rem;"
                   if isinstance(value, str) and len(value) > 40 else ""))
    names = [c for c in ("name", "run_id", "run_ids") if c in frame.columns]
    if names:  # a run's name and id may break (at a hyphen first) when the table is wide: it fits the page
        styler = styler.set_properties(subset=names, **{"white-space": "normal", "overflow-wrap": "anywhere",
                                                        "min-width": "5rem"})
    if numeric:
        styler = styler.set_properties(subset=numeric, **{"text-align": "right"})
    if table.marked:
        styler = styler.apply(shade, axis=1)
    return styler.to_html()


def _table_markdown(table: Table) -> str:
    """The same table for Markdown (pandas' to_markdown: tabulate), numbers as in the HTML
    (``number``), the status of marked rows in bold."""
    frame = table.frame.copy()
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "iuf" or str(frame[c].dtype) == "Int64"]
    for column in _float_columns(frame):
        frame[column] = frame[column].map(_formatter(table, column))
    if table.marked and "status" in frame:
        frame["status"] = [f"**{status}**" if i in table.marked else status
                           for i, status in enumerate(frame["status"])]
    # The numbers are already formatted: tabulate must not parse and reformat them. A table without
    # rows gets no alignments: tabulate 0.9 (Colab's) fails on one per column there.
    align = ["right" if c in numeric else "left" for c in frame.columns] if len(frame) else None
    return frame.to_markdown(index=False, disable_numparse=True, missingval="", colalign=align)


def render(sections: list[Section], *, title: str, subtitle: str, figure_dir: Path) -> tuple[str, str]:
    """The HTML (figures embedded as base64 PNG data URIs) and Markdown (figures linked) of a report."""
    count = 0
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Table):
                count += 1
                block.html = Markup(_table_html(block, f"t{count}"))  # Styler escaped every cell
                block.markdown = _table_markdown(block)
            elif isinstance(block, Figure):
                data = (figure_dir / block.name).read_bytes()
                block.data_uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    values = dict(title=title, subtitle=subtitle, sections=sections)
    html = _environment(markdown=False).get_template(HTML_PAGE).render(**values)
    markdown = _environment(markdown=True).get_template(MARKDOWN_PAGE).render(figures=FIGURES, **values)
    return html, markdown
