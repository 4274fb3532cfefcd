"""Clean notebooks: parameters papermill reads, references to files that exist, each figure shown
once, and no TensorFlow start-up lines in outputs (lab.runs.plots, lab.system.tf_logging, the notebooks)."""

import ast
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lab.studies.notebooks import NOTEBOOK_DIR, notebooks, parameter_names
from lab.system.tf_logging import filter_native_log, filtered_native_stderr

ROOT = NOTEBOOK_DIR.parent
# The TensorFlow/absl lines the issue names, and the other start-up notices of a CPU machine.
START_UP_LINES = ("cuInit", "absl::InitializeLog", "use_unbounded_threadpool", "oneDNN custom operations",
                  "cudart_stub", "cpu_feature_guard")


# -- parameters cells ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_papermill_reads_every_parameter_line_without_a_warning(path, caplog):
    """papermill's Python translator warns "Unable to parse line" for a line with two '=' (a
    comment such as "# 0 = head only"), and drops that parameter from ``--help-notebook`` (which
    reads the first parameters cell; the translator reads the advanced one the same way)."""
    from papermill.translators import PythonTranslator

    cells = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        found = papermill.inspect_notebook(str(path))
        every = [p.name for cell in cells for p in PythonTranslator.inspect(cell)]
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("papermill")]
    assert warnings == [], f"{path.name}: {warnings}"
    assert every == parameter_names(path), "papermill must see every name the parameters cells assign"
    assert list(found) == every[:len(found)]


# -- references to files ------------------------------------------------------------------------

# Paths into the repository's own folders, and relative Markdown links. reports/, data/ and build/
# are written by runs, so they are not checked; placeholders (<name>, a format string's {field})
# and globs are skipped.
_PATH = re.compile(r"(?<![\w/.-])((?:\.\./)*(?:notebooks|docs|lab|tests|benchmarks)/[\w./-]*\w)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _documents() -> list[Path]:
    return [*notebooks(), ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
            *sorted((ROOT / "lab").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py")), ROOT / "Makefile"]


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    return path.read_text(encoding="utf-8")


def test_every_repository_file_the_notebooks_and_docs_name_exists():
    missing = []
    for document in _documents():
        text = _text(document)
        # Markdown links in Markdown and notebooks; in Python, ``scorers[metric](counts)`` is a call.
        links = [] if document.suffix == ".py" else \
            [link for link in _LINK.findall(text) if not re.match(r"[a-z]+:", link)]
        for reference in sorted(set(_PATH.findall(text)) | set(links)):
            if "*" in reference or "<" in reference or "{" in reference:
                continue
            if not ((ROOT / reference).exists() or (document.parent / reference).exists()):
                missing.append(f"{document.relative_to(ROOT)} -> {reference}")
    assert missing == [], "references to files that do not exist:\n" + "\n".join(missing)


def test_the_reference_check_finds_a_missing_file():
    """The check above must be able to fail: a notebook naming a batch spec that is not there."""
    text = "The whole ablation: `python -m lab.studies.batch notebooks/batches/no-such-spec.json`."
    assert _PATH.findall(text) == ["notebooks/batches/no-such-spec.json"]
    assert not (ROOT / "notebooks/batches/no-such-spec.json").exists()


# -- figures shown once -------------------------------------------------------------------------

def _execute(cells: list[str], tmp_path: Path) -> nbformat.NotebookNode:
    """Runs a small notebook in a real kernel (as Jupyter and papermill do) and returns it."""
    from nbclient import NotebookClient

    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def _images(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.outputs)


def test_plot_functions_leave_no_figure_open_in_pyplot():
    """What the inline backend shows at the end of a cell is what pyplot holds: it must be nothing."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from lab.runs import plots

    plt.close("all")
    history = pd.DataFrame({"loss": [1.0, 0.6], "val_loss": [1.1, 0.8], "accuracy": [0.5, 0.7],
                            "val_accuracy": [0.4, 0.6]})
    images, labels = np.zeros((6, 4, 4, 1), np.uint8), np.array([0, 1, 0, 1, 0, 1])
    figures = [plots.learning_curves(history), plots.compare_curves({"a": history}),
               plots.confusion_matrix(np.eye(2, dtype=int), ["a", "b"]),
               plots.class_distribution({"train": [3, 3]}, ["a", "b"]),
               plots.sample_grid(images, labels, ["a", "b"], per_class=2),
               plots.sample_predictions(images, labels, labels, ["a", "b"], count=4)]
    assert plt.get_fignums() == []
    assert all(len(figure.axes) > 0 for figure in figures)


def test_each_figure_of_a_plot_cell_is_shown_once(tmp_path, monkeypatch):
    # The kernel picks Jupyter's inline backend only where MPLBACKEND does not name another.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute([
        "from lab.runs import plots\nimport pandas as pd\n"
        "history = pd.DataFrame({'loss': [1.0, 0.6], 'val_loss': [1.1, 0.8], 'accuracy': [0.5, 0.7],"
        " 'val_accuracy': [0.4, 0.6]})",
        "plots.learning_curves(history, title='returned')",
        "for name in ('a', 'b'):\n    display(plots.compare_curves({name: history}))",
        "figure = plots.learning_curves(history)\nplots.save(figure, 'curves.png')",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2]);",
        # A kernel without ipywidgets (the kit's venv: papermill, nbval) writes no bar at all.
        "from lab.system.progress import progress\nfor _ in progress(range(3), desc='work'):\n    pass",
    ], tmp_path)
    assert [_images(cell) for cell in nb.cells] == [0, 1, 2, 0, 1, 0]
    assert (tmp_path / "curves.png").exists()
    assert nb.cells[-1].outputs == []


# -- TensorFlow's start-up lines ----------------------------------------------------------------

def test_records_below_the_level_are_dropped_with_their_second_lines():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1795794046.848462   23368 cpu_feature_guard.cc:227] This binary is optimized\n"
            "To enable the following instructions: AVX2, rebuild TensorFlow\n"
            "W0000 00:00:1795794046.848462   23368 a.cc:1] a warning\n"
            "2026-11-27 15:46:12.249259: E external/xla/cuda_platform.cc:51] failed call to cuInit\n"
            "F0000 00:00:1795794046.848462   23368 b.cc:2] a fatal check\n")
    assert filter_native_log(text, 0) == text
    assert filter_native_log(text, 2).splitlines() == [
        "2026-11-27 15:46:12.249259: E external/xla/cuda_platform.cc:51] failed call to cuInit",
        "F0000 00:00:1795794046.848462   23368 b.cc:2] a fatal check"]
    assert filter_native_log(text, 3) == "F0000 00:00:1795794046.848462   23368 b.cc:2] a fatal check\n"
    assert filter_native_log("a line before any record\n", 3) == "a line before any record\n"


def test_native_lines_are_held_and_filtered_and_python_output_passes(capfd):
    with filtered_native_stderr(2):
        os.write(2, b"I0000 00:00:1.5   7 port.cc:153] oneDNN custom operations are on\n"
                    b"E0000 00:00:1.5   7 x.cc:1] a real error\n")
        print("python warning", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "a real error" in err and "python warning" in err


def test_a_logging_handler_made_while_held_writes_to_the_real_stderr_afterwards():
    # TensorFlow makes its logging handler while it is imported, inside the held block; it must
    # not keep the stand-in stream, whose descriptor is closed after the block ("Bad file
    # descriptor" on every later TensorFlow warning). A fresh process: stderr is descriptor 2 there.
    code = ("import logging\n"
            "from lab.system.tf_logging import filtered_native_stderr\n"
            "logger = logging.getLogger('held')\n"
            "with filtered_native_stderr(3):\n"
            "    logger.addHandler(logging.StreamHandler())\n"
            "logger.warning('a warning after the block')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "a warning after the block" in done.stderr and "Bad file descriptor" not in done.stderr, done.stderr


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebooks_import_the_kit_before_tensorflow_or_keras(path):
    """The kit filters the lines of the first TensorFlow import only if it is imported first."""
    statements = [line.strip() for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"
                  for line in cell.source.splitlines()]
    tensorflow = [i for i, s in enumerate(statements) if re.match(r"(import|from) (tensorflow|keras)\b", s)]
    kit = [i for i, s in enumerate(statements) if re.match(r"(import|from) lab\b", s)]
    if tensorflow:
        assert kit and kit[0] < tensorflow[0], f"{path.name}: {statements[tensorflow[0]]!r} comes before the kit"


@pytest.mark.slow
def test_importing_tensorflow_through_the_kit_prints_no_start_up_lines(tmp_path):
    """A fresh process, as a kernel is: the level the kit sets, and the filtered first import."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = ("import lab, warnings\nimport tensorflow as tf\ntf.config.list_physical_devices()\n"
            "warnings.warn('the kit still warns')\n")
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], env=env, capture_output=True,
                            text=True, timeout=300, check=True)
    assert not [line for line in result.stderr.splitlines() if any(s in line for s in START_UP_LINES)], result.stderr
    assert "the kit still warns" in result.stderr


@pytest.mark.slow
def test_a_batch_notebook_holds_no_tensorflow_start_up_lines(tmp_path, monkeypatch, capfd):
    """Through the kit's batch path (papermill in a subprocess, its own kernel), as the issue saw."""
    from lab.studies.batch import load_spec, run_batch

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # the kit's own default, not the tests'
    notebook = tmp_path / "tiny.ipynb"
    parameters = new_code_cell("scale = 2.0")
    parameters.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[parameters, new_code_cell(
        "from lab.system import hardware\nimport numpy as np, tensorflow as tf\nprint('device:', hardware.device_summary())\n"
        "data = tf.data.Dataset.from_tensor_slices(np.ones((8, 2), np.float32))\n"
        "data = data.map(lambda x: x * scale, num_parallel_calls=tf.data.AUTOTUNE).batch(4)\n"
        "print(float(sum(float(tf.reduce_sum(b)) for b in data)))")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"notebook": str(notebook), "name": "quiet", "runs": [{"name": "one"}]}))
    result = run_batch(load_spec(spec), reports_dir=tmp_path / "reports")
    assert [r["status"] for r in result.records] == ["completed"], result.records
    [executed] = (result.folder / "notebooks").glob("*.ipynb")
    outputs = [output for cell in nbformat.read(executed, as_version=4).cells for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "32.0" in text, text
    assert not [s for s in START_UP_LINES if s in text], text
    assert not [s for s in START_UP_LINES if s in "".join(capfd.readouterr())]


# -- what students see: plain code, the course's parameters, badges and links that work in Colab ---

@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_checked_cells_are_tagged_and_students_see_no_marker(path):
    """nbval reads the tag as it reads the comment (--nbval-lax compares only these cells)."""
    from nbval.plugin import find_metadata_tags

    from lab.studies.notebooks import CHECK_MARKER, CHECK_TAG, is_checked

    cells = nbformat.read(path, as_version=4).cells
    assert not [c for c in cells if "NBVAL" in c.source], f"{path.name}: an nbval comment in a cell's code"
    checked = [c for c in cells if is_checked(c)]
    assert checked and all(dict(find_metadata_tags(c.metadata)) == {"check": True} for c in checked)
    assert CHECK_TAG == CHECK_MARKER.lstrip("# ").lower().replace("_", "-")  # nbval's own mapping


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_parameters_cells_hold_at_most_a_dozen_values_and_batches_reach_the_advanced_ones(path):
    from lab.studies.notebooks import INJECTION_CELL

    cells = nbformat.read(path, as_version=4).cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    first = [n for n in ast.parse(cells[tagged[0]].source).body if isinstance(n, ast.Assign)]
    assert len(first) <= 12, f"{path.name}: {len(first)} values in the parameters cell; move some to an advanced cell"
    assert len(tagged) <= 2 and tagged == list(range(tagged[0], tagged[0] + len(tagged))), "the two cells adjoin"
    if len(tagged) == 2:
        # papermill injects after the first parameters cell unless a cell is tagged injected-parameters.
        injection = cells[tagged[-1] + 1]
        assert injection.metadata.get("tags") == ["injected-parameters"] and injection.source == INJECTION_CELL


def test_a_batch_sets_a_value_of_the_advanced_cell(tmp_path):
    """Through papermill itself, as lab.studies.batch runs it: both cells' values reach the notebook."""
    from lab.studies.notebooks import INJECTION_CELL

    main = new_code_cell("epochs = 60\nquick = False")
    advanced = new_code_cell("# Advanced\nlimit = None\nname = 'default'")
    injection = new_code_cell(INJECTION_CELL)
    main.metadata["tags"], advanced.metadata["tags"] = ["parameters"], ["parameters"]
    injection.metadata["tags"] = ["injected-parameters"]
    nb = new_notebook(cells=[main, advanced, injection, new_code_cell("print(epochs, limit, name)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    assert parameter_names(tmp_path / "in.ipynb") == ["epochs", "quick", "limit", "name"]
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               parameters={"epochs": 2, "limit": 5}, progress_bar=False)
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert len(cells) == 4 and "limit = 5" in cells[2].source  # the placeholder, replaced in place
    assert cells[-1].outputs[0]["text"] == "2 5 default\n"


def _docs_references(path: Path) -> list[str]:
    return [ref for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"
            for ref in re.findall(r"\]\(([^)]*)\)|`(docs/[^`]*)`", cell.source) for ref in ref if ref]


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_badges_and_docs_links_follow_the_repository_url(path):
    from lab.studies.notebooks import colab_url, repository_url

    url = repository_url()
    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    badge = f"(https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(url, path.name)})" if url else None
    assert (badge in first.source) if url else ("colab.research.google.com" not in first.source)
    references = _docs_references(path)
    assert references, f"{path.name} names its section of docs/experiments.md"
    for reference in references:
        assert not reference.startswith("../"), f"{path.name}: {reference} breaks in Colab"
        if url and reference.startswith("docs/"):
            pytest.fail(f"{path.name}: {reference} is not a link; run `python -m lab.studies.notebooks format`")
        if not url:
            assert reference.startswith("docs/") or not reference.startswith("https://github.com"), reference


def test_the_readme_badge_follows_the_repository_url():
    from lab.studies.notebooks import readme_with_badge, repository_url

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text == readme_with_badge(text, repository_url()), "run `python -m lab.studies.notebooks format`"


def test_format_writes_badges_links_and_the_url_and_takes_them_out_again(tmp_path):
    from lab.studies.notebooks import canonical, readme_with_badge

    url = "https://github.com/someone/lab"
    intro = "# E1. A title\n\nExperiment described in [docs/experiments.md](../docs/experiments.md#e1-a-cnn)."
    nb = new_notebook(cells=[nbformat.v4.new_markdown_cell(intro), new_code_cell("LAB_URL = None\nx = 1"),
                             nbformat.v4.new_markdown_cell("See `docs/gpu.md` for more.")])
    linked = canonical(nb, "01-x.ipynb", url)
    assert linked.cells[0].source == (
        "# E1. A title\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        "(https://colab.research.google.com/github/someone/lab/blob/main/notebooks/01-x.ipynb)\n\n"
        "Experiment described in [docs/experiments.md](https://github.com/someone/lab/blob/main/docs/"
        "experiments.md#e1-a-cnn).")
    assert linked.cells[1].source == "LAB_URL = 'https://github.com/someone/lab'\nx = 1"
    assert linked.cells[2].source == "See [docs/gpu.md](https://github.com/someone/lab/blob/main/docs/gpu.md) for more."
    assert canonical(linked, "01-x.ipynb", url).cells[0].source == linked.cells[0].source  # idempotent
    moved = canonical(linked, "01-x.ipynb", "https://github.com/other/kit")
    assert "github.com/other/kit/blob/main/docs/experiments.md#e1-a-cnn" in moved.cells[0].source
    assert "someone" not in moved.cells[0].source
    unset = canonical(linked, "01-x.ipynb", None)
    assert unset.cells[0].source == "# E1. A title\n\nExperiment described in `docs/experiments.md#e1-a-cnn`."
    assert unset.cells[1].source == "LAB_URL = None\nx = 1" and unset.cells[2].source == "See `docs/gpu.md` for more."
    readme = "# lab: a kit\n\nText."
    assert readme_with_badge(readme_with_badge(readme, url), None) == readme


def test_only_a_github_address_makes_badges(tmp_path):
    from lab.studies.notebooks import repository_url

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "lab"\n[project.urls]\nRepository = "https://gitlab.com/a/lab"\n')
    with pytest.raises(ValueError, match=r"must be a GitHub address .* received 'https://gitlab.com/a/lab'"):
        repository_url(pyproject)
    pyproject.write_text('[project]\nname = "lab"\n[project.urls]\nRepository = "https://github.com/a/lab.git"\n')
    assert repository_url(pyproject) == "https://github.com/a/lab"
    pyproject.write_text('[project]\nname = "lab"\n')
    assert repository_url(pyproject) is None


def test_format_turns_an_nbval_comment_into_the_tag_and_keeps_the_outputs():
    """A notebook written with the comment (an older branch, a contributor) keeps its check."""
    from lab.studies.notebooks import CHECK_TAG, canonical, is_checked

    cell = new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(data.shape)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="(8, 8)\n")]
    formatted = canonical(new_notebook(cells=[cell])).cells[0]
    assert formatted.source == "print(data.shape)" and formatted.metadata["tags"] == [CHECK_TAG]
    assert is_checked(formatted) and formatted.outputs[0]["text"] == "(8, 8)\n"
    assert canonical(new_notebook(cells=[formatted])).cells[0] == formatted
