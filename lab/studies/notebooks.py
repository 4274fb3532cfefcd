"""Keeping the notebooks canonical and testable: ``python -m lab.studies.notebooks {format,prepare,record}``.

* ``format [--check]``: rewrites every notebook in one canonical JSON form (nbformat, indent 1,
  sorted keys, stable cell ids), without outputs or execution counts, except the outputs of
  cells tagged ``nbval-check-output``, which nbval compares (nbval reads the tag as it reads the
  ``# NBVAL_CHECK_OUTPUT`` comment, which format turns into the tag so that students see plain
  code). It also writes what comes from the repository's URL (``[project.urls] Repository`` in
  pyproject.toml, its one place): the install cell's ``LAB_URL``, an "Open in Colab" badge in
  each notebook and in the README, and the notebooks' links into ``docs/`` as absolute URLs
  (relative ones break in Colab). Without a URL the badges are left out and a docs reference is
  plain text (`` `docs/experiments.md#e1-...` ``). ``--check`` only reports.
* ``prepare DIR``: writes copies with ``quick = True`` injected by papermill (outputs kept), the
  notebooks ``make test`` runs under nbval.
* ``record``: executes each notebook in its quick setting and stores the outputs of the checked
  cells back into the source: run it after an intentional change (a new architecture, a new
  record field), and review the diff.
* ``check-runs REPORTS_DIR``: after the notebooks ran (``make test``), fails naming every run
  whose status a change of CPU, thread count or seed could flip (``unclear_outcome``).

A checked cell shows what the code determines (shapes, class counts, parameter counts, record
fields, a configuration) and statuses only where ``check-runs`` finds them clear-cut: float
kernels differ between CPUs (AVX-512, AMX), thread counts and GPUs, so the same seed repeats a
run exactly only on the same machine, and a quick run at the edge of the divergence rule would
pass on one machine and fail on the next.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import tempfile
from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
ROOT = NOTEBOOK_DIR.parent
CHECK_TAG = "nbval-check-output"  # nbval compares these cells' outputs (with --nbval-lax, only these)
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"  # the same in a comment: format turns it into the tag
QUICK = {"quick": True}
# Colab opens a notebook from GitHub by this address; the badge is Colab's own image.
COLAB_BRANCH = "main"
COLAB_BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({})"
_BADGE = re.compile(r"\n\n\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")  # under the title line
# A docs reference in a notebook's text, in each form format writes or reads: a relative link, an
# absolute link made from any earlier URL (so a changed URL is followed), or plain text.
_DOCS_LINK = re.compile(r"\[docs/[^\]]*\]\((?:\.\./|https://github\.com/[^/\s]+/[^/\s]+/blob/[^/\s]+/)(docs/[^)\s]+)\)")
_DOCS_TEXT = re.compile(r"`(docs/[\w./-]+\.md(?:#[\w-]+)?)`")
_URL_LINE = re.compile(r"^LAB_URL = .*$", re.M)  # in the install cell (ci/install_cell.py runs it)
_GITHUB = re.compile(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?")

# How clear a quick run's status must be (``unclear_outcome``). A completed run's best validation
# accuracy passes the divergence rule's threshold (chance + three standard errors) by at least
# LEARNED_MARGIN. A stalled run (it never learned) either never passed the threshold on its training
# images either (it learned nothing at all) or stayed NEVER_MARGIN below it in validation. E6's
# all_background flag holds when the predicted foreground is at most half the flag's ratio of the
# true foreground, and its absence when it is at least twice the ratio.
LEARNED_MARGIN = 0.1
NEVER_MARGIN = 0.1


def notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The experiment notebooks, ``NN-topic.ipynb``, in order."""
    return sorted(p for p in directory.glob("[0-9][0-9]-*.ipynb"))


def parameter_names(path: Path) -> list[str]:
    """The names the notebook's ``parameters`` cells assign, in order (empty without one): the
    course's choices, then the "advanced" cell's (see ``INJECTION_CELL``)."""
    nb = nbformat.read(str(path), as_version=4)
    return [target.id for cell in nb.cells
            if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])
            for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)]


# Papermill injects a batch's values in a new cell after the FIRST cell tagged ``parameters``, or
# in place of a cell tagged ``injected-parameters`` where there is one (papermill.parameterize).
# A notebook with a second, "advanced" parameters cell would run that cell after the injection,
# and its defaults would undo the batch's values; so such a notebook carries, right after it, this
# comment cell tagged ``injected-parameters``, which papermill replaces with the batch's values.
INJECTION_CELL = "# A batch (papermill) replaces this cell with its parameter values, after both parameter cells."


def is_checked(cell) -> bool:
    """Whether nbval compares the cell's outputs (tagged ``nbval-check-output``)."""
    return cell.cell_type == "code" and CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str | None:
    """The repository's address, ``[project.urls] Repository`` in pyproject.toml (None: not set).

    Raises:
        ValueError: it is not a GitHub address, from which alone Colab opens notebooks.
    """
    import tomllib  # Python 3.11+: format is a maintainer's command, run in the kit's venv

    url = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("urls", {}).get("Repository")
    if url is None:
        return None
    if not _GITHUB.fullmatch(url):
        raise ValueError(f"[project.urls] Repository in {pyproject} must be a GitHub address such as "
                         f"https://github.com/<owner>/<repo> (Colab opens notebooks from GitHub), received {url!r}.")
    return url.removesuffix("/").removesuffix(".git")


def colab_url(url: str, notebook: str) -> str:
    """The address that opens ``notebooks/<notebook>`` of the repository at ``url`` in Colab."""
    owner, repo = _GITHUB.fullmatch(url).groups()
    return f"https://colab.research.google.com/github/{owner}/{repo}/blob/{COLAB_BRANCH}/notebooks/{notebook}"


def with_badge(markdown: str, badge_target: str | None) -> str:
    """The text without its Colab badge, then with one under the title line (if a target)."""
    markdown = _BADGE.sub("", markdown, count=1)
    if badge_target is None:
        return markdown
    title, newline, rest = markdown.partition("\n")
    return f"{title}\n\n{COLAB_BADGE.format(badge_target)}" + (f"\n{rest}" if newline else "")


def with_docs_links(markdown: str, url: str | None) -> str:
    """Docs references as absolute links into the repository at ``url``, or as plain text."""
    def written(target: str) -> str:
        page = target.partition("#")[0]
        return f"[{page}]({url}/blob/{COLAB_BRANCH}/{target})" if url else f"`{target}`"

    markdown = _DOCS_LINK.sub(lambda match: written(match.group(1)), markdown)
    return _DOCS_TEXT.sub(lambda match: written(match.group(1)), markdown)


def canonical(nb: nbformat.NotebookNode, name: str | None = None, url: str | None = None) -> nbformat.NotebookNode:
    """Returns the notebook without volatile content (outputs only where nbval checks them), its
    check markers as tags, and its badge, docs links and install cell's URL written from ``url``.

    Args:
        nb: the notebook.
        name: its file name (for the badge; None: no badge).
        url: the repository's address (``repository_url()``; None: not set).
    """
    nb = copy.deepcopy(nb)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    first_markdown = next((cell for cell in nb.cells if cell.cell_type == "markdown"), None)
    for index, cell in enumerate(nb.cells):
        cell.id = f"c{index:02d}"
        tags = list(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARKER):
            cell.source = cell.source.lstrip().removeprefix(CHECK_MARKER).lstrip("\n")
            if CHECK_TAG not in tags:
                tags.append(CHECK_TAG)
        cell.metadata = {"tags": tags} if tags else {}
        if cell.cell_type == "markdown":
            cell.source = with_docs_links(cell.source, url)
            if cell is first_markdown:
                cell.source = with_badge(cell.source, colab_url(url, name) if url and name else None)
        if cell.cell_type == "code":
            cell.source = _URL_LINE.sub(f"LAB_URL = {url!r}", cell.source)
            if is_checked(cell):
                # nbval treats a cell without an execution count as never run and refuses to
                # compare its stored outputs, so checked cells get a stable one (their position).
                cell.execution_count = index
                cell.outputs = _merge_streams(cell.outputs)
                for output in cell.outputs:
                    if "execution_count" in output:
                        output.execution_count = index
            else:
                cell.execution_count = None
                cell.outputs = []
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def _merge_streams(outputs: list) -> list:
    """Joins consecutive stdout (or stderr) chunks: how a print is split varies from run to run."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
            previous["text"] = previous["text"] + output["text"]
        else:
            merged.append(copy.deepcopy(output))
    return merged


def dumps(nb: nbformat.NotebookNode) -> str:
    """The canonical text of a notebook: nbformat's JSON (indent 1, sorted keys), newline-terminated."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def readme_with_badge(text: str, url: str | None) -> str:
    """The README with a badge opening the first notebook in Colab (none without a URL)."""
    return with_badge(text, colab_url(url, notebooks()[0].name) if url else None)


def format_notebooks(paths: list[Path], check: bool = False, readme: Path | None = ROOT / "README.md") -> list[Path]:
    """Canonicalises notebooks (and the README's badge) in place (or, with check, lists those that
    are not canonical)."""
    changed, url = [], repository_url()
    if readme is not None:
        text = readme.read_text(encoding="utf-8")
        if text != readme_with_badge(text, url):
            changed.append(readme)
            if not check:
                readme.write_text(readme_with_badge(text, url), encoding="utf-8")
    for path in paths:
        text = path.read_text(encoding="utf-8")
        wanted = dumps(canonical(nbformat.reads(text, as_version=4), path.name, url))
        if text != wanted:
            changed.append(path)
            if not check:
                path.write_text(wanted, encoding="utf-8")
    return changed


def prepare(paths: list[Path], out_dir: Path, parameters: dict | None = None) -> list[Path]:
    """Writes copies of the notebooks with the quick parameters injected (outputs kept)."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = out_dir / path.name
        papermill.execute_notebook(str(path), str(target), parameters=parameters or QUICK, prepare_only=True,
                                   progress_bar=False)
        written.append(target)
    return written


def record(paths: list[Path], kernel: str = "python3") -> None:
    """Executes each notebook quickly and stores its checked cells' outputs in the source."""
    import os

    import papermill

    from lab.system.colab import TENSORBOARD_INLINE_ENV

    for path in paths:
        format_notebooks([path], readme=None)  # checked cells are found by their tag: a marker becomes one
        with tempfile.TemporaryDirectory() as tmp:
            # The kernel inherits these: the quick runs' records go to the temporary folder, and no
            # progress bar (a widget's text where ipywidgets is installed) is stored as an output.
            os.environ["LAB_REPORTS_DIR"] = str(Path(tmp) / "reports")
            os.environ["LAB_PROGRESS"] = "0"
            os.environ[TENSORBOARD_INLINE_ENV] = "0"  # no TensorBoard server left behind per notebook
            executed = Path(tmp) / path.name
            papermill.execute_notebook(str(path), str(executed), parameters=QUICK, kernel_name=kernel,
                                       cwd=str(path.parent), progress_bar=False)
            ran = nbformat.read(executed, as_version=4)
        source = nbformat.read(path, as_version=4)
        outputs = {cell.source: cell.outputs for cell in ran.cells if is_checked(cell)}
        for cell in source.cells:
            if is_checked(cell):
                cell.outputs = outputs[cell.source]
        path.write_text(dumps(canonical(source, path.name, repository_url())), encoding="utf-8")
        print(f"recorded {path.name}")


def unclear_outcome(run) -> str | None:
    """Why a run's status is not clear-cut, or None when it is (see ``LEARNED_MARGIN``).

    A failed run is never clear; a diverged run always is (its loss became NaN or infinite, or grew
    past ten times its start). Completed and stalled runs are judged by how far their validation
    accuracy passed or missed the chance threshold, unless their validation split was too small to
    judge (``lab.runs.callbacks.can_judge``: such a run is never stalled). Runs without a chance level
    (segmentation, reconstruction, instance) are never stalled; segmentation runs are also judged
    on the margin of E6's ``all_background`` flag.

    Args:
        run: a ``lab.runs.records.Run``.
    """
    import math

    from lab.runs.callbacks import can_judge

    metrics, status = run.metrics, run.status
    if status == "failed":
        return f"failed: {metrics.get('error')}"
    if status == "diverged":
        return None  # a NaN, infinite or tenfold loss is unmistakable
    reason = metrics.get("divergence_reason") or ""
    chance = metrics.get("chance")
    if chance and can_judge(chance["threshold"]):
        best, threshold = chance.get("best_val_accuracy"), chance["threshold"]
        best = -math.inf if best is None else best
        if status == "completed" and best - threshold < LEARNED_MARGIN:
            return (f"completed only {best - threshold:+.3f} above its chance threshold {threshold:.3f} (best "
                    f"val_accuracy {best:.3f}; needs {LEARNED_MARGIN}): another CPU could find it stalled")
        if status == "stalled":
            history = run.history()
            trained = float(history["accuracy"].max()) if "accuracy" in history and len(history) else math.inf
            if trained > threshold and threshold - best < NEVER_MARGIN:
                return (f"stalled ({reason}) only {threshold - best:.3f} below its chance threshold {threshold:.3f} "
                        f"while its training accuracy reached {trained:.3f}: it was learning, and another CPU could "
                        f"find it completed")
    return _unclear_flag(run)


def _unclear_flag(run) -> str | None:
    """Why a segmentation run's all_background flag could flip, or None."""
    metrics = run.metrics
    true, predicted = metrics.get("foreground_fraction_true"), metrics.get("foreground_fraction_predicted")
    if "all_background" not in metrics or not true:
        return None
    ratio, flag = (predicted or 0.0) / true, run.config.get("background_flag_ratio", 0.1)
    if metrics["all_background"] and ratio > flag / 2:
        return f"flagged all_background with {ratio:.3f} of the true foreground predicted (flag below {flag})"
    if not metrics["all_background"] and ratio < 2 * flag:
        return f"not flagged all_background with only {ratio:.3f} of the true foreground predicted (flag below {flag})"
    return None


def check_runs(reports_dir: str | Path, *, runs: list | None = None) -> list[str]:
    """Every run recorded under ``reports_dir`` (or of ``runs``, already loaded from it) whose
    status is not clear-cut, one line each naming the run and why (empty: all clear). ``make
    test`` calls it on the notebooks' runs."""
    from lab.runs.records import load_runs

    problems = []
    for run in load_runs(reports_dir) if runs is None else runs:
        why = unclear_outcome(run)
        if why is not None:
            problems.append(f"{run.name} ({run.run_id}, tags {run.config.get('tags')}): {why}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = sub.add_parser("format")
    fmt.add_argument("--check", action="store_true")
    fmt.add_argument("paths", nargs="*", type=Path)
    prep = sub.add_parser("prepare")
    prep.add_argument("out_dir", type=Path)
    prep.add_argument("--seed", type=int, help="also inject this seed (the notebooks' checked outputs must not "
                                               "depend on it)")
    check = sub.add_parser("check-runs")
    check.add_argument("reports_dir", type=Path)
    rec = sub.add_parser("record")
    rec.add_argument("paths", nargs="*", type=Path)
    rec.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)
    if args.command == "format":
        changed = format_notebooks(args.paths or notebooks(), check=args.check)
        for path in changed:
            print(f"{'not canonical' if args.check else 'formatted'}: {path}")
        return 1 if (args.check and changed) else 0
    if args.command == "prepare":
        parameters = QUICK if args.seed is None else {**QUICK, "seed": args.seed}
        for path in prepare(notebooks(), args.out_dir, parameters):
            print(f"prepared {path}")
        return 0
    if args.command == "check-runs":
        from lab.runs.records import load_runs

        runs = load_runs(args.reports_dir)
        problems = check_runs(args.reports_dir, runs=runs)
        for problem in problems:
            print(f"unclear: {problem}")
        print(f"check-runs: {len(runs) - len(problems)} of {len(runs)} runs under {args.reports_dir} have clear-cut "
              f"statuses")
        return 1 if problems or not runs else 0  # no runs at all means the notebooks wrote elsewhere
    record(args.paths or notebooks(), kernel=args.kernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
