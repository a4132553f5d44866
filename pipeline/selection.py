"""Per-fold decisions taken on validation only, never test: which views carry information
(a binomial test against chance), and whether the fused model earned its place (safe
selection: otherwise the best branch, or the validation-weighted ensemble of branches, where
the validation trials say so beyond chance).

Plain numpy/scipy over probability arrays (n_seeds, n_trials, n_classes) of one fold.
"""
from __future__ import annotations

import numpy as np

INFORMATIVE_ALPHA = 0.05  # a view is informative when its validation accuracy beats chance at this level


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of (n_seeds, n, n_classes) probabilities, mean over seeds."""
    return float((probs.argmax(-1) == labels).mean())


def informative_test(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float, float]:
    """One-sided binomial test of a branch's validation accuracy (mean over seeds, as a count of
    correct trials) against chance, here the share of the most frequent validation class (1 /
    n_classes when balanced; never below it). Returns (accuracy, p-value).

    It treats the validation trials as independent, which trials of one subject are not: the
    p-value is a screen that decides which views a fold fuses (`drop_uninformative`), with a
    fold's one or two validation subjects too few for a test over subjects, and no reported
    significance; its errors only move a fold between fusing a view and leaving it out."""
    from scipy.stats import binomtest  # here: scipy.stats is 0.4 s of the fuse stage's start-up

    acc = accuracy(probs, labels)
    chance = max(1.0 / n_classes, float(np.bincount(labels, minlength=n_classes).max() / len(labels)))
    correct = int(round(acc * len(labels)))
    return acc, float(binomtest(correct, len(labels), chance, alternative="greater").pvalue)


def ensemble_of_branches(branch_probs: dict[str, np.ndarray], val_acc: dict[str, float]) -> np.ndarray:
    """Average of branch probabilities weighted by validation accuracy (the `ensemble` fusion
    type with `val` weighting, computed from the pretrained branches' outputs)."""
    weights = np.array([val_acc[m] + 1e-6 for m in branch_probs])
    return np.tensordot(weights / weights.sum(), np.stack(list(branch_probs.values())), axes=1)


def safe_choice(fused_val: float, branch_val: dict[str, float], ensemble_val: float,
                margin: float) -> str:
    """What a fold reports under `select: safe`: the best on validation of the fused model, the
    best branch and the ensemble of branches, where the fused model must beat both others by
    more than `margin` (ties go to the branch, then the ensemble). `branch_val` holds the
    branches the fold fused, and the ensemble averages those same branches."""
    best = max(branch_val, key=branch_val.get)
    fallback = "ensemble" if ensemble_val > branch_val[best] else best
    fallback_val = max(ensemble_val, branch_val[best])
    return "fusion" if fused_val > fallback_val + margin else fallback


def fallback_p_value(fused_correct: np.ndarray, fallback_correct: np.ndarray) -> float:
    """One-sided exact McNemar test that a fallback is right on more validation trials than the
    fused model: of the trials where exactly one of the two is right, a binomial test (p = 1/2)
    of those only the fallback gets. (n_seeds, n) correctness is averaged over seeds first and
    the counts rounded: a trial's seeds are not independent evidence. Like `informative_test` it
    treats a fold's trials as independent: a screen for a fold's choice (selection.json keeps
    it), not a reported significance.

    One or two validation subjects make validation accuracy noisy: on three real-speech studies
    safe selection without this test fell back on 4-5 of 6-8 folds where the fused model then
    scored higher on test (README, "Safe selection's evidence")."""
    from scipy.stats import binomtest  # as in informative_test

    diff = np.asarray(fallback_correct, float).mean(axis=0) - np.asarray(fused_correct, float).mean(axis=0)
    only_fallback, only_fused = int(round(diff.clip(min=0).sum())), int(round((-diff).clip(min=0).sum()))
    if only_fallback + only_fused == 0:
        return 1.0
    return float(binomtest(only_fallback, only_fallback + only_fused, 0.5, alternative="greater").pvalue)


def gate_fallback(choice: str, fused_correct: np.ndarray, fallback_correct: np.ndarray,
                  alpha: float | None) -> tuple[str, float | None]:
    """`safe_choice`'s `choice` after the evidence gate (`fusion.select_alpha`): a fallback stands
    only where `fallback_p_value` < `alpha`, otherwise the fold keeps the fused model. Returns the
    choice and the p (None when nothing was tested: the fused model was chosen, or `alpha` is None).

    With the gate `select_margin` has no effect: a significant fallback is right on more trials,
    so the fused model never beats it by a margin >= 0."""
    if choice == "fusion" or alpha is None:
        return choice, None
    p = fallback_p_value(fused_correct, fallback_correct)
    return (choice if p < alpha else "fusion"), p
