"""pipeline/stats.py: intervals and p-values against small cases computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.stats import (MIN_SUBJECTS_WILCOXON, bootstrap_ci, mcnemar_p, paired_difference, sample_std, verdict,
                            wilcoxon_p)


def test_bootstrap_ci_of_two_values_spans_both():
    # resampled means of [0, 1]: 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> 2.5% at 0, 97.5% at 1
    assert bootstrap_ci([0.0, 1.0], seed=0) == [0.0, 1.0]


def test_bootstrap_ci_by_hand():
    # resampled means of [0, 0, 0, 1] are k/4, k ~ Binomial(4, 1/4): P(k <= 0) = 0.316, so the
    # 2.5% point is 0; P(k <= 2) = 0.949 < 0.975 < P(k <= 3) = 0.996, so the 97.5% point is 3/4
    assert bootstrap_ci([0.0, 0.0, 0.0, 1.0], seed=0) == pytest.approx([0.0, 0.75])


def test_bootstrap_ci_is_seeded_and_contains_the_mean():
    values = np.random.default_rng(1).uniform(size=12)
    low, high = bootstrap_ci(values, seed=3)
    assert low < values.mean() < high
    assert bootstrap_ci(values, seed=3) == [low, high]
    assert bootstrap_ci(values, seed=4) != [low, high]


def test_bootstrap_ci_degenerate_cases():
    assert bootstrap_ci([0.7], seed=0) is None
    assert bootstrap_ci([0.5, 0.5, 0.5], seed=0) == [0.5, 0.5]
    assert bootstrap_ci([0.0, float("nan"), 1.0], seed=0) == [0.0, 1.0]  # NaN subjects left out


def test_sample_std_is_ddof_one():
    assert sample_std([0.5, 0.7, 0.9]) == pytest.approx(0.2)
    assert sample_std([0.5]) is None


def test_wilcoxon_by_hand():
    # 6 positive differences: only the all-positive sign pattern is as extreme -> 2 / 2**6
    assert wilcoxon_p([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)
    # the smallest one negative: W- = 1, reached by 2 of 64 sign patterns -> two-sided 4 / 64
    assert wilcoxon_p([-1, 2, 3, 4, 5, 6]) == pytest.approx(4 / 64)
    # 5 subjects can never reach 0.05: why MIN_SUBJECTS_WILCOXON is 6
    assert wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert 2 / 32 > 0.05
    assert MIN_SUBJECTS_WILCOXON == 6
    assert wilcoxon_p([0, 0, 0]) == 1.0


def test_mcnemar_by_hand():
    # discordant trials 0 vs 6: binomial two-sided 2 / 2**6
    a = np.array([True] * 4 + [False] * 6)
    b = np.array([True] * 4 + [True] * 6)
    assert mcnemar_p(a, b) == pytest.approx(2 / 64)
    # 1 vs 4 discordant: 2 * (1 + 5) / 32
    a = np.array([1, 0, 0, 0, 0, 1, 1], dtype=bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1], dtype=bool)
    assert mcnemar_p(a, b) == pytest.approx(12 / 32)
    assert mcnemar_p(a, a) == 1.0
    # shares of seeds: a trial counts for the model right on more seeds, ties for neither
    assert mcnemar_p([1.0, 0.5, 0.5], [0.0, 0.5, 0.5]) == mcnemar_p([True], [False]) == 1.0


def test_paired_difference_uses_wilcoxon_from_six_subjects_and_mcnemar_below():
    a = {f"s{i}": 0.5 for i in range(6)}
    b = {f"s{i}": 0.5 + 0.1 * (i + 1) for i in range(6)}
    six = paired_difference(a, b, seed=0, correct_a=[False], correct_b=[False])
    assert six["test"] == "wilcoxon" and six["p"] == pytest.approx(2 / 64)
    assert six["delta"] == pytest.approx(0.35) and six["n_subjects"] == 6
    assert six["ci"][0] < 0.35 < six["ci"][1]
    del a["s5"]
    five = paired_difference(a, b, seed=0, correct_a=[False] * 6, correct_b=[True] * 6)
    assert five["test"] == "mcnemar" and five["p"] == pytest.approx(2 / 64) and five["n_subjects"] == 5


def test_paired_difference_of_a_model_with_itself():
    a = {f"s{i}": 0.1 * i for i in range(8)}
    same = paired_difference(a, a, seed=0)
    assert same == {"delta": 0.0, "ci": [0.0, 0.0], "n_subjects": 8, "test": "wilcoxon", "p": 1.0}


def test_verdict():
    assert verdict(0.01) == "significant" and verdict(0.05) == "not significant"
