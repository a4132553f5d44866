"""The simulation that chose `stats.subject_interval`: how often its 95% interval covers the true
mean over subjects, per population of subject scores and number of test subjects.

The populations are the contract: scores as this pipeline reports them (a subject's accuracy
on 40 trials, from subjects whose true accuracies vary mid-range, near chance or near the
ceiling; per-subject differences of two models, symmetric or skewed; and heavy-tailed scores).
Where `subject_interval` returns an interval it covers at least MIN_COVERAGE in every one
(tests/unit/test_coverage.py). One population no interval from a few subjects can cover is
shown beside them: a minority of subjects at another level (15% of subjects at 0.3, the rest
at 0.8), which a study of 4-12 subjects often does not sample at all.

`python -m pipeline coverage` prints the table of docs/statistics.md.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import t as student_t

from pipeline.stats import CONFIDENCE, MIN_SUBJECTS_INTERVAL, interval_bounds

MIN_COVERAGE = 0.93
TRIALS = 40  # test trials of a subject
SUBJECTS = (3, 4, 5, 6, 8, 10, 12)

Population = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


def _accuracy(a: float, b: float) -> Population:
    """A subject's accuracy on TRIALS trials, its true accuracy ~ Beta(a, b)."""
    return lambda rng, shape: rng.binomial(TRIALS, rng.beta(a, b, shape)) / TRIALS


def _difference(gain: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]) -> Population:
    """One model's accuracy minus another's (true 0.5) on a subject's TRIALS trials, the first's
    true accuracy 0.5 + `gain`."""
    return lambda rng, shape: (rng.binomial(TRIALS, np.clip(0.5 + gain(rng, shape), 0, 1))
                               - rng.binomial(TRIALS, 0.5, shape)) / TRIALS


POPULATIONS: dict[str, Population] = {
    "normal scores (0.6 +- 0.1)": lambda rng, shape: rng.normal(0.6, 0.1, shape),
    "accuracy, mid-range (Beta(6, 4))": _accuracy(6, 4),
    "accuracy, near chance (Beta(2, 8))": _accuracy(2, 8),
    "accuracy, ceiling (Beta(9, 1))": _accuracy(9, 1),
    "accuracy, ceiling (Beta(19, 1))": _accuracy(19, 1),
    "difference, symmetric (+0.05)": _difference(lambda rng, shape: np.full(shape, 0.05)),
    "difference, skewed (exponential gain)": _difference(lambda rng, shape: rng.exponential(0.1, shape)),
    "heavy tails (t, 3 df)": lambda rng, shape: 0.05 + 0.05 * rng.standard_t(3, shape),
}
NOT_COVERED: dict[str, Population] = {
    "minority of subjects (15% at 0.3)": lambda rng, shape: np.where(
        rng.random(shape) < 0.15, rng.binomial(TRIALS, 0.3, shape), rng.binomial(TRIALS, 0.8, shape)) / TRIALS,
}


def true_mean(population: Population, draws: int = 400_000) -> float:
    """The population's mean subject score, by a large seeded draw (SE under 0.0005)."""
    return float(population(np.random.default_rng(12345), (draws, 1)).mean())


def coverage(population: Population, n_subjects: int, studies: int, n_resamples: int, seed: int) -> dict[str, float]:
    """Share of `studies` simulated studies of `n_subjects` subjects whose 95% interval holds the
    true mean: for `subject_interval`'s method ("union", what it returns from
    MIN_SUBJECTS_INTERVAL subjects) and for Student's t alone ("t"), for comparison."""
    rng = np.random.default_rng(seed)
    mu = true_mean(population)
    covered = {"union": 0, "t": 0}
    for start in range(0, studies, 250):  # chunks bound the (studies, resamples, subjects) array
        x = population(rng, (min(250, studies - start), n_subjects))
        low, high = interval_bounds(x, rng, n_resamples)
        covered["union"] += int(np.sum((low <= mu) & (mu <= high)))
        half = student_t.ppf(0.5 + CONFIDENCE / 2, n_subjects - 1) * x.std(1, ddof=1) / np.sqrt(n_subjects)
        covered["t"] += int(np.sum(np.abs(x.mean(1) - mu) <= half))
    return {k: v / studies for k, v in covered.items()}


def coverage_table(studies: int = 2000, n_resamples: int = 2000, subjects=SUBJECTS) -> str:
    """Markdown table: one row per population, one column per number of subjects, each cell
    `union (t)`; below MIN_SUBJECTS_INTERVAL `subject_interval` returns None ("none")."""
    header = "| population | " + " | ".join(f"{n} subjects" for n in subjects) + " |"
    lines = [header, "|---|" + "---|" * len(subjects)]
    for name, population in {**POPULATIONS, **NOT_COVERED}.items():
        cells = []
        for n in subjects:
            c = coverage(population, n, studies, n_resamples, seed=n)
            cells.append(f"none ({c['t']:.2f})" if n < MIN_SUBJECTS_INTERVAL else f"{c['union']:.3f} ({c['t']:.2f})")
        lines.append(f"| {name}{'' if name in POPULATIONS else ' *'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
