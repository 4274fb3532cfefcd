"""``lab.report``: a report's tables equal the run records, its figures are embedded and render,
diverged runs are marked, and a source that names nothing is refused with what exists."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.system import atomic
from lab.runs import plots
from lab.runs.confidence import column_decimals
from lab.runs.records import RunWriter, load_run, load_runs
from lab.report import UnknownSourceError, build_report, main, number, resolve_source

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "screenshot_report.py"
CLASSES = ["cat", "dog", "bird"]
ENVIRONMENT = {"device": "cpu", "keras": "3.15.1", "lab": "0.1.0", "numpy": "2.4.6", "python": "3.11.7",
               "tensorflow": "2.21.0"}


def _record(name, *, model="cnn", learning_rate=1e-3, status="completed", val_loss=0.5, val_accuracy=0.62, seed=0,
            per_class=False, plot=False, tags=("demo",), settings=None, more_metrics=None):
    """A classification run record as the runner writes it, without training: config, history,
    metrics, predictions (and optionally the record's own learning-curve plot); ``settings`` and
    ``more_metrics`` add configuration fields and metrics."""
    rng = np.random.default_rng(seed)
    y_true = np.repeat(np.arange(3), 10)
    y_prob = rng.dirichlet(np.ones(3), size=30).astype(np.float32)
    y_prob[np.arange(20), y_true[:20]] += 1.0  # two thirds right
    y_prob /= y_prob.sum(axis=1, keepdims=True)
    config = {"name": name, "model": model, "learning_rate": learning_rate, "tags": list(tags), "task": "classification",
              "monitor": "val_loss", "epochs": 2, "seed": 0, "dropout_rate": None, "record_version": 2,
              "config_hash": f"hash-{name}", "environment": ENVIRONMENT,
              "data": {"name": "toy", "class_names": CLASSES, "num_classes": 3, "content_sha256": "abc"},
              **(settings or {})}
    writer = RunWriter(config, name=name)
    history = pd.DataFrame({"epoch": [0, 1], "loss": [1.2, 0.9], "accuracy": [0.4, 0.6],
                            "val_loss": [val_loss * 1.3, val_loss], "val_accuracy": [0.5, 0.62]})
    history.to_csv(writer.path / "history.csv", index=False)
    np.savez_compressed(writer.path / "predictions.npz", y_true=y_true, y_prob=y_prob, class_names=np.array(CLASSES))
    if plot:
        plots.save(plots.learning_curves(history, title=name, best_epoch=2), writer.path / "plots" / "learning_curves.png")
    accuracy = float((y_prob.argmax(axis=1) == y_true).mean())
    metrics = {"name": name, "status": status, "model": model, "task": "classification", "tags": list(tags),
               "created": "2026-11-27T12:00:00", "best_epoch": 2, "epochs_run": 2, "train_accuracy": 0.61,
               "val_accuracy": val_accuracy, "val_loss": val_loss, "best_epoch_val_loss": val_loss,
               "best_epoch_val_accuracy": val_accuracy,
               "test_accuracy": accuracy, "test_loss": 0.7 + seed / 100, "seconds_per_epoch": 0.25, "train_seconds": 0.6,
               "divergence_reason": "training loss grew (a test)" if status == "diverged" else None}
    metrics |= more_metrics or {}
    if per_class:
        metrics["test_per_class"] = {c: {"precision": 0.5, "recall": 0.25 + i / 10, "f1": 0.3, "support": 10}
                                     for i, c in enumerate(CLASSES)}
    return load_run(writer.publish(metrics))


@pytest.fixture
def demo_sweep(isolated_dirs):
    """Three records (one diverged, two models) and the sweep folder lab.studies.sweep writes for them."""
    from lab.studies.sweep import write_summary

    runs = [_record("adam-lr0.01", learning_rate=1e-2, status="diverged", val_loss=3.8e8, seed=1),
            _record("adam-lr0.001", val_loss=0.41, seed=2, per_class=True, plot=True),
            _record("mlp-lr0.001", model="mlp", val_loss=0.55, seed=3)]
    folder = write_summary("demo", runs, varied=["learning_rate", "model"])
    return folder, runs


class _Tables(HTMLParser):
    """The tables of an HTML page (caption, header, rows of cell texts) and its images' sources."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.styles = [], [], []
        self._caption = self._cell = None
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figcaption":
            self._caption = ""
        elif tag == "table":
            self.tables.append({"caption": getattr(self, "_last_caption", ""), "id": attrs.get("id"), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag):
        if tag == "figcaption" and self._caption is not None:
            self._last_caption, self._caption = self._caption, None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append(self._cell.replace("\u200b", "").strip())
            self._cell = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._caption is not None:
            self._caption += data
        if self._cell is not None:
            self._cell += data
        if self._in_style:
            self.styles.append(data)


def _html(report):
    parser = _Tables()
    parser.feed(report.html.read_text(encoding="utf-8"))
    return parser


def _table(parser, caption):
    table = next(t for t in parser.tables if t["caption"].startswith(caption))
    header, *rows = table["rows"]
    return table["id"], [dict(zip(header, row)) for row in rows]


def _markdown_table(text, caption):
    """The rows of the Markdown table under ``*caption...*`` as dicts of cell texts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"*{caption}"))
    block = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip("|").split("|")])
    header, _, *rows = block
    return [dict(zip(header, row)) for row in rows]


def _shown(value, digits=4):
    return "" if value is None else (str(value) if isinstance(value, (int, str)) else number(value, digits))


def test_report_tables_equal_the_records_and_embed_the_figures(demo_sweep):
    folder, runs = demo_sweep
    report = build_report(folder)
    assert report.html == folder / "report" / "report.html" and report.markdown.exists()
    assert [run.run_id for run in report.source.runs] == [run.run_id for run in runs]
    metric_columns = ["status", "best_epoch", "epochs_run", "train_accuracy", "val_accuracy", "val_loss",
                      "test_accuracy", "test_loss", "seconds_per_epoch"]

    parser = _html(report)
    table_id, rows = _table(parser, "Results")
    assert [row["run_id"] for row in rows] == [run.run_id for run in runs]
    for row, run in zip(rows, runs):
        assert row["name"] == run.name
        for column in metric_columns:
            assert row[column] == _shown(run.metrics[column]), (run.name, column)
    assert rows[1]["val_loss"] == "0.4100" and rows[0]["val_loss"] == "3.8000e+08"
    # The diverged row (row 0) is shaded and its status bold; the completed ones are not.
    styles = "".join(parser.styles)
    shaded = {int(m.group(1)) for m in re.finditer(rf"#{table_id}_row(\d+)_col\d+[^{{]*\{{[^}}]*#ffebe9", styles)}
    assert shaded == {0}
    assert re.search(rf"#{table_id}_row0_col\d+[^{{]*\{{[^}}]*font-weight: bold", styles)

    markdown = report.markdown.read_text(encoding="utf-8")
    md_rows = _markdown_table(markdown, "Results")
    assert [row["run_id"] for row in md_rows] == [run.run_id for run in runs]
    for row, run in zip(md_rows, runs):
        for column in metric_columns[1:]:
            assert row[column] == _shown(run.metrics[column]), (run.name, column)
    assert [row["status"] for row in md_rows] == ["**diverged**", "completed", "completed"]

    # Figures: embedded PNGs in the HTML, files beside the Markdown, the same ones.
    assert len(parser.images) >= 3
    for source in parser.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", markdown)
    assert len(linked) == len(parser.images) and all((report.markdown.parent / path).is_file() for path in linked)
    assert "figures/best-learning_curves.png" in linked  # the record's own plot
    assert "figures/best-confusion_matrix.png" in linked  # drawn from predictions.npz (no plot in the record)

    # The best run: lowest val_loss (what the runs monitor) among the completed runs.
    assert report.best.run_id == runs[1].run_id
    assert "val_loss (lowest)" in markdown and "among 2 completed run(s) of 3" in markdown
    # Its per-class scores come from the record's test_per_class.
    _, per_class = _table(parser, "Per-class test scores")
    assert [row["class"] for row in per_class] == CLASSES
    assert [row["recall"] for row in per_class] == ["0.2500", "0.3500", "0.4500"]
    assert "metrics.json 'test_per_class'" in markdown

    # Two models: the efficiency table, one row per run with its id; the environment; every run id.
    _, efficiency = _table(parser, "Efficiency")
    assert [row["run_id"] for row in efficiency] == [run.run_id for run in runs]
    assert [row["train s"] for row in efficiency] == ["0.6000"] * 3
    _, environment = _table(parser, "Environments")
    assert environment[0]["tensorflow"] == "2.21.0" and environment[0]["runs"] == "3"
    _, records = _table(parser, "Run records")
    assert [row["config_hash"] for row in records] == [run.config["config_hash"] for run in runs]
    # What varied: the learning rate and the model, as recorded (not rounded to 0.0100).
    _, varied = _table(parser, "Settings that varied")
    assert [row["learning_rate"] for row in varied] == ["0.01", "0.001", "0.001"]
    assert [row["model"] for row in varied] == ["cnn", "cnn", "mlp"]
    _, fixed = _table(parser, "Settings shared")
    assert {"setting": "epochs", "value": "2"} in fixed
    assert "Unset (None) in every run: dropout_rate." in markdown


def test_per_class_scores_are_computed_from_predictions_when_the_record_has_none(demo_sweep):
    from sklearn.metrics import classification_report

    from lab.report import per_class_scores

    _, runs = demo_sweep
    frame, note = per_class_scores(runs[2])
    predictions = runs[2].predictions()
    expected = classification_report(predictions["y_true"], predictions["y_prob"].argmax(axis=1), output_dict=True,
                                     target_names=CLASSES, zero_division=0)
    assert "predictions.npz" in note and "WARNING" not in note
    assert frame["class"].tolist()[:3] == CLASSES
    np.testing.assert_allclose(frame["f1"][:3], [expected[c]["f1-score"] for c in CLASSES])
    # predictions.npz that does not match the recorded accuracy is said to be suspect.
    with np.load(runs[2].path / "predictions.npz") as npz:
        y_prob = np.roll(npz["y_prob"], 1, axis=1)
        np.savez_compressed(runs[2].path / "predictions.npz", y_true=npz["y_true"], y_prob=y_prob,
                            class_names=npz["class_names"])
    assert "WARNING" in per_class_scores(runs[2])[1]


def test_sources_resolve_by_name_folder_tag_and_run_ids(demo_sweep, isolated_dirs):
    folder, runs = demo_sweep
    ids = [run.run_id for run in runs]
    assert [r.run_id for r in resolve_source("demo").runs] == ids
    assert resolve_source("sweep:demo").kind == "sweep"
    assert [r.run_id for r in resolve_source("tag:demo").runs] == ids
    assert [r.run_id for r in resolve_source([ids[2], ids[0]]).runs] == [ids[2], ids[0]]
    single = resolve_source(str(runs[1].path))
    assert single.kind == "run" and single.runs[0].run_id == ids[1]
    report = build_report([ids[0], ids[1]], out=isolated_dirs / "out")
    assert report.html.parent == isolated_dirs / "out" and "Efficiency" not in report.markdown.read_text()
    # A batch of the same name makes "demo" ambiguous: the message says how to choose.
    batch = isolated_dirs / "reports" / "batches" / "demo"
    atomic.append_line(batch / "batch.jsonl", json.dumps({"key": "k1", "name": "job1", "status": "completed",
                                                          "run_ids": ids[:2]}))
    with pytest.raises(UnknownSourceError, match="'batch:demo' or 'sweep:demo'"):
        resolve_source("demo")
    assert [r.run_id for r in resolve_source("batch:demo").runs] == ids[:2]


def test_an_unknown_source_is_refused_with_what_exists(demo_sweep, capsys):
    _, runs = demo_sweep
    with pytest.raises(UnknownSourceError) as error:
        build_report("no-such-sweep")
    message = str(error.value)
    assert "'no-such-sweep' is no batch, sweep, search" in message
    assert "sweeps: demo" in message and "tags: demo (3 runs)" in message and runs[-1].run_id in message
    with pytest.raises(UnknownSourceError, match="No run carries the tag 'nope'"):
        resolve_source("tag:nope")
    with pytest.raises(UnknownSourceError, match="No run record 'missing-run'"):
        resolve_source([runs[0].run_id, "missing-run"])
    assert main(["sweep:nothing"]) == 2
    assert "There is no sweep named 'nothing'" in capsys.readouterr().err


def test_python_m_lab_report_writes_the_report_and_the_templates_ship_in_the_wheel(demo_sweep, isolated_dirs):
    """The package's ``__main__`` is the command; every template ``lab.report.rendering`` reads is
    package data in pyproject.toml, so a non-editable install (a wheel, as in Colab) holds it."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")
    from lab.report import template_source
    from lab.report.rendering import CSS_FILE, HTML_PAGE, MARKDOWN_PAGE

    out = isolated_dirs / "cli-report"
    done = subprocess.run([sys.executable, "-m", "lab.report", "sweep:demo", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "best run: adam-lr0.001" in done.stdout
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (out / "report.md").read_text(encoding="utf-8").startswith("# Sweep demo: report")

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["lab"]
    templates = sorted((ROOT / "lab" / "report" / "templates").iterdir())
    assert {path.name for path in templates} >= {CSS_FILE, HTML_PAGE, MARKDOWN_PAGE}
    for path in templates:
        assert any(fnmatch.fnmatch(path.relative_to(ROOT / "lab").as_posix(), pattern) for pattern in patterns), path
        assert template_source(path.name) == path.read_text(encoding="utf-8")


def test_an_ablation_is_a_source_by_name_wherever_its_engine_wrote_it(demo_sweep, isolated_dirs):
    """The runs come from the collection record's members, in its order, and its kind names it."""
    from lab.studies.sweep import write_summary

    _, runs = demo_sweep
    write_summary("e1", [runs[2], runs[0]], varied=["model"], kind="ablation")  # the python engine's folder
    source = resolve_source("ablation:e1")
    assert source.kind == "ablation" and source.label == "Ablation e1"
    assert [run.run_id for run in source.runs] == [runs[2].run_id, runs[0].run_id]
    assert resolve_source("e1").kind == "ablation"
    with pytest.raises(UnknownSourceError, match="There is no ablation named 'e2'"):
        resolve_source("ablation:e2")


def test_a_batch_report_names_jobs_that_failed_before_training(isolated_dirs):
    run = _record("job-a", val_loss=0.3)
    folder = isolated_dirs / "reports" / "batches" / "nightly"
    atomic.write_json(folder / "spec.json", {"jobs": [{"key": "kb", "name": "job-b"}, {"key": "ka", "name": "job-a"}]})
    atomic.append_line(folder / "batch.jsonl", json.dumps({"key": "ka", "name": "job-a", "status": "completed",
                                                           "run_ids": [run.run_id]}))
    atomic.append_line(folder / "batch.jsonl", json.dumps({"key": "kb", "name": "job-b", "status": "failed",
                                                           "run_ids": [], "error": "Traceback\nValueError: bad"}))
    report = build_report("nightly")
    assert report.source.kind == "batch" and [r.run_id for r in report.source.runs] == [run.run_id]
    assert "Batch job 'job-b' failed before training any run: ValueError: bad" in report.markdown.read_text()
    assert "One run: nothing varied." in report.markdown.read_text()


def test_a_search_report_picks_the_best_trial_by_the_search_objective(isolated_dirs):
    """A search's trials are run records tagged with its name and id; its objective, not the
    runs' monitor (val_loss), chooses the best run."""
    trial = ["search:lr", "search-id:s1", "trial:0"]
    low_loss = _record("trial-0", val_loss=0.3, seed=4, tags=trial)
    high_accuracy = _record("trial-1", val_loss=0.6, val_accuracy=0.9, seed=5, tags=trial)
    _record("earlier", val_loss=0.1, val_accuracy=0.95, seed=6, tags=["search:lr", "search-id:s0"])  # replaced search
    atomic.write_json(isolated_dirs / "reports" / "searches" / "lr" / "search.json",
                      {"name": "lr", "search_id": "s1", "objective": ["val_accuracy", "max"]})
    report = build_report("lr")
    assert report.source.kind == "search"
    assert [run.run_id for run in report.source.runs] == [low_loss.run_id, high_accuracy.run_id]
    assert report.best.run_id == high_accuracy.run_id
    assert "the search's objective val_accuracy (highest)" in report.markdown.read_text()


def test_a_segmentation_report_shows_iou_and_dice_per_class(isolated_dirs):
    names = ["background", "pet", "border"]
    config = {"name": "unet", "model": "unet", "task": "segmentation", "monitor": "val_mean_iou", "tags": ["seg"],
              "environment": ENVIRONMENT, "data": {"name": "toy-masks", "class_names": names}}
    writer = RunWriter(config, name="unet")
    pd.DataFrame({"loss": [0.9, 0.6], "val_loss": [1.0, 0.7], "val_mean_iou": [0.3, 0.45]}).to_csv(
        writer.path / "history.csv", index=False)
    metrics = {"name": "unet", "status": "completed", "task": "segmentation", "tags": ["seg"], "best_epoch": 2,
               "epochs_run": 2, "val_loss": 0.7, "val_mean_iou": 0.45, "best_epoch_val_mean_iou": 0.45,
               "test_mean_iou": 0.5, "test_pixel_accuracy": 0.9, "all_background": False, "class_names": names,
               **{f"test_iou_{n}": 0.1 * (i + 5) for i, n in enumerate(names)},
               **{f"test_dice_{n}": 0.1 * (i + 6) for i, n in enumerate(names)}}
    run = load_run(writer.publish(metrics))
    report = build_report("tag:seg")
    parser = _html(report)
    _, rows = _table(parser, "Results")
    assert rows[0]["test_mean_iou"] == "0.5000" and rows[0]["all_background"] == "False"
    assert "val_mean_iou (highest)" in report.markdown.read_text()
    _, per_class = _table(parser, "Per-class test scores")
    assert [(row["class"], row["iou"], row["dice"]) for row in per_class] == [
        ("background", "0.5000", "0.6000"), ("pet", "0.6000", "0.7000"), ("border", "0.7000", "0.8000")]
    assert report.best.run_id == run.run_id


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="no Chromium on this machine (Debian: apt-get install chromium); the screenshot script "
                           "cannot be checked")
def test_the_screenshot_shows_the_figures(demo_sweep, tmp_path):
    folder, _ = demo_sweep
    report = build_report(folder)
    # The same page without its images, to tell what the figures add to the screenshot.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', report.html.read_text()))
    shots = {}
    for name, page in (("report", report.html), ("bare", bare)):
        png = tmp_path / f"{name}.png"
        done = subprocess.run([sys.executable, str(SCRIPT), str(page), str(png), "--width", "1000"],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        from PIL import Image

        image = np.asarray(Image.open(png).convert("RGB")).astype(int)
        assert image.shape[1] == 1000
        # Saturated pixels: the curves, the heatmap, the green/red titles (text is grey or black).
        shots[name] = (image.shape[0], int(((image.max(axis=2) - image.min(axis=2)) > 80).sum()))
    assert shots["report"][0] > shots["bare"][0] + 500, shots  # the figures take room
    assert shots["report"][1] > 5 * max(shots["bare"][1], 1000), shots  # and are drawn


@pytest.mark.slow
def test_a_report_of_a_real_sweep(isolated_dirs):
    """Two tiny trainings on digits (one diverges), then the report: its numbers are the records'."""
    from lab.studies.sweep import run_sweep

    base = dict(dataset="digits", limit=200, model="cnn", depth=2, filters=8, dense_units=16, epochs=2, verbose=0,
                save_model=False)
    result = run_sweep(base, [{"name": "diverges", "learning_rate": 50.0, "divergence_patience": 1},
                              {"name": "learns", "learning_rate": 3e-3}], name="tiny")
    report = build_report("tiny")
    runs = load_runs(run_ids=[run.run_id for run in result.runs])
    _, rows = _table(_html(report), "Results")
    for row, run in zip(rows, runs):
        assert row["run_id"] == run.run_id and row["status"] == run.status
        columns = ("train_accuracy", "val_accuracy", "val_loss", "test_accuracy", "test_macro_auc")
        # each split's scores with the digits its size supports (40 test images: two decimals)
        digits = column_decimals(columns, [r.config["data"]["sizes"] for r in runs])
        assert digits["test_accuracy"] < 4
        for column in columns:
            assert row[column] == _shown(run.metrics[column], digits[column])
    assert report.best.name == "learns"
    names = {path.name for path in report.figures}
    assert {"curves.png", "best-confusion_matrix.png", "best-sample_predictions.png"} <= names


# -- the page a student hands in -------------------------------------------------------------------

CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)
SUMMARY_METRICS = {"val_macro_auc": 0.9784, "test_macro_auc": 0.9697}  # every column a real record has


@pytest.fixture
def e1_ablation(isolated_dirs):
    """The ten E1 configurations as records of CNNs built from scratch, and the ablation's folder
    (the python engine's: a sweep folder whose collection record says what varied)."""
    from lab.studies.ablation import E1_VARIANTS
    from lab.studies.sweep import write_summary

    base = {"normalization": "none", "dropout_rate": 0.0, "l2": 0.0, "augment": False, "weights": "imagenet",
            "unfreeze": None, "backbone": None, "feature_cache": "memory", "params": 159626}
    runs = []
    for i, variant in enumerate(E1_VARIANTS):
        settings = {**base, **{k: v for k, v in variant.items() if k not in ("name", "learning_rate")}}
        settings["params"] += 1056 * (settings["normalization"] != "none")  # a consequence, not a choice
        runs.append(_record(variant["name"], learning_rate=variant["learning_rate"], seed=i, settings=settings,
                            val_loss=0.4 + i / 100, status="diverged" if i in (1, 5) else "completed",
                            more_metrics=SUMMARY_METRICS))
    varied = sorted({k for variant in E1_VARIANTS for k in variant if k != "name"})
    return write_summary("e1", runs, varied=varied, kind="ablation"), runs


def test_results_come_first_with_every_varied_setting_from_the_collection_record(e1_ablation):
    folder, runs = e1_ablation
    report = build_report(folder)
    # results, then how sure they are (lab.report.comparisons), then the settings behind them
    assert [section.anchor for section in report.sections][:3] == ["results", "comparisons", "settings"]
    varied = ["augment", "dropout_rate", "l2", "learning_rate", "normalization"]  # the record's, in its order
    parser = _html(report)
    _, rows = _table(parser, "Results")
    assert list(rows[0])[:6] == ["name", *varied]
    by_name = {row["name"]: row for row in rows}
    # 5-l2 differs from 1-plain in its l2 only, which the table shows.
    differing = {k for k in varied if by_name["5-l2"][k] != by_name["1-plain"][k]}
    assert differing == {"l2"} and by_name["5-l2"]["l2"] == "0.0001"
    assert by_name["8-bn-dropout-augment"]["augment"] == "True"
    _, per_run = _table(parser, "Settings that varied")
    assert list(per_run[0]) == ["run_id", "name", *varied]
    # params differ between the runs but are a consequence: the record does not name them as varied.
    assert "params" not in per_run[0] and "params" not in rows[0]
    markdown = report.markdown.read_text(encoding="utf-8")
    assert "5 setting(s) differ between the 10 runs: augment, dropout_rate, l2, learning_rate, normalization." \
        in markdown
    # From the record, not from the runs: a value the study declares as varied is shown even where
    # the runs present hold one value (the others deleted), and the record's fixed values are the shared ones.
    record = json.loads((folder / "collection.json").read_text())
    record["fixed"]["epochs"] = 7
    atomic.write_json(folder / "collection.json", record)
    few = build_report(folder)
    _, shared = _table(_html(few), "Settings shared")
    assert {"setting": "epochs", "value": "7"} in shared


def test_settings_the_models_do_not_use_are_left_out_of_the_shared_ones(e1_ablation, isolated_dirs):
    from lab.report import unused_by_the_models

    folder, runs = e1_ablation
    report = build_report(folder)
    _, shared = _table(_html(report), "Settings shared")
    names = {row["setting"] for row in shared}
    assert "epochs" in names and "model" in names
    assert not {"weights", "feature_cache"} & names  # a CNN built from scratch loads no weights
    # The page shows them collapsed (a click opens them); the Markdown lists them whole.
    page = report.html.read_text(encoding="utf-8")
    assert f"<details><summary>Settings shared by every run ({len(shared)} rows)</summary>" in page
    markdown = report.markdown.read_text(encoding="utf-8")
    line = next(line for line in markdown.splitlines() if line.startswith("Not shown, as no run's model uses them"))
    assert all(name in line for name in ("weights", "backbone", "unfreeze", "feature_cache"))
    assert not [line for line in markdown.splitlines() if line.startswith("Unset (None)") and "backbone" in line]
    # One transfer run among them: its weights apply, so they are shown.
    transfer = _record("transfer", model="transfer", settings={"weights": "imagenet", "backbone": "resnet50"})
    assert "weights" not in unused_by_the_models([runs[0], transfer])
    assert {"weights", "backbone", "feature_cache"} <= set(unused_by_the_models(runs))


def test_report_files_are_readable_by_others(e1_ablation):
    """0644 as open() makes them (the umask respected), not tempfile's 0600."""
    import os

    folder, _ = e1_ablation
    report = build_report(folder)
    for path in (report.html, report.markdown, *report.figures, folder / "collection.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    previous = os.umask(0o027)
    try:
        atomic.write_text(folder / "private.txt", "x")
    finally:
        os.umask(previous)
    assert (folder / "private.txt").stat().st_mode & 0o777 == 0o640


def test_the_best_runs_worst_predictions_are_shown(demo_sweep):
    """The run's own highest-loss grid (lab.runs.plots.top_losses, drawn where the test images are at
    hand) is shown beside its random sample of predictions."""
    folder, runs = demo_sweep
    best = runs[1]
    predictions = best.predictions()
    images = np.random.default_rng(0).random((len(predictions["y_true"]), 8, 8, 1))
    plots.save(plots.top_losses(images, predictions["y_true"], predictions["y_prob"], CLASSES),
               best.path / "plots" / "top_losses.png")
    report = build_report(folder)
    assert "figures/best-top_losses.png" in report.markdown.read_text(encoding="utf-8")
    assert (report.markdown.parent / "figures" / "best-top_losses.png").read_bytes()[:4] == b"\x89PNG"


def _layout(html: Path, width: int) -> dict:
    """The page's and each table box's scroll and client widths in headless Chromium at ``width`` px."""
    probe = html.with_name("layout-probe.html")
    script = ("<script>document.body.dataset.layout = JSON.stringify({page: [document.documentElement.scrollWidth, "
              "document.documentElement.clientWidth], tables: Array.from(document.querySelectorAll('.table-wrap'))"
              ".map(w => [w.previousElementSibling.textContent, w.scrollWidth, w.clientWidth])});</script>")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    # Scrollbars shown, as a reader's browser shows them: they take their room from the page.
    done = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                           f"--user-data-dir={html.parent / 'chromium-profile'}", f"--window-size={width},2000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-layout="([^"]*)"', done.stdout)
    assert found, done.stdout[-2000:]
    return json.loads(unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium): the "
                                             "report's layout at 1200 px cannot be checked")
def test_the_page_does_not_scroll_sideways_at_1200_px(e1_ablation):
    folder, _ = e1_ablation
    report = build_report(folder)
    layout = _layout(report.html, 1200)
    page_scroll, page_client = layout["page"]
    assert page_scroll <= page_client, layout
    tables = {caption: (scroll, client) for caption, scroll, client in layout["tables"]}
    scroll, client = next(value for caption, value in tables.items() if caption.startswith("Results"))
    assert scroll <= client, tables  # the results table fits the page: no scrolling inside it either


def test_a_batch_whose_notebook_makes_several_runs_shows_what_differs_between_them(isolated_dirs):
    """A batch's record names the notebooks' parameters; the runs one notebook makes may differ
    in more (a learning-rate sweep inside the notebook), which the report shows after them."""
    from lab.runs.collection import write_collection

    runs = [_record(f"lr{rate}", learning_rate=rate, seed=i) for i, rate in enumerate((1e-2, 1e-3))]
    members = [{"run_id": run.run_id, "name": run.name, "status": run.status, "job": "sweep-lr",
                "parameters": {"epochs": 2, "quick": True}} for run in runs]
    write_collection(isolated_dirs / "reports" / "batches" / "lr", kind="batch", name="lr", varied={},
                     fixed={"epochs": 2, "quick": True}, members=members, started=None)
    report = build_report("batch:lr")
    parser = _html(report)
    _, per_run = _table(parser, "Settings that varied")
    assert [row["learning_rate"] for row in per_run] == ["0.01", "0.001"]
    _, shared = _table(parser, "Settings shared")
    assert {"setting": "quick", "value": "True"} in shared
