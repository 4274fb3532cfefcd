"""The report's comparison section: each configuration's mean with its 95% interval, its
difference from the baseline with the tests behind the verdict, and the warnings, all from
``lab.runs.comparison.compare`` (the same tables a sweep's ``results.md`` and a batch's ``summary.md``
end with). It follows the results, so that the warnings sit next to the numbers they qualify.
"""

from __future__ import annotations

from typing import Sequence

from lab.runs.comparison import SHOWN_DIFFERENCES, compare
from lab.runs.records import Run
from lab.report.document import Section, Table, Text


def comparison_section(runs: Sequence[Run], baseline: str | None = None) -> Section:
    """The section "How sure are the results".

    Args:
        runs: the report's runs.
        baseline: the configuration the others are compared with (default: the first).

    Raises:
        ValueError: a baseline that names no configuration (the message lists them).
    """
    comparisons = compare(runs, baseline)
    blocks: list[Text | Table] = [Text(note) for note in comparisons.notes]
    blocks.append(Table(comparisons.summary, f"Each configuration: mean and 95% interval of every metric compared, "
                                             f"and its verdict against the baseline {comparisons.baseline.label}"))
    if not comparisons.differences.empty:
        blocks.append(Table(comparisons.differences[list(SHOWN_DIFFERENCES)],
                            f"Differences from the baseline {comparisons.baseline.label} (95% interval), "
                            f"tests and p-values (raw, then Holm-adjusted)"))
    blocks += [Text(f"Warning: {warning}") for warning in comparisons.warnings] or [Text("No warnings.")]
    return Section("How sure are the results", "comparisons", blocks)
