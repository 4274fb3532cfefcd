"""A report as a document: sections of text, tables and figures, and the files it is written to.

``lab.report.sections`` fills these blocks from the run records; ``lab.report.rendering`` writes
the same blocks twice, as HTML and as Markdown.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

HTML_NAME, MARKDOWN_NAME, FIGURES = "report.html", "report.md", "figures"
# The statuses (lab.runs.records.STATUSES) whose table rows are shaded, and how (the HTML; the Markdown
# sets the status in bold).
MARKED = {"diverged": "background-color: #ffebe9;", "failed": "background-color: #eaeef2;",
          "stalled": "background-color: #fff8c5;"}


@dataclasses.dataclass
class Text:
    text: str
    kind: str = "text"


@dataclasses.dataclass
class Table:
    """A table block; ``marked`` maps a row position to the status that shades it; a ``collapsed``
    one is closed in the HTML page until clicked (the Markdown shows it whole)."""

    frame: pd.DataFrame
    caption: str = ""
    marked: dict[int, str] = dataclasses.field(default_factory=dict)
    kind: str = "table"
    html: str = ""
    markdown: str = ""
    collapsed: bool = False
    digits: dict[str, int] = dataclasses.field(default_factory=dict)  # column -> decimals (default: four)


@dataclasses.dataclass
class Figure:
    name: str  # its file under figures/
    caption: str
    kind: str = "figure"
    data_uri: str = ""


@dataclasses.dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Text | Table | Figure]
