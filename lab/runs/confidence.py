"""How sure a number is: intervals across seeds and over test items, paired tests, Holm's
correction, and numbers printed with the digits their split supports.

The statistics are scipy's (``scipy.stats``: ``t``, ``bootstrap``, ``binomtest``, ``ttest_rel``,
``ttest_ind``); this module only chooses them and puts their answers in one shape, an
``Estimate``. ``lab.runs.comparison`` applies them to runs (configurations, a baseline, verdicts and
warnings); the docs page "Reading the comparisons" says what each one assumes.

- Across seeds (Bouthillier et al. 2021: vary the seeds, report the spread): the mean, the
  standard deviation and Student's t interval of the per-seed values (``across_seeds``); a paired
  t test on the per-seed differences when both sides ran the same seeds, Welch's test otherwise
  (``seed_difference``). One seed has no spread, and says so.
- Over the test items of one run (rliable, Agarwal et al. 2021: percentile bootstrap intervals):
  ``bootstrap_items`` resamples the test images with replacement; a statistic receives the
  resampled indices, so any score (accuracy, macro AUC, IoU from summed confusion matrices) is
  bootstrapped the same way, and two runs on the same test images are compared on the same
  resamples (paired).
- Two classifiers on one test set (Dietterich 1998): McNemar's exact test, a binomial test on
  the discordant pairs (``mcnemar``).
- Many comparisons at once: Holm's step-down adjustment (``holm``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95  # the confidence level of every interval
ALPHA = 0.05  # a difference whose (Holm-adjusted) p-value is below this is called better or worse
N_RESAMPLES = 2000  # bootstrap resamples: the percentile interval's ends move by about 0.1 SE between seeds
BOOTSTRAP_BATCH = 100  # resamples a vectorized statistic sees at once (bounds the memory of (batch, n, k) arrays)
NO_SPREAD = "one seed: no spread"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval and how the interval was had.

    Attributes:
        value: the point estimate (a mean across seeds, or the run's own score).
        low, high: the interval's ends (None when there is none: one seed and no test items).
        method: how the interval was computed, in words ("t across 3 seeds", "bootstrap over 360
            test items", "one seed: no spread").
        n: how many values or items it rests on (seeds, or test items).
        std: the standard deviation across seeds (None for one seed or an interval over items).
        p_value: the p-value of the test that goes with it (a difference), else None.
    """

    value: float
    low: float | None = None
    high: float | None = None
    method: str = NO_SPREAD
    n: int = 1
    std: float | None = None
    p_value: float | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None and math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def standard_error(self) -> float | None:
        """The interval's half-width in standard errors (a normal approximation, for choosing digits)."""
        if not self.has_interval:
            return None
        return (self.high - self.low) / (2 * stats.norm.ppf(0.5 + LEVEL / 2))


# -- across seeds -------------------------------------------------------------------------------

def across_seeds(values: Sequence[float]) -> Estimate:
    """The mean of per-seed values with its Student's t interval (``scipy.stats.t``).

    Args:
        values: one value per seed (NaNs are left out).

    Returns:
        An Estimate with the mean, the t interval, the standard deviation (ddof=1) and the
        number of seeds; one value has no interval (``method`` says "one seed: no spread").

    Raises:
        ValueError: no finite value.
    """
    values = _finite(values, "values")
    mean = float(np.mean(values))
    if len(values) < 2:
        return Estimate(mean, n=1)
    std = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df=len(values) - 1)) * std / math.sqrt(len(values))
    return Estimate(mean, mean - half, mean + half, f"t across {len(values)} seeds", len(values), std)


def seed_difference(baseline: Sequence[float], other: Sequence[float], *, paired: bool) -> Estimate:
    """The mean difference ``other - baseline`` across seeds, its t interval and p-value.

    Args:
        baseline, other: per-seed values; with ``paired`` the i-th of each share a seed.
        paired: a paired t test on the per-seed differences (``scipy.stats.ttest_rel``); else
            Welch's unequal-variance test (``scipy.stats.ttest_ind``).

    Returns:
        An Estimate of the difference; with fewer than two seeds on a side no interval and no
        p-value ("one seed: no spread").
    """
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if paired and len(a) != len(b):
        raise ValueError(f"A paired difference needs as many values on each side, received {len(a)} and {len(b)}.")
    difference = float(np.mean(b) - np.mean(a))
    if min(len(a), len(b)) < 2:
        return Estimate(difference, n=min(len(a), len(b)))
    if paired and np.allclose(a, b, rtol=0, atol=0):  # identical per seed: no difference, and t is undefined
        return Estimate(0.0, 0.0, 0.0, f"paired t across {len(a)} seeds", len(a), 0.0, 1.0)
    result = stats.ttest_rel(b, a) if paired else stats.ttest_ind(b, a, equal_var=False)
    interval = result.confidence_interval(confidence_level=LEVEL)
    p_value = float(result.pvalue) if math.isfinite(result.pvalue) else 1.0  # zero variance and no difference
    low, high = (float(interval.low), float(interval.high)) if math.isfinite(interval.low) else (difference,) * 2
    method = f"paired t across {len(a)} seeds" if paired else f"Welch t across {len(a)} and {len(b)} seeds"
    return Estimate(difference, low, high, method, min(len(a), len(b)), p_value=p_value)


# -- over the test items of a run ----------------------------------------------------------------

def bootstrap_items(statistic: Callable[[np.ndarray], np.ndarray], n_items: int, *, n_resamples: int = N_RESAMPLES,
                    seed: int = 0, what: str = "test items") -> Estimate:
    """A percentile bootstrap interval over a run's test items (``scipy.stats.bootstrap``).

    Args:
        statistic: maps resampled item indices, an int array of shape (..., n_items), to the
            score of each resample, shape (...); given ``np.arange(n_items)`` it gives the run's
            own score. A difference of two runs on the same items resampled together (paired)
            is a statistic like any other.
        n_items: how many test items (images) the run has.
        n_resamples: bootstrap resamples.
        seed: the resampling's seed (a report reads the same twice).
        what: what the items are, for ``method``.

    Returns:
        An Estimate: the statistic on all items, the percentile interval, and ``p_value``: twice
        the smaller share of resamples on either side of zero (about the level at which the
        percentile interval of a difference would just touch zero; meaningful for differences).
    """
    if n_items < 2:
        raise ValueError(f"A bootstrap over test items needs at least 2 items, received {n_items}.")
    indices = np.arange(n_items)
    value = float(statistic(indices))

    def vectorized(sample: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(np.moveaxis(sample, axis, -1).astype(np.int64))

    result = stats.bootstrap((indices,), vectorized, n_resamples=n_resamples, batch=BOOTSTRAP_BATCH,
                             vectorized=True, confidence_level=LEVEL, method="percentile",
                             rng=np.random.default_rng(seed))
    distribution = result.bootstrap_distribution[np.isfinite(result.bootstrap_distribution)]
    p_value = None
    if distribution.size:
        # (count + 1) / (resamples + 1) per side (Davison and Hinkley 1997): never 0, since no finite
        # number of resamples can show a difference to be impossible.
        below, above = np.sum(distribution <= 0), np.sum(distribution >= 0)
        p_value = float(min(1.0, 2 * (min(below, above) + 1) / (distribution.size + 1)))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Estimate(value, low, high, f"bootstrap over {n_items} {what}", n_items, p_value=p_value)


def mcnemar(baseline_correct: np.ndarray, other_correct: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test of two classifiers on the same test items (Dietterich 1998).

    Only the discordant items count: ``b`` right by the baseline and wrong by the other, ``c``
    wrong by the baseline and right by the other. Under the null hypothesis (equal error rates)
    each discordant item goes either way with probability 1/2, so ``b`` is Binomial(b + c, 1/2);
    the p-value is scipy's exact two-sided binomial test.

    Args:
        baseline_correct, other_correct: booleans, one per test item, in the same item order.
            Several seeds' tables are combined by concatenating their items (below).

    Returns:
        ``(b, c, p_value)``; no discordant item gives p = 1.
    """
    a = np.asarray(baseline_correct, dtype=bool).reshape(-1)
    o = np.asarray(other_correct, dtype=bool).reshape(-1)
    if a.shape != o.shape:
        raise ValueError(f"McNemar's test needs the same test items on both sides, received {a.size} and {o.size}.")
    b, c = int(np.sum(a & ~o)), int(np.sum(~a & o))
    # Several seeds: the discordant counts of every seed pair are summed before the test (the
    # Mantel-Haenszel pooling of matched pairs). The same test images recur in each pair, so the
    # pooled test speaks of these test images only; the spread across seeds is tested apart
    # (``seed_difference``), and a verdict needs both.
    return b, c, (1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue))


def proportion_interval(successes: int, n: int) -> Estimate:
    """A proportion (an accuracy on ``n`` items) with its exact Clopper-Pearson interval
    (``scipy.stats.binomtest``): what a split of ``n`` items can resolve."""
    if n < 1:
        raise ValueError(f"A proportion needs at least one item, received n={n}.")
    interval = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=LEVEL, method="exact")
    return Estimate(successes / n, float(interval.low), float(interval.high), f"exact binomial over {n} items", n)


# -- many comparisons ------------------------------------------------------------------------------

def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are left out and kept).

    The smallest of m p-values is multiplied by m, the next by m - 1, and so on; each adjusted
    value is at least the one before it in that order, and at most 1. Rejecting where the
    adjusted value is below alpha controls the family-wise error rate at alpha (Holm 1979).
    scipy has no Holm (``false_discovery_control`` is Benjamini-Hochberg's, another error rate),
    and statsmodels is no dependency of the kit, hence these lines.
    """
    present = [(i, float(p)) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(present, key=lambda pair: pair[1])):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


# -- printing -------------------------------------------------------------------------------------

def decimals(standard_error: float | None, n: int | None = None, *, most: int = 4) -> int:
    """How many decimals a number deserves: the last digit about its standard error, and never
    finer than what ``n`` items resolve (a share of 360 images moves in steps of 1/360: three
    decimals at most).

    Args:
        standard_error: the number's standard error (None or 0: unknown, the items decide).
        n: the items it is computed on (None: unknown).
        most: the most decimals ever printed.
    """
    digits = most
    if standard_error is not None and math.isfinite(standard_error) and standard_error > 0:
        digits = max(1, -math.floor(math.log10(standard_error)))
    if n:
        digits = min(digits, max(1, math.ceil(math.log10(n))))
    return min(digits, most)


def column_decimals(columns: Sequence[str], split_sizes: Sequence[dict]) -> dict[str, int]:
    """The decimals each column of a results table deserves (``decimals`` without a standard
    error): a score or loss of a split, named ``<split>_...`` or ``best_epoch_<split>_...``, never
    finer than the smallest of the runs' splits resolves (four decimals on 360 test images would
    claim steps of 0.0001 where one image moves accuracy by 0.003). Other columns are left out.

    Args:
        columns: the table's column names.
        split_sizes: each run's split sizes (its data summary's ``sizes``: split -> items).
    """
    found = {}
    for column in columns:
        split = next((s for s in ("train", "val", "test") if column.startswith((f"{s}_", f"best_epoch_{s}_"))), None)
        sizes = [sizes[split] for sizes in split_sizes if split and sizes.get(split)]
        if sizes and "seconds" not in column:
            found[column] = decimals(None, min(sizes))
    return found


def format_estimate(estimate: Estimate, n: int | None = None, *, signed: bool = False) -> str:
    """``0.91 [0.88, 0.94]``: the value and its interval with the digits ``decimals`` allows.

    Args:
        estimate: what to print.
        n: the test items the value is computed on (None: unknown); without an interval the value
            is printed alone, at the items' resolution.
        signed: print a plus sign on positive numbers (differences).
    """
    if estimate.value is None or not math.isfinite(estimate.value):
        return ""
    digits = decimals(estimate.standard_error, n)
    sign = "+" if signed else ""
    text = f"{estimate.value:{sign}.{digits}f}"
    if estimate.has_interval:
        text += f" [{estimate.low:{sign}.{digits}f}, {estimate.high:{sign}.{digits}f}]"
    return text


def _finite(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    array = array[np.isfinite(array)]
    if not array.size:
        raise ValueError(f"{name} holds no finite number, received {list(values)!r}.")
    return array
