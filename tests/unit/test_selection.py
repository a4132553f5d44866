"""pipeline/selection.py: the binomial test against chance, the validation-weighted ensemble
and the safe choice, by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from pipeline.selection import (accuracy, ensemble_of_branches, fallback_p_value, gate_fallback, informative_test,
                                safe_choice)


def _onehot(pred, n=4):
    return np.eye(n)[pred]


def test_informative_test_is_a_one_sided_binomial_test_against_chance():
    labels = np.arange(40) % 4                       # balanced: chance 1/4
    pred = labels.copy()
    pred[:22] = (pred[:22] + 1) % 4                  # 18 of 40 right
    acc, p = informative_test(_onehot(pred)[None], labels, 4)
    assert acc == pytest.approx(18 / 40)
    assert p == pytest.approx(binom.sf(17, 40, 0.25))  # P(X >= 18)
    assert p < 0.05
    chance_acc, chance_p = informative_test(_onehot((labels + 1) % 4)[None], labels, 4)  # never right
    assert chance_acc == 0 and chance_p == pytest.approx(1.0)


def test_chance_is_the_majority_share_when_classes_are_unbalanced():
    labels = np.array([0] * 30 + [1] * 10)
    always_zero = _onehot(np.zeros(40, int), 2)[None]  # 75 % by predicting the majority class
    acc, p = informative_test(always_zero, labels, 2)
    assert acc == 0.75 and p > 0.4  # no better than the majority share


def test_accuracy_averages_over_seeds():
    labels = np.array([0, 1])
    probs = np.stack([_onehot(np.array([0, 1]), 2), _onehot(np.array([1, 1]), 2)])
    assert accuracy(probs, labels) == 0.75


def test_ensemble_weights_by_validation_accuracy():
    a, b = np.full((1, 2, 2), [0.9, 0.1]), np.full((1, 2, 2), [0.3, 0.7])
    out = ensemble_of_branches({"a": a, "b": b}, {"a": 0.75, "b": 0.25, "fusion": 0.99})
    np.testing.assert_allclose(out, 0.75 * a + 0.25 * b, atol=1e-5)


@pytest.mark.parametrize("fused,ensemble,margin,expected", [
    (0.80, 0.70, 0.0, "fusion"),     # beats the best branch (0.70)
    (0.70, 0.60, 0.0, "mel"),        # a tie is no win: the branch
    (0.74, 0.60, 0.05, "mel"),       # not by the margin
    (0.60, 0.72, 0.0, "ensemble"),   # the ensemble beats the best branch on val
    (0.60, 0.70, 0.0, "mel"),        # the ensemble ties the best branch: the branch (issue 39: `>=` passed every test)
    (0.75, 0.80, 0.0, "ensemble"),   # the fusion beats the best branch but not the ensemble
    (0.80, 0.80, 0.0, "ensemble"),   # a tie with the ensemble is no win either
    (0.86, 0.80, 0.05, "fusion"),    # beats both by more than the margin
])
def test_safe_choice(fused, ensemble, margin, expected):
    assert safe_choice(fused, {"eeg": 0.3, "mel": 0.7}, ensemble, margin) == expected


def test_fallback_p_value_is_an_exact_one_sided_mcnemar_test():
    fused = np.ones((1, 20), bool)
    fallback = fused.copy()
    fallback[0, :3] = False                           # fused alone right on 3 trials
    assert fallback_p_value(fused, fallback) == pytest.approx(1.0)   # 0 of 3 discordant for the fallback
    fused[0, 10:18] = False                           # fallback alone right on 8 trials
    assert fallback_p_value(fused, fallback) == pytest.approx(binom.sf(7, 11, 0.5))  # P(X >= 8 of 11)
    assert fallback_p_value(fused, fused) == 1.0     # they never disagree


def test_fallback_p_value_counts_a_trial_once_whatever_the_seeds():
    """Two seeds that each put a different model right on a trial are no evidence either way;
    three seeds of one trial are one trial."""
    fused = np.array([[True, False, True], [False, True, True], [True, True, True]])
    fallback = np.array([[False, True, True], [True, False, True], [True, True, True]])
    assert fallback_p_value(fused, fallback) == 1.0
    one_trial = np.zeros((3, 1), bool)
    assert fallback_p_value(one_trial, ~one_trial) == pytest.approx(0.5)


def test_the_gate_keeps_the_fused_model_unless_the_fallback_is_significantly_better():
    fused = np.ones((1, 40), bool)
    fused[0, :3] = False                                   # the fallback is right on 3 more trials: p = 1/8
    assert gate_fallback("mel", fused, np.ones((1, 40), bool), 0.05) == ("fusion", pytest.approx(0.125))
    assert gate_fallback("mel", fused, np.ones((1, 40), bool), None) == ("mel", None)   # null: no test
    fused[0, :8] = False                                   # 8 more: p = 1/256
    assert gate_fallback("ensemble", fused, np.ones((1, 40), bool), 0.05) == ("ensemble", pytest.approx(1 / 256))
    assert gate_fallback("fusion", fused, fused, 0.05) == ("fusion", None)             # nothing to test


def _gate_study(rng, n_val: int, restarts: int, gap: float = 0.03) -> dict[str, bool]:
    """One fold of the gate's simulation: a branch truly better than every restart of the fused
    model by about `gap` (restarts' true accuracies 0.70 - gap + N(0, 0.02)), correctness of each
    model on a trial a probit of a difficulty every model shares and of noise the restarts share
    in part; the restart with the best validation accuracy is kept, as the lowest validation
    log-loss keeps one. Returns whether the gate falls back when it reads the kept restart's
    validation trials ("kept"), the kept restart on fresh trials ("fresh"), and every restart's
    validation trials ("every", what the fuse stage does)."""
    from scipy.stats import norm

    accuracy_of = 0.70 - gap + 0.02 * rng.normal(size=restarts)

    def trials():
        shared, fused_shared = rng.normal(size=n_val), rng.normal(size=n_val)
        branch = np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=n_val) < norm.ppf(0.70)
        noise = np.sqrt(0.6) * fused_shared + np.sqrt(0.4) * rng.normal(size=(restarts, n_val))
        return branch, np.sqrt(0.5) * shared + np.sqrt(0.5) * noise < norm.ppf(accuracy_of)[:, None]

    (branch, fused), (branch_fresh, fused_fresh) = trials(), trials()
    kept = int(np.argmax(fused.mean(1) + 1e-9 * rng.random(restarts)))
    return {"kept": gate_fallback("mel", fused[kept][None], branch[None], 0.05)[0] == "mel",
            "fresh": gate_fallback("mel", fused_fresh[kept][None], branch_fresh[None], 0.05)[0] == "mel",
            "every": gate_fallback("mel", fused, branch[None], 0.05)[0] == "mel"}


def test_the_gate_reading_every_restart_falls_back_as_often_as_on_fresh_trials():
    """Issue 39's finding: the restart kept on validation, then tested on the same trials, looks
    better than it is, so the gate fell back too rarely. Reading every restart's validation
    correctness (mean over restarts) takes that bias away: in 4,000 folds of 80 validation
    trials (scratch run), fallbacks kept 0.028, fresh 0.081, every restart 0.078 at 3 restarts;
    0.096, 0.097, 0.096 at 1. Here 1,500 folds a case; the binomial SE of a rate near 0.08 is 0.007."""
    rng = np.random.default_rng(0)
    for restarts in (1, 3):
        rates = {k: np.mean(v) for k, v in zip(("kept", "fresh", "every"),
                                                 zip(*[_gate_study(rng, 80, restarts).values() for _ in range(1500)]))}
        assert abs(rates["every"] - rates["fresh"]) < 0.025, (restarts, rates)
        if restarts == 3:
            assert rates["kept"] < rates["fresh"] / 2, rates


def test_the_fuse_stage_gates_on_every_restart_of_every_seed():
    from pipeline.stages.fuse import restarts_right

    y_val = np.array([0, 1, 2, 0])
    restarted = [{"epoch": 1}, {"epoch": 2, "restart_val_predicted": [[0, 1, 2, 0], [0, 0, 0, 0], [1, 1, 2, 0]]}]
    once = [{"epoch": 1}]  # a run that trained once: its kept model's probabilities
    kept = _onehot(np.array([[0, 1, 2, 0], [2, 1, 0, 0]]))  # (2 seeds, 4 trials, 4 classes)
    right = restarts_right([restarted, once], kept, y_val)
    assert right.tolist() == [[True, True, True, True], [True, False, False, True], [False, True, True, True],
                              [False, True, False, True]]
    # the gate averages them per trial (fallback_p_value): 0.5, 0.75, 0.5 and 1
    assert right.mean(0).tolist() == [0.5, 0.75, 0.5, 1.0]
