"""``python -m lab.report SOURCE``: one report of a batch, sweep, search or set of runs.

    python -m lab.report e4-adam-learning-rate            # a sweep, batch or search by name
    python -m lab.report reports/batches/e1-ablation-quick --out /tmp/e1-report
    python -m lab.report tag:e4                           # every run tagged e4
    python -m lab.report 20261127-153830-cnn-digits-8ddd21 20261127-154002-mlp-digits-1a2b3c

SOURCE is a batch folder or name (``reports/batches/<name>``), a sweep (``reports/sweeps/<name>``),
a search (``reports/searches/<name>``), one run folder, one or more run ids, or ``tag:NAME``; a name
found in several places is chosen with ``batch:``, ``sweep:`` or ``search:`` (``ablation:`` names
an ablation, whichever engine wrote it). An unknown source is
refused with a list of what exists.

The report holds what a course report holds, results first: the results table (every setting that
varied as a column, status with stalled, diverged and failed runs marked, best epoch, train/val/test metrics
of the runs' tasks), how sure the results are (each configuration's mean and 95% interval across
seeds or test images, its difference from the baseline, ``--baseline``, with a verdict, and the
warnings: ``lab.runs.comparison``), what varied between the runs and what was fixed (a collection's as its record
declares them; shared settings that no run's model uses are named, not listed), the overlaid
learning curves, the best run (by the metric the runs monitor, or a search's objective) with its
confusion matrix, green/red sample predictions (or masks), its highest-loss test images and
per-class scores, the efficiency table when several models are compared, the environment, and the
run ids behind every number. It is written twice with the same content: ``report.html``, one
self-contained file with its figures embedded as PNG data URIs, and ``report.md`` with the figures
in ``figures/`` beside it. Every number comes from a run record (``config.json``, ``metrics.json``,
``history.csv``, ``predictions.npz``, ``plots/``), and every table row names its run id.

A notebook calls the same function: ``build_report(sweep.summary_dir)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.report.build import build_report
from lab.report.document import FIGURES
from lab.report.sources import UnknownSourceError


def main(argv: list[str] | None = None) -> int:
    """Builds the report the command line names and prints where it is.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 written, 2 a source that names nothing or holds no run record.
    """
    parser = argparse.ArgumentParser(prog="python -m lab.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="+", help="a batch, sweep or search (name or folder), a run folder, "
                                                  "run ids, or tag:NAME")
    parser.add_argument("--out", type=Path, help="folder for report.html, report.md and figures/")
    parser.add_argument("--reports-dir", type=Path, help="the reports directory (default: $LAB_REPORTS_DIR or ./reports)")
    parser.add_argument("--baseline", help="the configuration (run name) the others are compared with "
                                           "(default: the first)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.source if len(args.source) > 1 else args.source[0], out=args.out,
                              reports_dir=args.reports_dir, baseline=args.baseline)
    except (UnknownSourceError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{report.source.label}: {len(report.source.runs)} run(s)")
    print(f"  HTML:     {report.html}")
    print(f"  Markdown: {report.markdown} (figures in {report.markdown.parent / FIGURES})")
    if report.best is not None:
        print(f"  best run: {report.best.name} ({report.best.run_id})")
    return 0
