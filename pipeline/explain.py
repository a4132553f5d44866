"""Why the models decide: explanations a paper can print, as plain functions over arrays (the
explain stage, pipeline/stages/explain.py, runs them per fold and seed; the Integrated Gradients
of the networks are pipeline/attribution.py, run in the stage's workers).

- Haufe patterns (Haufe et al., NeuroImage 2014) of the EEG band-power baseline: the logistic
  regression's weights turned into activation patterns through the covariance of its
  (standardised) train features, by MNE's `LinearModel` (`patterns_` = cov(X) w). A weight
  says how a feature is used to cancel noise as much as where the signal is; the pattern says
  where the signal is. Patterns stay in standardised units (each feature's train SD): MNE's
  `get_coef(..., inverse_transform=True)` would call the scaler's `inverse_transform`, which
  adds each feature's mean to a pattern.
- The reductions of attributions over trials, classes, folds and views.
"""
from __future__ import annotations

import numpy as np

from pipeline.dataset import Trials

PRIMARY = "label"  # the primary task's name in data.tasks and in explain.json
IG_METHOD = ("Integrated Gradients (captum 0.9.0), baseline zero (each view's train mean after standardisation, "
             "the input a missing view gets), target: the log-probability of the trial's true class")


def haufe_patterns(x: np.ndarray, labels: np.ndarray, index: dict[str, np.ndarray],
                   c_grid) -> tuple[np.ndarray, np.ndarray, float]:
    """Haufe patterns of a logistic regression on `x` (n, features), fitted on `index["train"]`
    with its C chosen on `index["val"]` as the baselines stage chooses it: one row per class of
    the train labels (classes, features), in standardised units, computed with the train
    features' covariance; those classes; and the model's validation accuracy. Two classes share
    one weight vector: the first class's pattern is the second's negative. Read a pattern with
    that accuracy: the patterns of a model at chance still show the features' covariance
    (cov(X) w for any w), only smaller, as its C is then the most regularised."""
    from mne.decoding import LinearModel, get_coef  # here: scikit-learn and MNE are 0.6 s of a worker's start-up
    from sklearn.linear_model import LogisticRegression

    from pipeline.baselines import choose_on_validation

    model, _, val_acc = choose_on_validation(x, labels, index, c_grid,
                                             classifier=lambda c: LinearModel(LogisticRegression(C=c, max_iter=5000)))
    patterns = np.atleast_2d(get_coef(model, "patterns_"))
    row_space = model.named_steps["trainrowspace"].basis_  # more features than train trials: fitted in their span
    if row_space is not None:  # cov(X) V a = V cov(X V) a: the patterns back in the features' coordinates
        patterns = patterns @ row_space.T
    classes = model.steps[-1][1].model_.classes_
    if len(classes) == 2:
        patterns = np.concatenate([-patterns, patterns])
    return patterns, classes, val_acc


def finite_or_none(obj):
    """`obj` with every non-finite float (a class no run had, a view no fold fused) as None:
    JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def nan_mean(arrays: list[np.ndarray]) -> np.ndarray:
    """The element-wise mean over `arrays`, ignoring NaN; NaN where every one is NaN (no warning)."""
    stacked = np.stack(arrays)
    seen = (~np.isnan(stacked)).sum(axis=0)
    return np.where(seen > 0, np.nansum(stacked, axis=0) / np.maximum(seen, 1), np.nan)


def view_shares(sums: np.ndarray) -> np.ndarray:
    """(n, views) summed attributions -> (n, views) shares: |sum| normalised over views per
    trial (a trial no view moves gets equal shares)."""
    size = np.abs(sums)
    total = size.sum(axis=1, keepdims=True)
    return np.where(total > 0, size / np.where(total > 0, total, 1.0), 1.0 / sums.shape[1])


def class_means(values: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, ...) -> (n_classes, ...): the mean over each class's trials (NaN for a class without
    any; NaN in `values` ignored)."""
    out = np.full((n_classes, *values.shape[1:]), np.nan)
    for c in range(n_classes):
        if (labels == c).any():
            out[c] = nan_mean(list(values[labels == c]))
    return out


def top_features(importance: np.ndarray, names: list[str], k: int = 20) -> list[list]:
    """The `k` most important features, [name, importance] in decreasing order (ties: column order)."""
    order = np.argsort(-importance, kind="stable")[:k]
    return [[names[i], float(importance[i])] for i in order]


def explained_rows(index: dict[str, np.ndarray], n: int, seed) -> np.ndarray:
    """The validation and test trials a fold's models are explained on: at most `n` of them,
    drawn by `seed` (an int or a sequence of ints, as numpy's default_rng takes), in table order."""
    rows = np.sort(np.concatenate([index["val"], index["test"]]))
    if len(rows) <= n:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))


def task_trials(trials: Trials) -> dict[str, Trials]:
    """The primary task and each secondary task, as Trials of their own labels (-1: none)."""
    return {PRIMARY: trials, **{task: trials.for_task(task) for task in trials.tasks}}
