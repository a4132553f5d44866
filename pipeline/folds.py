"""One fold's training data: features standardised with that fold's train-only statistics
(written by the normalize stage), labels and the trial indices of each part.

Features are not copied: each modality is a `NormalizedRows` over the (memory-mapped) feature
array that standardises only the rows a batch reads, so a training run holds one batch of
normalised inputs at a time and its memory grows with the arrays on disk, not with copies of
them per fold, part or worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.dataset import Trials
from pipeline.normalize import apply_normalizer, trial_scale
from pipeline.split import fold_indices


class NormalizedRows:
    """Rows `rows` of a feature array `x` (n_trials, ...), standardised when read.

    `self[idx]` (positions into `rows`: a slice, an index array or tensor) reads those rows of
    `x` and returns (x - mean) / std as a float32 tensor (len(idx), ...), the same numbers a
    whole-array `apply_normalizer` gives. `len` and `shape` are the view's, as for a tensor.
    """

    def __init__(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray, rows: np.ndarray | None = None):
        self.x, self.mean, self.std = x, mean, std
        self.rows = np.arange(len(x)) if rows is None else np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.x.shape[1:])

    def __getitem__(self, idx) -> torch.Tensor:
        rows = self.rows[idx if isinstance(idx, slice) else np.asarray(idx)]
        return torch.from_numpy(apply_normalizer(self.x[rows], self.mean, self.std))

    def subset(self, positions: np.ndarray) -> NormalizedRows:
        return NormalizedRows(self.x, self.mean, self.std, self.rows[positions])

    def trial_scales(self, chunk: int = 256) -> np.ndarray:
        """`trial_scale` of every row, (len,), a chunk at a time."""
        return np.concatenate([trial_scale(self[start:start + chunk].numpy()) for start in range(0, len(self), chunk)])

    def mean_row(self, chunk: int = 256) -> torch.Tensor:
        """The mean normalised row (1, ...), accumulated in float64 a chunk at a time."""
        total = np.zeros(self.x.shape[1:], np.float64)
        for start in range(0, len(self), chunk):
            total += self[start:start + chunk].numpy().sum(axis=0, dtype=np.float64)
        return torch.from_numpy((total / max(len(self), 1)).astype(np.float32))[None]


@dataclass
class FoldData:
    inputs: dict[str, NormalizedRows | torch.Tensor]  # modality -> normalised features (or frozen embeddings) of all trials
    labels: torch.Tensor               # (n_trials,); with secondary tasks (n_trials, n_tasks), -1: no label
    index: dict[str, np.ndarray]       # train / val / test trial indices

    def part(self, name: str) -> tuple[dict[str, NormalizedRows | torch.Tensor], torch.Tensor]:
        idx = self.index[name]
        rows = {m: x.subset(idx) if isinstance(x, NormalizedRows) else x[torch.as_tensor(idx)]
                for m, x in self.inputs.items()}
        return rows, self.labels[torch.as_tensor(idx)]

    def train_fill(self) -> dict[str, torch.Tensor]:
        """Per view the mean normalised train row (1, ...): what stands in for a missing view, in
        the robustness check and in predict alike."""
        return {m: x.mean_row() for m, x in self.part("train")[0].items()}

    def view_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """What a model keeps of each view's train trials to label new ones: the normaliser
        (mean, std), the fill of a missing view (`train_fill`) and the range of the train
        trials' `trial_scale` (predict's out-of-range check)."""
        fill, train, stats = self.train_fill(), self.part("train")[0], {}
        for m, x in self.inputs.items():
            scales = train[m].trial_scales()
            stats[m] = {"mean": x.mean, "std": x.std, "fill": fill[m].numpy(),
                        "scale_range": np.array([scales.min(), scales.max()])}
        return stats


def fold_data(features: dict[str, np.ndarray], trials: Trials, fold: int, root: Path = Path(".")) -> FoldData:
    """Every trial's features, standardised on read with fold `fold`'s train-only statistics
    (read from the project at `root`); pass memory-mapped arrays to keep them on disk."""
    inputs = {}
    for modality, x in features.items():
        stats = np.load(root / io.normalizer_path(modality))
        inputs[modality] = NormalizedRows(x, stats["mean"][fold], stats["std"][fold])
    return FoldData(inputs, torch.tensor(task_labels(trials)), fold_indices(trials.subjects, trials.folds[fold]))


def task_labels(trials: Trials) -> np.ndarray:
    """The labels a model trains on: the primary task's (n_trials,) alone, or with secondary
    tasks every task's side by side (n_trials, n_tasks), -1 where a trial has no label."""
    if not trials.tasks:
        return trials.labels
    return np.stack([trials.labels, *(task.labels for task in trials.tasks.values())], axis=1)


def primary_labels(labels: torch.Tensor) -> torch.Tensor:
    """The primary task's labels of `task_labels`' output (or of a part of it)."""
    return labels if labels.ndim == 1 else labels[:, 0]
