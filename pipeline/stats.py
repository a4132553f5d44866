"""How sure a reported number is, at the level that generalises: the test subject.

Trials of one subject are not independent (same head, same session, same voice), so every
interval and test here treats a subject as one observation: its score is the mean over seeds
of the metric on its test trials. Intervals are percentile bootstraps over subjects
(scipy.stats.bootstrap, seeded); paired differences are tested with the Wilcoxon signed-rank
test over subjects, or with the exact McNemar test over trials when there are too few subjects
for Wilcoxon to ever reach p < 0.05.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, bootstrap, wilcoxon

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
ALPHA = 0.05
# Below 6 paired observations the exact two-sided Wilcoxon p-value cannot go under 0.05.
MIN_SUBJECTS_WILCOXON = 6


def finite(values) -> np.ndarray:
    """The finite entries of `values` as float64 (undefined scores, NaN, left out)."""
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def bootstrap_ci(values, seed: int) -> list[float] | None:
    """95% percentile-bootstrap interval of the mean of `values` (one per subject; NaN left out).

    None with fewer than 2 values (no spread to resample); [v, v] when all values are equal.
    """
    values = finite(values)
    if len(values) < 2:
        return None
    if np.ptp(values) == 0:
        return [float(values[0]), float(values[0])]
    result = bootstrap((values,), np.mean, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                       method="percentile", rng=np.random.default_rng(seed))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def sample_std(values) -> float | None:
    """Sample standard deviation (ddof=1) of the finite values; None with fewer than 2."""
    values = finite(values)
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (one per subject); zero
    differences are dropped (scipy's 'wilcox'), and no non-zero difference gives p = 1."""
    d = finite(differences)
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox").pvalue)


def mcnemar_p(correct_a, correct_b) -> float:
    """Exact two-sided McNemar p-value of two models on the same trials: a binomial test of the
    discordant trials against 1/2. correct_*: per trial, right or not, or over several seeds the
    share of seeds it was right on (a trial then counts for the model right on more seeds)."""
    a, b = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    only_a, only_b = int(np.sum(a > b)), int(np.sum(b > a))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_difference(a: dict, b: dict, seed: int, correct_a=None, correct_b=None) -> dict:
    """B minus A over the subjects both scored: `a`, `b` map subject -> score. Returns the mean
    difference, its bootstrap CI, the test used and its p-value: Wilcoxon over subjects, or with
    fewer than MIN_SUBJECTS_WILCOXON subjects McNemar over trials (`correct_a`, `correct_b`:
    per-trial correctness), when given."""
    subjects = sorted(set(a) & set(b))
    d = np.array([b[s] - a[s] for s in subjects], dtype=np.float64)
    out = {"delta": float(np.nanmean(d)) if len(d) else float("nan"), "ci": bootstrap_ci(d, seed),
           "n_subjects": len(subjects)}
    if len(subjects) >= MIN_SUBJECTS_WILCOXON or correct_a is None:
        out |= {"test": "wilcoxon", "p": wilcoxon_p(d)}
    else:
        out |= {"test": "mcnemar", "p": mcnemar_p(correct_a, correct_b)}
    return out


def verdict(p: float) -> str:
    return "significant" if p < ALPHA else "not significant"


def signed_interval(ci: list[float] | None, digits: int = 2) -> str:
    """` [-0.02, +0.10]` for a difference's interval; '' when there is none."""
    return f" [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else ""
