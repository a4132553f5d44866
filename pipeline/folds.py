"""One fold's training data as tensors: features standardised with that fold's train-only
statistics (written by the normalize stage), labels and the trial indices of each part."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.dataset import Trials
from pipeline.normalize import apply_normalizer
from pipeline.split import fold_indices


@dataclass
class FoldData:
    inputs: dict[str, torch.Tensor]   # modality -> normalised features of all trials
    labels: torch.Tensor              # (n_trials,)
    index: dict[str, np.ndarray]      # train / val / test trial indices

    def part(self, name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        idx = torch.as_tensor(self.index[name])
        return {m: x[idx] for m, x in self.inputs.items()}, self.labels[idx]


def fold_data(features: dict[str, np.ndarray], trials: Trials, fold: int, root: Path = Path(".")) -> FoldData:
    """Features of every trial, standardised with fold `fold`'s train-only statistics (read from
    the project at `root`)."""
    inputs = {}
    for modality, x in features.items():
        stats = np.load(root / io.normalizer_path(modality))
        inputs[modality] = torch.from_numpy(apply_normalizer(x, stats["mean"][fold], stats["std"][fold]))
    return FoldData(inputs, torch.tensor(trials.labels),
                    fold_indices(trials.subjects, trials.folds[fold]))


def runs(n_folds: int, seeds) -> list[tuple[int, int, int]]:
    """(fold, seed index, seed) of every training run."""
    return [(f, i, s) for f, (i, s) in itertools.product(range(n_folds), enumerate(seeds))]
