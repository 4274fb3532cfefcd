"""``lab.runs.confidence`` and ``lab.runs.comparison``: the statistics against scipy and hand-worked cases,
the grouping of seeds into configurations, verdicts and warnings, and the summaries and report
that show them (their numbers equal to the records')."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lab.runs.comparison import compare, configuration, group_runs
from lab.runs.confidence import (NO_SPREAD, Estimate, across_seeds, bootstrap_items, decimals, format_estimate, holm,
                            mcnemar, proportion_interval, seed_difference)
from lab.runs.evaluation import classification_metrics, macro_auc, segmentation_metrics
from lab.runs.records import RunWriter, load_run

CLASSES = ["a", "b", "c"]


def _run(name, *, seed=0, right=0.8, n=300, best_epoch=4, epochs_run=10, reports_dir=None, status="completed",
         **settings):
    """A classification run record without training: ``right`` of its ``n`` test images classified
    right (which ones depends on the seed), its metrics computed from those predictions."""
    rng = np.random.default_rng(seed * 1000 + int(right * 100))
    y_true = np.arange(n) % 3
    correct = rng.random(n) < right
    y_prob = rng.dirichlet(np.ones(3), size=n) * 0.2
    y_prob[np.arange(n), np.where(correct, y_true, (y_true + 1) % 3)] += 0.8
    config = {"name": name, "model": "cnn", "task": "classification", "learning_rate": 1e-3, "seed": seed,
              "tags": [f"seed{seed}"], "epochs": 10, "verbose": 0, "record_version": 3,
              "config_hash": f"{name}-{seed}", "data": {"name": "toy", "sizes": {"train": 600, "val": 120, "test": n}},
              **settings}
    writer = RunWriter(config, name=name, reports_dir=reports_dir)
    np.savez_compressed(writer.path / "predictions.npz", y_true=y_true, y_prob=y_prob, class_names=np.array(CLASSES))
    pd.DataFrame({"epoch": range(epochs_run), "loss": np.linspace(1, 0.5, epochs_run)}).to_csv(
        writer.path / "history.csv", index=False)
    metrics = {"name": name, "status": status, "task": "classification", "best_epoch": best_epoch,
               "epochs_run": epochs_run, "val_accuracy": right, "val_loss": 1 - right,
               **classification_metrics(y_true, y_prob, prefix="test_")}
    return load_run(writer.publish(metrics))


# -- the statistics ------------------------------------------------------------------------------

def test_mcnemar_matches_the_exact_binomial_computed_by_hand():
    # b = 1 item right only by the baseline, c = 9 right only by the other: under the null each
    # of the 10 discordant items goes either way with probability 1/2.
    baseline = np.array([True] * 50 + [True] * 1 + [False] * 9 + [False] * 40)
    other = np.array([True] * 50 + [False] * 1 + [True] * 9 + [False] * 40)
    b, c, p_value = mcnemar(baseline, other)
    by_hand = 2 * sum(math.comb(10, i) for i in range(0, 2)) / 2**10  # P(X <= 1) twice: 22 / 1024
    assert (b, c) == (1, 9) and p_value == pytest.approx(by_hand) and by_hand == pytest.approx(0.021484375)
    assert mcnemar(baseline, baseline) == (0, 0, 1.0)  # no discordant item: no evidence at all
    assert mcnemar(other, baseline)[2] == pytest.approx(by_hand)  # symmetric
    with pytest.raises(ValueError, match="same test items"):
        mcnemar(baseline, other[:-1])


def test_a_bootstrap_interval_covers_the_true_mean_in_at_least_90_percent_of_200_draws():
    rng = np.random.default_rng(7)
    covered = 0
    for draw in range(200):
        sample = rng.normal(loc=0.3, scale=1.0, size=60)
        interval = bootstrap_items(lambda idx: sample[idx].mean(axis=-1), len(sample), n_resamples=300, seed=draw)
        assert interval.value == pytest.approx(sample.mean())
        covered += interval.low <= 0.3 <= interval.high
    assert covered >= 180, covered


def test_intervals_across_seeds_are_scipys_t_intervals():
    values = [0.81, 0.84, 0.79, 0.83]
    estimate = across_seeds(values)
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(values), scale=stats.sem(values))
    assert (estimate.low, estimate.high) == (pytest.approx(low), pytest.approx(high))
    assert estimate.std == pytest.approx(np.std(values, ddof=1)) and estimate.method == "t across 4 seeds"
    one = across_seeds([0.8])
    assert one.method == NO_SPREAD and not one.has_interval and format_estimate(one, 300) == "0.800"
    with pytest.raises(ValueError, match="no finite number"):
        across_seeds([float("nan")])


def test_a_difference_across_seeds_is_a_paired_t_test_when_the_seeds_match():
    baseline, other = [0.80, 0.82, 0.78], [0.84, 0.85, 0.83]
    paired = seed_difference(baseline, other, paired=True)
    reference = stats.ttest_rel(other, baseline)
    assert paired.p_value == pytest.approx(reference.pvalue)
    assert (paired.low, paired.high) == tuple(pytest.approx(v) for v in reference.confidence_interval())
    welch = seed_difference(baseline, other, paired=False)
    assert welch.p_value == pytest.approx(stats.ttest_ind(other, baseline, equal_var=False).pvalue)
    single = seed_difference([0.8], [0.9], paired=True)
    assert single.p_value is None and single.method == NO_SPREAD and single.value == pytest.approx(0.1)


def test_holm_matches_a_worked_example():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.2]) == [pytest.approx(0.5), None, pytest.approx(0.4)]  # gaps kept
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 0.5 x 2 capped at 1, and 0.9 never below it
    assert holm([]) == []


def test_numbers_get_the_digits_their_split_supports():
    # An accuracy near 0.9 on 360 images has a standard error of about 0.016: two decimals.
    assert decimals(math.sqrt(0.9 * 0.1 / 360), 360) == 2
    assert decimals(1e-6, 360) == 3  # never finer than 1/360
    assert decimals(1e-6, 30) == 2 and decimals(None, None) == 4
    assert format_estimate(Estimate(0.9123, 0.8811, 0.9402, "t across 3 seeds", 3), 360) == "0.91 [0.88, 0.94]"
    assert format_estimate(Estimate(0.0123, -0.012, 0.0371, "x", 3), 360, signed=True) == "+0.01 [-0.01, +0.04]"
    exact = proportion_interval(324, 360)
    reference = stats.binomtest(324, 360).proportion_ci(method="exact")
    assert (exact.low, exact.high) == (pytest.approx(reference.low), pytest.approx(reference.high))


def test_item_scores_equal_the_recorded_metrics_on_every_item_and_on_resamples():
    """The bootstrap's scorers (of how often each item is drawn) give the run's own numbers on all
    its items and scikit-learn's on a resample: macro AUC (binary, multi-class with ties, a class
    absent) and segmentation IoU, Dice and pixel accuracy."""
    from lab.runs.comparison import _counts, _macro_auc, _segmentation
    from lab.runs.evaluation import pixel_confusion_matrix

    rng = np.random.default_rng(3)
    for k in (2, 4):
        y = rng.integers(0, k, 80)
        prob = rng.dirichlet(np.ones(k), 80)
        prob[40:60] = prob[:20]  # tied scores, counted as scikit-learn counts them
        scorer = _macro_auc(y, prob)
        assert scorer(np.ones(80)) == pytest.approx(macro_auc(y, prob))
        resamples = rng.integers(0, 80, (5, 80))
        assert scorer(_counts(resamples, 80)) == pytest.approx([macro_auc(y[r], prob[r]) for r in resamples])
    y, prob = np.repeat([0, 1, 2], 10), rng.dirichlet(np.ones(4), 30)  # class 3 absent: left out of the mean
    with pytest.warns(UserWarning, match="Only 3 of 4"):
        assert _macro_auc(y, prob)(np.ones(30)) == pytest.approx(macro_auc(y, prob))

    masks_true, masks_pred = rng.integers(0, 3, (6, 8, 8)), rng.integers(0, 3, (6, 8, 8))
    masks_pred[:, :4] = 0  # class 2 never predicted in the top rows: per-class scores differ
    matrices = np.stack([pixel_confusion_matrix(t, p, 3) for t, p in zip(masks_true, masks_pred)])
    recorded = segmentation_metrics(masks_true, masks_pred, ["bg", "x", "y"])
    resample = np.array([0, 0, 3, 5, 5, 5])
    again = segmentation_metrics(masks_true[resample], masks_pred[resample], ["bg", "x", "y"])
    for score in ("mean_iou", "mean_dice", "pixel_accuracy"):
        scorer = _segmentation(matrices, score)
        assert scorer(np.ones(6)) == pytest.approx(recorded[score])
        assert scorer(_counts(resample, 6)) == pytest.approx(again[score])


# -- configurations, verdicts, warnings --------------------------------------------------------------

def test_runs_of_one_configuration_and_several_seeds_are_one_group(isolated_dirs):
    runs = [_run("plain", seed=s) for s in range(3)] + [_run("plain", seed=0, learning_rate=1e-2),
                                                        _run("dropout", seed=0, dropout_rate=0.5)]
    groups = group_runs(runs)
    assert [g.label for g in groups] == ["plain (learning_rate=0.001)", "plain (learning_rate=0.01)", "dropout"]
    assert [len(g.runs) for g in groups] == [3, 1, 1] and groups[0].seeds == [0, 1, 2]
    assert "seed" not in configuration(runs[0]) and "tags" not in configuration(runs[0])
    assert "verbose" not in configuration(runs[0]) and configuration(runs[0])["learning_rate"] == 1e-3
    # Today's one-seed groups: one run per configuration, intervals over the test images.
    single = compare([runs[0], runs[4]])
    assert single.summary["runs"].tolist() == ["1 of 1", "1 of 1"]
    assert re.fullmatch(r"0\.\d\d \[0\.\d\d, 0\.\d\d\]", single.summary["test_accuracy"][0])


def test_a_clearly_better_configuration_is_better_and_a_repeat_within_noise(isolated_dirs):
    runs = [_run("base", seed=s, right=0.6) for s in range(3)]
    runs += [_run("good", seed=s, right=0.9, dropout_rate=0.5) for s in range(3)]
    runs += [_run("same", seed=s, right=0.6, dropout_rate=0.1) for s in range(3)]
    result = compare(runs, n_resamples=300)
    assert result.verdicts == {"base": "baseline", "good": "better", "same": "within noise"}
    good = result.differences.query("configuration == 'good' and metric == 'test_accuracy'").iloc[0]
    means = {g.label: np.mean([r.metrics["test_accuracy"] for r in g.runs]) for g in result.configurations}
    assert good["diff"] == pytest.approx(means["good"] - means["base"]) and good["low"] > 0
    assert "paired t across 3 seeds" in good["tests"] and "McNemar exact, 3 seed pair(s)" in good["tests"]
    # Against "good" as the baseline, the base is worse; an unknown baseline lists the valid names.
    assert compare(runs, "good", n_resamples=300).verdicts["base"] == "worse"
    with pytest.raises(ValueError, match="Unknown baseline 'nope'; the configurations are: base, good, same"):
        compare(runs, "nope")


def test_a_confounded_comparison_is_flagged_with_the_settings_it_changes(isolated_dirs):
    runs = [_run("1-plain"), _run("2-batchnorm", normalization="batch", learning_rate=5e-4),
            _run("4a-dropout", dropout_rate=0.2)]
    warnings = compare(runs, n_resamples=200).warnings
    confounded = [w for w in warnings if "changes" in w]
    assert confounded == ["2-batchnorm changes 2 settings against the baseline 1-plain: learning_rate, "
                          "normalization; its difference cannot be put on any one of them."]


def test_a_still_improving_run_and_a_metric_at_its_ceiling_are_flagged(isolated_dirs):
    runs = [_run("base", best_epoch=4), _run("longer", best_epoch=10, epochs_run=10, epochs=20),
            _run("perfect", right=1.0, dropout_rate=0.1)]
    warnings = compare(runs, n_resamples=200).warnings
    assert any(w.startswith("longer: the best epoch is the last one (10) in 1 of 1 run(s) (seed 0): still improving")
               for w in warnings), warnings
    assert not any(w.startswith("base: the best epoch") for w in warnings)
    assert any(w.startswith("perfect: test_accuracy") and "ceiling" in w for w in warnings), warnings


def test_splits_too_small_for_the_differences_shown_are_flagged(isolated_dirs):
    small = compare([_run("base", right=0.7, n=40), _run("other", right=0.72, n=40, dropout_rate=0.1)],
                    n_resamples=300).warnings
    assert any(w.startswith("The test split (40 images) is too small for the test_accuracy") for w in small), small
    assert any(w.startswith("The validation split (120 images) is too small") for w in small), small
    large = compare([_run("base", right=0.5, n=600), _run("other", right=0.9, n=600, dropout_rate=0.1)],
                    n_resamples=300).warnings
    assert not any("too small" in w for w in large), large


# -- summaries and the report --------------------------------------------------------------------

def test_the_sweep_summary_ends_with_the_comparisons_and_a_wrong_baseline_is_refused(isolated_dirs):
    from lab.studies.sweep import write_summary

    runs = [_run("base", seed=s) for s in range(2)] + [_run("wider", seed=s, dense_units=64) for s in range(2)]
    folder = write_summary("seeds", runs, varied=["dense_units"])
    markdown = (folder / "results.md").read_text()
    assert "## Against the baseline base" in markdown and "Warnings:" in markdown
    differences = pd.read_csv(folder / "comparison.csv")
    assert differences["configuration"].tolist() == ["wider", "wider"]
    assert differences["metric"].tolist() == ["test_accuracy", "test_macro_auc"]
    # A sweep refuses a wrong baseline before it trains anything...
    from lab.runs.records import read_index
    from lab.studies.sweep import run_sweep

    with pytest.raises(ValueError, match="Unknown baseline 'widr'; the configurations are: base, wider"):
        run_sweep({"dataset": "digits", "model": "cnn", "epochs": 1}, [{"name": "base"}, {"name": "wider"}],
                  name="refused", baseline="widr")
    assert len(read_index()) == len(runs)
    # ...and a summary of runs that lack it (a batch job that failed before training) says so.
    folder = write_summary("seeds", runs, varied=["dense_units"], baseline="widr")
    assert "No configuration of these runs is named 'widr'" in (folder / "results.md").read_text()


def test_an_ablation_or_batch_baseline_must_name_one_of_its_configurations():
    from lab.studies.ablation import E1_VARIANTS, main, notebook_batch_spec
    from lab.config import RunConfig

    base = RunConfig(dataset="digits", pipeline_size=16, epochs=2)
    spec = notebook_batch_spec(base, E1_VARIANTS[:2], name="e1", baseline="2-batchnorm")
    assert spec.baseline == "2-batchnorm"
    with pytest.raises(ValueError, match="Unknown baseline '9-none'; the configurations are: 1-plain, 2-batchnorm"):
        notebook_batch_spec(base, E1_VARIANTS[:2], name="e1", baseline="9-none")
    with pytest.raises(SystemExit):
        main(["--only", "1-plain", "--baseline", "2-batchnorm"])


def test_the_reports_comparison_numbers_equal_the_records(isolated_dirs):
    from lab.report import build_report
    from lab.studies.sweep import write_summary

    runs = [_run("base", seed=s, right=0.6) for s in range(3)] + [_run("better", seed=s, right=0.9, l2=1e-4)
                                                                 for s in range(3)]
    folder = write_summary("report-seeds", runs, varied=["l2"], baseline="base")
    report = build_report(folder)
    section = next(s for s in report.sections if s.anchor == "comparisons")
    summary = next(b.frame for b in section.blocks if getattr(b, "caption", "").startswith("Each configuration"))
    for group, row in zip(group_runs(runs), summary.to_dict("records")):
        values = [run.metrics["test_accuracy"] for run in group.runs]
        estimate = across_seeds(values)
        assert row["test_accuracy"] == format_estimate(estimate, 300)
        assert float(row["test_accuracy"].split()[0]) == pytest.approx(np.mean(values), abs=0.005)
        auc = [run.metrics["test_macro_auc"] for run in group.runs]
        assert row["test_macro_auc"] == format_estimate(across_seeds(auc), 300)
    assert summary["verdict"].tolist() == ["baseline", "better"]
    differences = next(b.frame for b in section.blocks if getattr(b, "caption", "").startswith("Differences"))
    accuracy = differences.set_index("metric").loc["test_accuracy"]
    paired = seed_difference([r.metrics["test_accuracy"] for r in runs[:3]],
                             [r.metrics["test_accuracy"] for r in runs[3:]], paired=True)
    assert accuracy["difference"] == format_estimate(paired, 300, signed=True)
    assert accuracy["baseline"] == summary["test_accuracy"][0] and accuracy["value"] == summary["test_accuracy"][1]
    markdown = report.markdown.read_text()
    assert "How sure are the results" in markdown and "better" in markdown
    assert markdown.index("How sure are the results") < markdown.index("Learning curves")  # beside the results
    html = report.html.read_text()
    assert format_estimate(across_seeds([r.metrics["test_accuracy"] for r in runs[3:]]), 300) in html


def test_a_bootstrap_p_value_is_never_zero_and_one_for_no_difference():
    shifted = np.linspace(1.0, 2.0, 50)  # every resample's mean is positive
    far = bootstrap_items(lambda idx: shifted[idx].mean(axis=-1), 50, n_resamples=199)
    assert far.p_value == pytest.approx(2 / 200) and far.low > 0
    zero = bootstrap_items(lambda idx: np.zeros(idx.shape[:-1]), 50, n_resamples=199)
    assert zero.p_value == 1.0 and (zero.low, zero.high) == (0.0, 0.0)


def _segmentation_run(name, *, seed=0, wrong=0.1, **settings):
    """A segmentation record whose predicted masks get a share ``wrong`` of the pixels wrong."""
    from lab.tasks.segmentation.tasks import save_predictions

    masks = np.random.default_rng(0).integers(0, 3, (12, 8, 8))  # one test set
    rng = np.random.default_rng(seed + int(wrong * 1000))
    predicted = np.where(rng.random(masks.shape) < wrong, (masks + 1) % 3, masks)
    config = {"name": name, "model": "unet", "task": "segmentation", "seed": seed, "tags": [], **settings}
    writer = RunWriter(config, name=name)
    save_predictions(writer.path / "predictions.npz", list(masks), list(predicted), ["bg", "x", "y"], 0)
    metrics = {"name": name, "status": "completed", "task": "segmentation", "best_epoch": 3, "epochs_run": 5,
               **segmentation_metrics(masks, predicted, ["bg", "x", "y"], prefix="test_")}
    return load_run(writer.publish(metrics))


def test_segmentation_runs_are_compared_by_a_paired_bootstrap_over_images(isolated_dirs):
    runs = [_segmentation_run("base", wrong=0.4), _segmentation_run("better", wrong=0.05, filters=32)]
    result = compare(runs, n_resamples=300)
    assert result.metrics == ["test_mean_iou", "test_mean_dice", "test_pixel_accuracy"]
    iou = result.differences.query("metric == 'test_mean_iou'").iloc[0]
    assert iou["diff"] == pytest.approx(runs[1].metrics["test_mean_iou"] - runs[0].metrics["test_mean_iou"])
    assert "paired bootstrap over 12 test images" in iou["tests"] and iou["verdict"] == "better"
    # Runs on different test images are not paired over images, and say so.
    other = _segmentation_run("elsewhere", wrong=0.05, filters=32)
    other.path.joinpath("predictions.npz").unlink()
    from lab.tasks.segmentation.tasks import save_predictions

    masks = np.random.default_rng(1).integers(0, 3, (12, 8, 8))
    save_predictions(other.path / "predictions.npz", list(masks), list(masks), ["bg", "x", "y"], 0)
    verdict = compare([runs[0], other], n_resamples=100).verdicts["elsewhere"]
    assert verdict == "not compared: the test sets differ: no paired test over test images"


def test_an_auc_too_costly_to_bootstrap_rests_on_the_seeds(isolated_dirs, monkeypatch):
    import lab.runs.comparison

    monkeypatch.setattr(lab.runs.comparison, "AUC_BOOTSTRAP_LIMIT", 0)
    runs = [_run("base", seed=s, n=60) for s in range(2)] + [_run("other", seed=s, n=60, l2=0.1) for s in range(2)]
    differences = compare(runs, n_resamples=100).differences.set_index("metric")
    assert differences.loc["test_macro_auc", "tests"] == "paired t across 2 seeds"
    assert "McNemar" in differences.loc["test_accuracy", "tests"]


@pytest.mark.slow
def test_the_python_ablation_summary_compares_with_its_baseline_and_prints_the_digits_its_split_supports(
        isolated_dirs):
    from lab.studies.ablation import run_ablation
    from lab.config import RunConfig

    base = RunConfig(dataset="digits", limit=200, pipeline_size=16, model="cnn", depth=2, filters=8, dense_units=16,
                     epochs=3, learning_rate=3e-3, verbose=0, save_model=False, normalization="none",
                     dropout_rate=0.0, l2=0.0)
    result = run_ablation(base, name="e1-tiny", baseline="b-dropout",
                          variants=[{"name": "a-plain"}, {"name": "b-dropout", "dropout_rate": 0.2}])
    assert [run.status for run in result.runs] == ["completed", "completed"]
    markdown = (result.summary_dir / "results.md").read_text()
    assert "## Against the baseline b-dropout" in markdown
    assert pd.read_csv(result.summary_dir / "comparison.csv")["configuration"].tolist() == ["a-plain", "a-plain"]
    best = (result.summary_dir / "best_run.txt").read_text()
    n = result.runs[0].config["data"]["sizes"]["test"]
    assert re.search(rf"test accuracy \d\.\d{{1,2}} \[\d\.\d+, \d\.\d+\] on {n} test images", best), best


def test_results_tables_print_each_split_with_the_digits_it_supports():
    from lab.runs.records import to_markdown
    from lab.runs.confidence import column_decimals

    sizes = [{"train": 1200, "val": 216, "test": 360}, {"train": 1200, "val": 216, "test": 12000}]
    digits = column_decimals(["name", "train_accuracy", "val_loss", "best_epoch_val_accuracy", "test_accuracy",
                              "seconds_per_epoch", "params"], sizes)
    # 360 test images move accuracy in steps of 0.003: three decimals, never four; 12 items: two.
    assert digits == {"train_accuracy": 4, "val_loss": 3, "best_epoch_val_accuracy": 3, "test_accuracy": 3}
    assert column_decimals(["test_accuracy"], [{"test": 12}]) == {"test_accuracy": 2}
    assert column_decimals(["test_accuracy"], [{}]) == {}, "no sizes recorded: the table's own format"

    class _Run:  # what to_markdown reads of a run: its data summary's split sizes
        split_sizes = {"val": 216, "test": 360}

    frame = pd.DataFrame({"name": ["a"], "test_accuracy": [0.912345], "seconds_per_epoch": [1.23456]})
    text = to_markdown(frame, runs=[_Run()])
    assert "0.912 " in text and "0.9123" not in text and "1.2346" in text
