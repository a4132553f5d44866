"""Per-modality standardisation with statistics fitted on the train trials of each fold only."""
from __future__ import annotations

import numpy as np

from pipeline.split import fold_indices


def constant_on_train(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Where a feature's train std is no more than float32 rounding (1e-6 of its mean, or
    1e-8): train says nothing about it. Dividing by such a std blows a held-out trial's value
    up to 1e5-1e7 standard deviations, and that one input then decides every prediction."""
    return std <= np.maximum(1e-8, 1e-6 * np.abs(mean))


def fit_normalizer(x_train: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over `axes` of the train rows (kept as broadcastable shape without the
    sample axis). A feature constant on the train rows (`constant_on_train`) gets std inf, so
    it maps to 0 on every trial, held-out ones included, never to NaN or to a huge value."""
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
    std = x_train.std(axis=axes, keepdims=True, dtype=np.float64)[0]
    return mean.astype(np.float32), np.where(constant_on_train(mean, std), np.inf, std).astype(np.float32)


def apply_normalizer(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x - mean) / std).astype(np.float32)


def trial_scale(x_norm: np.ndarray) -> np.ndarray:
    """The median absolute normalised feature of each trial, (n,) from (n, ...): about 0.67 on
    the train trials (for Gaussian features). Far outside the train trials' range it says that a
    trial is not what the model learned from (other units, another amplifier), where single
    features may not: EEG in volts read as microvolts normalises to about 0 everywhere, inside
    every feature's range. The median, not the root mean square: a few features far out (a
    held-out voice's openSMILE functional at 40 standard deviations) do not move it."""
    return np.median(np.abs(x_norm.reshape(len(x_norm), -1)), axis=1).astype(np.float64)


def describe(x: np.ndarray) -> dict[str, float]:
    """mean, std, min and max of an array: what normalised inputs look like."""
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def fold_normalizers(x: np.ndarray, subjects: np.ndarray, folds: list[dict[str, list[str]]],
                     axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Statistics of every fold, each fitted on that fold's train trials only.

    x: (n_trials, ...). Returns means and stds stacked over folds, (n_folds, *stat_shape), and
    per fold and part (train, val, test) a description of the normalised inputs: the first
    thing to check when one branch dominates.
    """
    means, stds, summary = [], [], []
    for fold in folds:
        parts = fold_indices(subjects, fold)
        mean, std = fit_normalizer(x[parts["train"]], axes)
        means.append(mean)
        stds.append(std)
        summary.append({part: describe(apply_normalizer(x[idx], mean, std)) for part, idx in parts.items()})
    return np.stack(means), np.stack(stds), summary
