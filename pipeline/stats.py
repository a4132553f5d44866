"""How sure a reported number is, at the level that generalises: the test subject.

Trials of one subject are not independent (same head, same session, same voice), so every
interval and test here treats a subject as one observation: its score is the mean over seeds
of the metric on its test trials. Every interval is `subject_interval` (the union of Student's t
and the studentised bootstrap, from MIN_SUBJECTS_INTERVAL subjects, chosen by the coverage
simulation of `pipeline.coverage`); paired differences are tested with the Wilcoxon signed-rank
test over subjects. With fewer than MIN_SUBJECTS_WILCOXON subjects no test over subjects can
reach p < 0.05, and a test over trials would treat a subject's trials as independent (2 subjects
x 40 trials with no true difference: McNemar over trials called 20.8 % of 2000 significant at a
nominal 5 %), so there is no p-value then: `p` is None and the reports say "n/a, too few test
subjects".
"""
from __future__ import annotations

import numpy as np
from scipy.stats import t as student_t
from scipy.stats import wilcoxon

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
# Below 4 subjects no interval covers the populations of pipeline.coverage: with 3, one resample
# in 9 repeats a single subject, so the studentised bootstrap's tails are infinite, and t alone
# covers 0.89 for accuracies near the ceiling.
MIN_SUBJECTS_INTERVAL = 4
# From this many subjects a resample's spread is floored at SPREAD_FLOOR x the study's (one
# repeated score has none); below, a resample without spread counts as an infinite deviation.
SPREAD_FLOOR_FROM = 8
SPREAD_FLOOR = 0.3
# Every score with an interval here lies in [-1, 1] (accuracies, kappa, AUC, their differences).
SCORE_RANGE = (-1.0, 1.0)
ALPHA = 0.05
# Below 6 paired observations the exact two-sided Wilcoxon p-value cannot go under 0.05.
MIN_SUBJECTS_WILCOXON = 6


def finite(values) -> np.ndarray:
    """The finite entries of `values` as float64 (undefined scores, NaN, left out)."""
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def subject_interval(values, seed: int, bounds: tuple[float, float] = SCORE_RANGE) -> list[float] | None:
    """95% interval [low, high] of the mean of `values` (one score per subject; NaN left out),
    clipped to `bounds`, the range the score can take; None with fewer than MIN_SUBJECTS_INTERVAL
    values, where no method covers (the reports say so). Seeded: the same values and seed give
    the same interval on any machine."""
    values = finite(values)
    if len(values) < MIN_SUBJECTS_INTERVAL:
        return None
    low, high = interval_bounds(values[None, :], np.random.default_rng(seed), N_RESAMPLES)
    return [float(np.clip(low[0], *bounds)), float(np.clip(high[0], *bounds))]


def interval_bounds(studies: np.ndarray, rng: np.random.Generator, n_resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper 95% bounds, shape (S,), of the mean of each row of `studies` (S, n): on
    each side the wider of Student's t interval and the studentised bootstrap (bootstrap-t:
    quantiles of (resample mean - mean) / resample standard error, Efron & Tibshirani 1993,
    ch. 12). t alone under-covers skewed scores (accuracies near the ceiling: 0.89-0.92),
    bootstrap-t alone heavy tails (0.93); the union covers both (pipeline.coverage). A resample
    of one repeated value has no spread: below SPREAD_FLOOR_FROM subjects its deviation counts as
    infinite (the bound becomes the score's range once clipped: with 4-7 subjects near the
    ceiling a finite bound covered only 0.89-0.93). From SPREAD_FLOOR_FROM subjects a resample's
    spread is floored at SPREAD_FLOOR x the study's: near-constant resamples otherwise blow the
    studentised deviation up (an AUC of 0.996 over 12 subjects, 9 at 1.0 and the lowest 0.961,
    got [0.80, 1.00]; floored [0.98, 1.00]), and the floor keeps coverage at 8-12
    subjects at 0.942 or more (0.5 x: 0.931). Vectorised over studies for the simulation."""
    n_studies, n = studies.shape
    mean, spread = studies.mean(1), studies.std(1, ddof=1)
    se = spread / np.sqrt(n)
    resamples = studies[np.arange(n_studies)[:, None, None], rng.integers(0, n, (n_studies, n_resamples, n))]
    resample_spread = resamples.std(2, ddof=1)
    if n >= SPREAD_FLOOR_FROM:
        resample_spread = np.maximum(resample_spread, SPREAD_FLOOR * spread[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = (resamples.mean(2) - mean[:, None]) / (resample_spread / np.sqrt(n))
    t_star = np.sort(np.nan_to_num(t_star, nan=0.0, posinf=np.inf, neginf=-np.inf), axis=1)
    alpha = 1 - CONFIDENCE
    q_low, q_high = t_star[:, int(np.floor(alpha / 2 * n_resamples))], t_star[:, int(np.ceil((1 - alpha / 2) * n_resamples)) - 1]
    t_q = student_t.ppf(1 - alpha / 2, n - 1)
    with np.errstate(invalid="ignore"):  # se 0 (every subject alike): the bounds are the mean
        boot_low = np.where(se > 0, mean - q_high * se, mean)
        boot_high = np.where(se > 0, mean - q_low * se, mean)
    return np.minimum(mean - t_q * se, boot_low), np.maximum(mean + t_q * se, boot_high)


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
    difference, its `subject_interval`, and the Wilcoxon signed-rank p-value over subjects (`test`
    'wilcoxon'), or with fewer than MIN_SUBJECTS_WILCOXON subjects none (`test` 'none', `p` None)."""
    subjects = sorted(set(a) & set(b))
    d = np.array([b[s] - a[s] for s in subjects], dtype=np.float64)
    test, p = subject_level_test(d)
    return {"delta": float(np.nanmean(d)) if len(d) else float("nan"), "ci": subject_interval(d, seed),
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
