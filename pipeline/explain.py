"""Why the models decide: explanations a paper can print, as plain functions over arrays, tensors
and models (the explain stage, pipeline/stages/explain.py, runs them per fold and seed).

- Haufe patterns (Haufe et al., NeuroImage 2014) of the EEG band-power baseline: the logistic
  regression's weights turned into activation patterns through the covariance of its
  (standardised) train features, by MNE's `LinearModel` (`patterns_` = cov(X) w). A weight
  says how a feature is used to cancel noise as much as where the signal is; the pattern says
  where the signal is. Patterns stay in standardised units (each feature's train SD): MNE's
  `get_coef(..., inverse_transform=True)` would call the scaler's `inverse_transform`, which
  adds each feature's mean to a pattern.
- Integrated Gradients (Sundararajan et al., ICML 2017; captum) of a network's log-probability
  of the true class (its logits divided by the temperature it was trained with), from the zero
  baseline: each view's input standardised with the fold's train statistics, so zero is the
  train mean pooled over the normaliser's axes, the input a view gets when modality dropout
  removes it in training. Attributions add up to the change in that log-probability from the
  baseline to the trial (completeness, up to the quadrature's error), so a view's summed
  attribution is its part of the decision.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


def integrated_gradients(forward, inputs: dict[str, torch.Tensor], target: torch.Tensor, steps: int,
                         batch: int = 512) -> dict[str, torch.Tensor]:
    """captum's Integrated Gradients of `forward(inputs)` (n, outputs) at column `target` (n,),
    from a zero baseline of every view, with `steps` points of captum's default Gauss-Legendre
    rule along the path, `batch` path points a pass: each view's attributions, shaped as its input."""
    from captum.attr import IntegratedGradients

    views = list(inputs)
    method = IntegratedGradients(lambda *xs: forward(dict(zip(views, xs))))
    xs = tuple(inputs[m] for m in views)
    attributions = method.attribute(xs, baselines=tuple(torch.zeros_like(x) for x in xs), target=target,
                                    n_steps=steps, method="gausslegendre",
                                    internal_batch_size=max(batch, len(target)))
    return {m: a.detach() for m, a in zip(views, attributions)}


def task_log_probs(model: torch.nn.Module, sizes: list[int], task: int, temperature: float = 1.0):
    """The forward function of task `task`: log-softmax over its block of the model's output
    (blocks of `sizes` columns, primary task first, as `training.task_softmax` splits them)
    divided by `temperature` (the model's probabilities, as predict computes them)."""
    return lambda inputs: F.log_softmax(model(inputs).split(list(sizes), dim=1)[task] / temperature, dim=1)


def channel_attribution(attributions: torch.Tensor) -> np.ndarray:
    """(n, channels, times) EEG attributions -> (channels,): each channel's attribution summed
    over time, mean over trials: how much it moves the true class's log-probability on average
    (positive: it helps decide right; noise contributes either sign and averages out, where a
    mean of |attribution| would rank it as high as signal)."""
    return attributions.sum(dim=-1).mean(dim=0).numpy().astype(np.float64)


def feature_importance(attributions: torch.Tensor) -> np.ndarray:
    """(n, features) attributions -> (features,): the mean over trials of each feature's
    attribution to the true class's log-probability (as `channel_attribution`, signed)."""
    return attributions.mean(dim=0).numpy().astype(np.float64)


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


def view_sums(attributions: dict[str, torch.Tensor]) -> np.ndarray:
    """Each trial's summed attribution per view, (n, views) in the dict's order: by
    completeness, the view's part of the change of the explained output from the baseline."""
    return np.stack([a.flatten(1).sum(dim=1).numpy().astype(np.float64) for a in attributions.values()], axis=1)


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
