"""Configurations compared with a baseline: the spread of each, a verdict for each, and what to
distrust (``compare(runs, baseline=...)``).

A group of runs (a sweep, a batch, an ablation, any report's source) holds configurations, each
run once per seed. ``group_runs`` finds them: runs whose configuration is the same once the seed
and the bookkeeping (``lab.config.base.NOT_HASHED``: name, tags, folders, verbosity) are set
aside, and that carry the same name, are one configuration; a group of one-seed runs is one run
per configuration. ``compare`` then gives

- per configuration and summary metric: the mean and a 95% interval, across seeds (Student's t)
  with two seeds or more, else over the run's test images (a bootstrap);
- per configuration against the baseline (a ``baseline`` name, default the first configuration)
  and metric: the difference with its interval, the tests that apply (across seeds: a paired t
  test on the per-seed differences; over the test images: McNemar's exact test for accuracy, a
  paired bootstrap for AUC, IoU and Dice), their p-values adjusted by Holm over the
  configurations, and a verdict in words: ``better``, ``worse`` or ``within noise``. A difference
  is called better or worse only when every test that applies finds it (adjusted p < 0.05): it
  must stand out from the seeds' noise and from the test images' noise alike.
- warnings: a configuration that changes more than one setting against the baseline (named), a
  run whose best epoch is its last (still improving), a validation or test split too small for
  the differences shown, a metric at its ceiling (1.0) or floor (0.0).

The statistics are ``lab.runs.confidence``'s (scipy's); this module decides what is compared with what.
Numbers are printed with the digits their split supports (``lab.runs.confidence.decimals``). The
sweep's and the batch's summaries (``results.md``, ``summary.md``) end with ``Comparisons.markdown``,
and the report shows the same tables (``lab.report.comparisons``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from lab.system import atomic
from lab.runs.confidence import (ALPHA, N_RESAMPLES, NO_SPREAD, Estimate, across_seeds, bootstrap_items,
                            format_estimate, holm, mcnemar, proportion_interval, seed_difference)
from lab.config.base import NOT_HASHED
from lab.runs.records import Run
from lab.tasks import TASKS

# Settings that say which run it is, not what it computes: set aside when runs are grouped into
# configurations and when a configuration is compared with the baseline.
NOT_CONFIGURATION = frozenset({*NOT_HASHED, "seed"})
# The metrics compared with the baseline, per task, the first deciding a configuration's verdict.
# Every one is better higher. Those with a scorer over test items (``_TestItems``) also get
# intervals and paired tests over the test images; the others (COCO AP, PSNR) only across seeds.
COMPARED = {
    "classification": ("test_accuracy", "test_macro_auc"),
    "segmentation": ("test_mean_iou", "test_mean_dice", "test_pixel_accuracy"),
    "reconstruction": ("test_psnr",),
    "instance": ("test_mask_ap", "test_box_ap"),
}
# Metrics that live in [0, 1] (their names hold one of these): 1.0 is a ceiling and 0.0 a floor.
BOUNDED = ("accuracy", "auc", "iou", "dice", "_ap", "f1")


@dataclasses.dataclass
class Configuration:
    """The runs of one configuration (one per seed), in the source's order.

    Attributes:
        label: its name (the runs' name, followed by the settings that differ when other
            configurations have the same name: ``cnn-digits (learning_rate=0.01)``).
        runs: its runs, every status.
        settings: its configuration without the seed and the bookkeeping (``configuration``).
    """

    label: str
    runs: list[Run]
    settings: dict[str, Any]

    @property
    def completed(self) -> list[Run]:
        """The runs that completed: only they are summarised and compared."""
        return [run for run in self.runs if run.status == "completed"]

    @property
    def seeds(self) -> list[Any]:
        return [run.config.get("seed") for run in self.completed]


def configuration(run: Run) -> dict[str, Any]:
    """What a run computes, as compared between runs: its configuration's fields (those of its
    task's configuration class) without the seed and the bookkeeping (``NOT_CONFIGURATION``)."""
    fields = TASKS[run.task].config_class.field_names() if run.task in TASKS else list(run.config)
    return {key: run.config[key] for key in fields if key in run.config and key not in NOT_CONFIGURATION}


def group_runs(runs: Iterable[Run]) -> list[Configuration]:
    """The configurations of a group of runs, in order of first appearance: runs of the same name
    and the same ``configuration`` are the seeds of one configuration.

    Args:
        runs: any runs (a sweep's, a batch's, a tag's); one-seed groups give one run each.

    Returns:
        One Configuration per distinct (name, configuration); configurations that share a name
        (a sweep's unnamed variants are all named after their model and data) are told apart by
        the settings that differ between them: ``cnn-digits (learning_rate=0.01)``.
    """
    groups: dict[str, Configuration] = {}
    for run in runs:
        settings = configuration(run)
        key = json.dumps([run.name, settings], sort_keys=True, default=str)
        if key not in groups:
            groups[key] = Configuration(run.name, [], settings)
        groups[key].runs.append(run)
    configurations = list(groups.values())
    for name in {group.label for group in configurations}:
        namesakes = [group for group in configurations if group.label == name]
        if len(namesakes) > 1:
            differing = [key for key in dict.fromkeys(k for group in namesakes for k in group.settings)
                         if len({_text(group.settings.get(key)) for group in namesakes}) > 1]
            for group in namesakes:
                group.label = f"{name} ({', '.join(f'{key}={_text(group.settings.get(key))}' for key in differing)})"
    return configurations


def _text(value: Any) -> str:
    """A setting as compared and shown: JSON (sorted keys), so that 0.001 and 1e-3 are one value."""
    return json.dumps(value, sort_keys=True, default=str)


def choose_baseline(configurations: Sequence[Configuration], baseline: str | None = None) -> Configuration:
    """The configuration named ``baseline`` (default: the first); a wrong name lists the valid ones."""
    if not configurations:
        raise ValueError("There is no configuration to compare (no runs).")
    if baseline is None:
        return configurations[0]
    for group in configurations:
        if group.label == baseline:
            return group
    raise ValueError(f"Unknown baseline {baseline!r}; the configurations are: "
                     f"{', '.join(group.label for group in configurations)}.")


def check_baseline(baseline: str | None, names: Sequence[str]) -> None:
    """Refuses a ``baseline`` that is none of ``names`` before anything runs (sweeps, batches)."""
    if baseline is not None and baseline not in names:
        raise ValueError(f"Unknown baseline {baseline!r}; the configurations are: {', '.join(map(str, names))}.")


# -- a run's test items ---------------------------------------------------------------------------

@dataclasses.dataclass
class _TestItems:
    """A run's test items as the comparisons read them from ``predictions.npz``: the truth (to
    check two runs saw the same test set), each metric's scorer, and which items it classified
    right (McNemar).

    A scorer takes how often each item is drawn, counts of shape (..., n) (all ones: the run's own
    score), and gives the score of each resample: drawing an item twice is weighting it twice. So a
    bootstrap resample costs a matrix product or a cumulative sum, not a sort or a rescoring.
    """

    truth: np.ndarray
    scorers: dict[str, Callable[[np.ndarray], np.ndarray]]
    correct: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.truth)

    def statistic(self, metric: str) -> Callable[[np.ndarray], np.ndarray]:
        """The metric of resampled item indices (..., n), as ``lab.runs.confidence.bootstrap_items`` asks."""
        return lambda indices: self.scorers[metric](_counts(indices, self.n))


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each resample: indices (..., m) as counts (..., n)."""
    flat = np.asarray(indices, dtype=np.int64).reshape(-1, np.shape(indices)[-1])
    offsets = (np.arange(len(flat)) * n)[:, None]
    counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * n).reshape(len(flat), n)
    return counts.reshape(*np.shape(indices)[:-1], n).astype(np.float64)


# Above this many (items x classes x resamples) the AUC is not bootstrapped over test images: the
# limit is about ten seconds on one idle core (CIFAR-10's test set is within it, CIFAR-100's, ten
# times larger, beyond), and its comparisons then rest on the seeds alone.
AUC_BOOTSTRAP_LIMIT = 5e8


def _test_items(run: Run, n_resamples: int = N_RESAMPLES) -> _TestItems | None:
    """The run's test items, or None when its record has no usable predictions (no file, a
    diverged run's NaN probabilities, a task without item scores)."""
    if not (run.path / "predictions.npz").exists():
        return None
    predictions = run.predictions()
    if "y_prob" in predictions:
        y_true = np.asarray(predictions["y_true"]).astype(np.int64).reshape(-1)
        y_prob = np.asarray(predictions["y_prob"], dtype=np.float64)
        if not np.isfinite(y_prob).all() or len(y_true) < 2:
            return None
        correct = (y_prob.argmax(axis=1) == y_true).astype(np.float64)
        scorers = {"test_accuracy": lambda counts: counts @ correct / counts.sum(axis=-1)}
        if y_prob.size * n_resamples <= AUC_BOOTSTRAP_LIMIT:
            scorers["test_macro_auc"] = _macro_auc(y_true, y_prob)
        return _TestItems(y_true, scorers, correct.astype(bool))
    if "y_pred" in predictions and "class_names" in predictions:
        from lab.runs.evaluation import pixel_confusion_matrix
        from lab.tasks.segmentation.tasks import masks_per_image

        masks_true, masks_pred = masks_per_image(predictions)
        k = len(predictions["class_names"])
        matrices = np.stack([pixel_confusion_matrix(t, p, k) for t, p in zip(masks_true, masks_pred)])
        if len(matrices) < 2:
            return None
        truth = matrices.sum(axis=2)  # each image's true pixels per class
        return _TestItems(truth, {f"test_{score}": _segmentation(matrices, score)
                                  for score in ("mean_iou", "mean_dice", "pixel_accuracy")})
    return None


def _macro_auc(y_true: np.ndarray, y_prob: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``lab.runs.evaluation.macro_auc`` of resampled test items, as a scorer of counts (``_TestItems``).

    Each class's one-vs-rest AUC is the share of (positive, negative) pairs the positive wins, a
    tie counting half (the Mann-Whitney U over positives times negatives, as scikit-learn's ROC AUC
    counts it). With the items sorted by score once, the negatives a positive beats are a
    cumulative sum of the negatives' counts, so every resample is scored in one pass. The classes
    absent from a resample are left out of its mean, as ``macro_auc`` leaves them out.
    """
    k = y_prob.shape[1]
    parts = []
    for c in ([1] if k == 2 else range(k)):  # a binary task scores the positive class, as macro_auc does
        order = np.argsort(y_prob[:, c], kind="stable")
        scores = y_prob[order, c]
        first = np.r_[True, scores[1:] != scores[:-1]]  # where each run of tied scores starts
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], len(scores)]  # one past each run's end
        parts.append((order, (y_true[order] == c).astype(np.float64), starts[group], ends[group]))

    def scorer(counts: np.ndarray) -> np.ndarray:
        aucs = []
        for order, positive, start, end in parts:
            weights = counts[..., order]
            negatives = weights * (1 - positive)
            before = np.concatenate([np.zeros_like(negatives[..., :1]), np.cumsum(negatives, axis=-1)], axis=-1)
            below, tied = before[..., start], before[..., end] - before[..., start]
            n_pos, n_neg = (weights * positive).sum(axis=-1), negatives.sum(axis=-1)
            wins = (weights * positive * (below + 0.5 * tied)).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                aucs.append(np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan))
        return _mean_present(np.stack(aucs, axis=-1))

    return scorer


def _segmentation(matrices: np.ndarray, score: str) -> Callable[[np.ndarray], np.ndarray]:
    """Mean IoU, mean Dice or pixel accuracy of resampled images (``matrices``: each image's pixel
    confusion matrix, (n, k, k)) as a scorer of counts, from the summed confusion matrix as
    ``lab.runs.evaluation.segmentation_metrics`` scores a whole test set."""
    from lab.runs.evaluation import scores_from_confusion

    n, k = len(matrices), matrices.shape[-1]
    flat = matrices.reshape(n, k * k).astype(np.float64)

    def scorer(counts: np.ndarray) -> np.ndarray:
        total = (counts @ flat).reshape(*counts.shape[:-1], k, k)
        if score == "pixel_accuracy":
            return np.trace(total, axis1=-2, axis2=-1) / total.sum(axis=(-2, -1))
        return _mean_present(scores_from_confusion(total)[score.removeprefix("mean_")])

    return scorer


def _mean_present(values: np.ndarray) -> np.ndarray:
    """The mean over the last axis of the finite values (NaN where none is): a class neither present
    nor predicted has no score and is left out, as ``lab.runs.evaluation`` leaves it out."""
    present = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        return np.where(present.any(axis=-1), np.where(present, values, 0).sum(axis=-1) / present.sum(axis=-1),
                        np.nan)


# -- the comparison -------------------------------------------------------------------------------

@dataclasses.dataclass
class Comparisons:
    """What ``compare`` found.

    Attributes:
        configurations: the configurations, in order.
        baseline: the one the others are compared with.
        metrics: the metrics compared.
        summary: one row per configuration: runs, seeds, each metric's mean with its interval
            (text), and the verdict.
        differences: one row per configuration and metric against the baseline: the difference
            with its interval (text and numbers), the tests, p-values (raw and Holm-adjusted)
            and the verdict.
        warnings: sentences saying what to distrust.
        notes: how the numbers were had (one sentence each).
    """

    configurations: list[Configuration]
    baseline: Configuration
    metrics: list[str]
    summary: pd.DataFrame
    differences: pd.DataFrame
    warnings: list[str]
    notes: list[str]

    @property
    def verdicts(self) -> dict[str, str]:
        """Each configuration's verdict on the first metric compared (the baseline: "baseline")."""
        return dict(zip(self.summary["configuration"], self.summary["verdict"]))

    def markdown(self) -> str:
        """The summary, the differences and the warnings as Markdown (a sweep's ``results.md``)."""
        def table(frame: pd.DataFrame) -> str:  # the cells are already text with their digits: as written
            return frame.to_markdown(index=False, disable_numparse=True)

        lines = [f"## Against the baseline {self.baseline.label}", "", *self.notes, "", table(self.summary), ""]
        if not self.differences.empty:
            lines += [table(self.differences[list(SHOWN_DIFFERENCES)]), ""]
        lines += ["Warnings:", "", *(f"- {w}" for w in self.warnings)] if self.warnings else ["No warnings."]
        return "\n".join(lines) + "\n"


# The columns of ``Comparisons.differences`` that tables show (the others are its numbers).
SHOWN_DIFFERENCES = ("configuration", "metric", "baseline", "value", "difference", "tests", "p", "p (Holm)",
                     "verdict")


def compare(runs: Iterable[Run], baseline: str | None = None, *, n_resamples: int = N_RESAMPLES) -> Comparisons:
    """Groups the runs into configurations and compares each with the baseline.

    Args:
        runs: the runs (every status; only completed runs are summarised and compared).
        baseline: the baseline configuration's name (``Configuration.label``; default: the first).
        n_resamples: bootstrap resamples over the test images.

    Returns:
        Comparisons (see its attributes).

    Raises:
        ValueError: no runs, or a baseline that names no configuration (the message lists them).
    """
    configurations = group_runs(runs)
    base = choose_baseline(configurations, baseline)
    cache: dict[str, _TestItems | None] = {}

    def items(run: Run) -> _TestItems | None:
        if run.run_id not in cache:
            cache[run.run_id] = _test_items(run, n_resamples)
        return cache[run.run_id]

    present = {key for group in configurations for run in group.completed for key in run.metrics}
    metrics = [m for m in COMPARED.get(base.runs[0].task, ()) if m in present]
    shown = {(group.label, metric): _format(_spread(group, metric, items, n_resamples), _n_items(group, items))
             for group in configurations for metric in metrics}
    summary_rows = [{"configuration": group.label, "runs": f"{len(group.completed)} of {len(group.runs)}",
                     "seeds": ", ".join(str(seed) for seed in group.seeds),
                     **{metric: shown[group.label, metric] for metric in metrics}} for group in configurations]
    differences = _differences(configurations, base, metrics, items, n_resamples, shown)
    verdicts = {}
    if not differences.empty:
        first = differences.drop_duplicates("configuration")  # the first metric compared decides
        verdicts = dict(zip(first["configuration"], first["verdict"]))
    for row in summary_rows:
        row["verdict"] = "baseline" if row["configuration"] == base.label else verdicts.get(row["configuration"], "")
    warnings = [*confounded(configurations, base), *still_improving(configurations), *at_bounds(configurations),
                *small_splits(configurations, base, differences, items, n_resamples)]
    notes = [f"Mean and 95% interval of each metric: across seeds (Student's t) where a configuration ran two "
             f"seeds or more, else over its run's test images (percentile bootstrap, {n_resamples} resamples); "
             f"only completed runs count.",
             "Differences against the baseline: a paired t test across seeds where both ran the same seeds, and "
             "over the test images McNemar's exact test (accuracy) or a paired bootstrap (the others), each "
             "adjusted by Holm over the configurations. 'better' or 'worse' means every test that applies "
             f"finds the difference (adjusted p < {ALPHA}); 'within noise' means at least one does not."]
    if not metrics:
        compared = ", ".join(COMPARED.get(base.runs[0].task, ())) or "none for this task"
        notes = [f"No completed run records a metric compared ({compared}): nothing to compare."]
    return Comparisons(configurations, base, metrics, pd.DataFrame(summary_rows, dtype=object), differences,
                       warnings, notes)


def _spread(group: Configuration, metric: str, items, n_resamples: int) -> Estimate | None:
    """A configuration's metric with its interval: across seeds, or over its one run's test images."""
    values = [run.metrics[metric] for run in group.completed if _finite(run.metrics.get(metric))]
    if not values:
        return None
    if len(values) > 1:
        return across_seeds(values)
    run = next(run for run in group.completed if _finite(run.metrics.get(metric)))
    found = items(run)
    if found is None or metric not in found.scorers:
        return Estimate(float(values[0]))
    estimate = bootstrap_items(found.statistic(metric), found.n, n_resamples=n_resamples, what="test images")
    return dataclasses.replace(estimate, value=float(values[0]))  # the record's number, as recorded


def _differences(configurations: Sequence[Configuration], base: Configuration, metrics: Sequence[str], items,
                 n_resamples: int, shown: dict[tuple[str, str], str]) -> pd.DataFrame:
    rows = []
    for metric in metrics:
        block = [{"configuration": group.label, "metric": metric, "baseline": shown[base.label, metric],
                  "value": shown[group.label, metric], **_difference(group, base, metric, items, n_resamples)}
                 for group in configurations if group is not base]
        for kind in ("seeds_p", "items_p"):  # Holm over the configurations, each test apart
            for row, adjusted in zip(block, holm([row[kind] for row in block])):
                row[kind + "_holm"] = adjusted
        for row in block:
            row.update(_verdict(row))
        rows += block
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(SHOWN_DIFFERENCES))
    return frame


def _difference(group: Configuration, base: Configuration, metric: str, items, n_resamples: int) -> dict[str, Any]:
    """One configuration against the baseline on one metric (before Holm)."""
    n = _n_items(base, items)
    row: dict[str, Any] = {"difference": "", "diff": None, "low": None, "high": None, "seeds_p": None,
                           "items_p": None, "tests": "", "reason": ""}
    a_runs = [run for run in base.completed if _finite(run.metrics.get(metric))]
    b_runs = [run for run in group.completed if _finite(run.metrics.get(metric))]
    if not a_runs or not b_runs:
        row["reason"] = f"no completed run of {'the baseline' if not a_runs else group.label} has {metric}"
        return row
    # Runs of the same seed are paired (their difference leaves the seed's share of the noise out);
    # without a shared seed, or with a seed repeated on a side, the sides are compared unpaired and
    # the test images are paired run by run in order (any pairing of two classifiers is a valid one).
    by_seed_a = {run.config.get("seed"): run for run in a_runs}
    by_seed_b = {run.config.get("seed"): run for run in b_runs}
    common = [seed for seed in by_seed_a if seed in by_seed_b]
    paired = bool(common) and len(by_seed_a) == len(a_runs) and len(by_seed_b) == len(b_runs)
    pairs = [(by_seed_a[s], by_seed_b[s]) for s in common] if paired else list(zip(a_runs, b_runs))
    if paired:
        seeds = seed_difference([a.metrics[metric] for a, _ in pairs], [b.metrics[metric] for _, b in pairs],
                                paired=True)
    else:
        seeds = seed_difference([r.metrics[metric] for r in a_runs], [r.metrics[metric] for r in b_runs],
                                paired=False)
    tests = []
    if seeds.p_value is not None:
        row["seeds_p"] = seeds.p_value
        tests.append(seeds.method)
    found = [(items(a), items(b)) for a, b in pairs]
    over_items = None
    if found and all(x is not None and y is not None and metric in x.scorers and metric in y.scorers
                     for x, y in found):
        if all(x.truth.shape == y.truth.shape and np.array_equal(x.truth, y.truth) for x, y in found):
            def statistic(idx: np.ndarray) -> np.ndarray:
                counts = _counts(idx, found[0][0].n)
                return np.mean([y.scorers[metric](counts) - x.scorers[metric](counts) for x, y in found], axis=0)

            over_items = bootstrap_items(statistic, found[0][0].n, n_resamples=n_resamples,
                                         what=f"test images, {len(found)} seed pair(s)")
            if metric == "test_accuracy":  # McNemar's exact test, the discordant pairs of every seed pooled
                _, _, p_value = mcnemar(np.concatenate([x.correct for x, _ in found]),
                                        np.concatenate([y.correct for _, y in found]))
                row["items_p"] = p_value
                tests.append(f"McNemar exact, {len(found)} seed pair(s)")
            else:
                row["items_p"] = over_items.p_value
                tests.append(over_items.method.replace("bootstrap", "paired bootstrap"))
        else:
            row["reason"] = "the test sets differ: no paired test over test images"
    shown = seeds if seeds.has_interval else (over_items or seeds)
    shown = dataclasses.replace(shown, value=seeds.value)  # the difference of the records' numbers
    row.update({"difference": format_estimate(shown, n, signed=True), "diff": shown.value,
                "low": shown.low, "high": shown.high, "tests": "; ".join(tests) or NO_SPREAD})
    return row


def _verdict(row: dict[str, Any]) -> dict[str, Any]:
    adjusted = [row[k] for k in ("seeds_p_holm", "items_p_holm") if row.get(k) is not None]
    raw = [row[k] for k in ("seeds_p", "items_p") if row.get(k) is not None]
    out = {"p": ", ".join(f"{p:.2g}" for p in raw), "p (Holm)": ", ".join(f"{p:.2g}" for p in adjusted)}
    if not adjusted:
        reason = row.get("reason") or "no test applies (one seed and no test predictions)"
        return out | {"verdict": f"not compared: {reason}"}
    if all(p < ALPHA for p in adjusted) and row["diff"] != 0:
        return out | {"verdict": "better" if row["diff"] > 0 else "worse"}
    return out | {"verdict": "within noise"}


def _n_items(group: Configuration, items) -> int | None:
    """The test items behind a configuration's numbers (from its predictions, else the record's sizes)."""
    for run in group.completed:
        found = items(run)
        if found is not None:
            return found.n
        sizes = run.split_sizes
        if sizes.get("test"):
            return int(sizes["test"])
    return None


def _format(estimate: Estimate | None, n: int | None) -> str:
    return "" if estimate is None else format_estimate(estimate, n)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_comparison(folder: str | os.PathLike, runs: Sequence[Run], baseline: str | None = None) -> str:
    """Compares a summary's runs, writes ``comparison.csv`` (the differences, with their numbers) into
    its folder and returns the Markdown its summary ends with ('' without runs).

    A baseline that names none of the runs' configurations (a batch job that failed before
    training, or a notebook that names its runs otherwise) is said, and the first configuration
    stands in for it: the summary of the runs that did finish is still written.
    """
    if not runs:
        return ""
    labels = [group.label for group in group_runs(runs)]
    missing = baseline is not None and baseline not in labels
    comparisons = compare(runs, None if missing else baseline)
    if missing:
        comparisons.warnings.insert(0, f"No configuration of these runs is named {baseline!r}, the baseline asked for "
                                       f"(a job that failed before training?): the configurations are compared "
                                       f"with {labels[0]!r} instead.")
    with atomic.atomic_path(Path(folder) / "comparison.csv") as tmp:
        comparisons.differences.to_csv(tmp, index=False)
    return "\n" + comparisons.markdown()


# -- warnings -------------------------------------------------------------------------------------

def confounded(configurations: Sequence[Configuration], base: Configuration) -> list[str]:
    """A configuration that changes more than one setting against the baseline, naming them: its
    difference cannot be put on any one of them."""
    found = []
    for group in configurations:
        if group is base:
            continue
        keys = dict.fromkeys([*base.settings, *group.settings])
        changed = [key for key in keys if _text(base.settings.get(key)) != _text(group.settings.get(key))]
        if len(changed) > 1:
            found.append(f"{group.label} changes {len(changed)} settings against the baseline {base.label}: "
                         f"{', '.join(changed)}; its difference cannot be put on any one of them.")
    return found


def still_improving(configurations: Sequence[Configuration]) -> list[str]:
    """Completed runs whose best epoch is their last: training had not stopped improving, and more
    epochs may change the comparison."""
    found = []
    for group in configurations:
        last = [run for run in group.completed if _finite(run.metrics.get("best_epoch"))
                and run.metrics.get("best_epoch") == run.metrics.get("epochs_run") and run.metrics["best_epoch"] > 1]
        if last:
            seeds = ", ".join(str(run.config.get("seed")) for run in last)
            found.append(f"{group.label}: the best epoch is the last one ({int(last[0].metrics['best_epoch'])}) in "
                         f"{len(last)} of {len(group.completed)} run(s) (seed {seeds}): still improving; more epochs "
                         f"may change the comparison.")
    return found


def at_bounds(configurations: Sequence[Configuration]) -> list[str]:
    """Metrics in [0, 1] at 1.0 (a ceiling: an improvement cannot show) or 0.0 (a floor)."""
    found = []
    for group in configurations:
        for bound, word in ((1.0, "ceiling"), (0.0, "floor")):
            metrics = sorted({key for run in group.completed for key, value in run.metrics.items()
                              if key.startswith(("val_", "test_", "train_")) and any(b in key for b in BOUNDED)
                              and _finite(value) and value == bound})
            if metrics:
                found.append(f"{group.label}: {', '.join(metrics)} at {bound:.1f}, the metric's {word}: "
                             f"a difference {'above' if bound else 'below'} it cannot show.")
    return found


def small_splits(configurations: Sequence[Configuration], base: Configuration, differences: pd.DataFrame, items,
                 n_resamples: int) -> list[str]:
    """A split too small for the differences shown: the test split's noise (the baseline's 95%
    interval over its test images) wider than every difference against it; the validation split's
    (an exact binomial interval of the baseline's validation accuracy) wider than every
    difference in validation accuracy, which chose the best epochs and the best run."""
    found = []
    for metric in dict.fromkeys(differences["metric"]) if not differences.empty else ():
        shown = [abs(d) for d in differences.loc[differences["metric"] == metric, "diff"] if _finite(d)]
        run = next((r for r in base.completed if items(r) is not None and metric in items(r).scorers), None)
        if not shown or run is None:
            continue
        noise = bootstrap_items(items(run).statistic(metric), items(run).n, n_resamples=n_resamples)
        half = (noise.high - noise.low) / 2
        if max(shown) < half:
            found.append(f"The test split ({items(run).n} images) is too small for the {metric} differences shown: "
                         f"the baseline's {metric} is known to about ±{half:.2g} (95%), more than the largest "
                         f"difference ({max(shown):.2g}).")
    sizes = [run.split_sizes.get("val") for run in base.completed]
    values = {group.label: np.mean([r.metrics["val_accuracy"] for r in group.completed])
              for group in configurations if any(_finite(r.metrics.get("val_accuracy")) for r in group.completed)
              and all(_finite(r.metrics.get("val_accuracy")) for r in group.completed)}
    if sizes and sizes[0] and base.label in values and len(values) > 1:
        n = int(sizes[0])
        noise = proportion_interval(round(values[base.label] * n), n)
        half = (noise.high - noise.low) / 2
        largest = max(abs(v - values[base.label]) for label, v in values.items() if label != base.label)
        if largest < half:
            found.append(f"The validation split ({n} images) is too small for the differences in val_accuracy "
                         f"({largest:.2g} at most, against ±{half:.2g} of noise): the best epochs and the best "
                         f"run were chosen on noise.")
    return found
