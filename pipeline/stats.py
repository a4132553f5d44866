"""How sure a reported number is, at the level that generalises: the test subject.

Trials of one subject are not independent (same head, same session, same voice), so every
interval and test here treats a subject as one observation: its score is the mean over seeds
of the metric on its test trials. Intervals are percentile bootstraps over subjects
(scipy.stats.bootstrap, seeded); paired differences are tested with the Wilcoxon signed-rank
test over subjects. With fewer than MIN_SUBJECTS_WILCOXON subjects no test over subjects can
reach p < 0.05, and a test over trials would treat a subject's trials as independent (2 subjects
x 40 trials with no true difference: McNemar over trials called 20.8 % of 2000 significant at a
nominal 5 %), so there is no p-value then: `p` is None and the reports say "n/a, too few test
subjects".
"""
from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap, wilcoxon

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


def paired_difference(a: dict, b: dict, seed: int) -> dict:
    """B minus A over the subjects both scored: `a`, `b` map subject -> score. Returns the mean
    difference, its bootstrap CI, and the Wilcoxon signed-rank p-value over subjects (`test`
    'wilcoxon'), or with fewer than MIN_SUBJECTS_WILCOXON subjects none (`test` 'none', `p` None)."""
    subjects = sorted(set(a) & set(b))
    d = np.array([b[s] - a[s] for s in subjects], dtype=np.float64)
    test, p = subject_level_test(d)
    return {"delta": float(np.nanmean(d)) if len(d) else float("nan"), "ci": bootstrap_ci(d, seed),
            "n_subjects": len(subjects), "test": test, "p": p}


def subject_level_test(differences) -> tuple[str, float | None]:
    """('wilcoxon', p) over one paired difference per subject, or ('none', None) when they are
    too few for any test over subjects to reach the level."""
    if len(differences) < MIN_SUBJECTS_WILCOXON:
        return "none", None
    return "wilcoxon", wilcoxon_p(differences)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values, in their order; None
    (no test) stays None and is not counted in the family. The i-th smallest of m p-values is
    multiplied by m - i + 1, made non-decreasing and capped at 1: rejecting where the adjusted
    p < 0.05 keeps the chance of any false rejection in the family under 0.05. (scipy has only
    Benjamini-Hochberg, which bounds the false discovery rate instead.)"""
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(p: float | None) -> str:
    if p is None:
        return "no test"
    return "significant" if p < ALPHA else "not significant"


def p_text(p: float | None, n_subjects: int) -> str:
    """`p = 0.031`, or why there is no p-value."""
    if p is None:
        return f"p: n/a, too few test subjects ({n_subjects}; a test over subjects needs {MIN_SUBJECTS_WILCOXON})"
    return f"p = {p:.2g}"


def signed_interval(ci: list[float] | None, digits: int = 2) -> str:
    """` [-0.02, +0.10]` for a difference's interval; '' when there is none."""
    return f" [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else ""
