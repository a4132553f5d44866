"""Per-modality standardisation with statistics fitted on the train trials of each fold only."""
from __future__ import annotations

import numpy as np

# Axes the statistics are pooled over: EEG per channel, mel per frequency bin, topology per
# image channel (band x homology dimension).
NORM_AXES = {"eeg": (0, 2), "mel": (0, 1, 3), "topo": (0, 2, 3)}


def fit_normalizer(x_train: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over `axes` of the train rows (kept as broadcastable shape without the
    sample axis). A constant feature gets std 1 so it maps to 0, not NaN."""
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
    std = x_train.std(axis=axes, keepdims=True, dtype=np.float64)[0]
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def apply_normalizer(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x - mean) / std).astype(np.float32)
