"""Loading what the training stages need: labels, folds and normalised feature tensors."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline import io
from pipeline.data.manifest import modalities_of
from pipeline.errors import PipelineError
from pipeline.normalize import apply_normalizer
from pipeline.split import fold_indices


@dataclass
class Trials:
    labels: np.ndarray          # (n_trials,) class index
    subjects: np.ndarray        # (n_trials,) subject id
    classes: list[str]
    folds: list[dict[str, list[str]]]


def load_manifest() -> pd.DataFrame:
    """The trial table written by ingest (subject and label kept as strings)."""
    return pd.read_csv(io.MANIFEST, dtype={"subject": str, "label": str})


NO_AUDIO = "the data has no audio (no audio_path in the manifest)"


def available_modalities(manifest: pd.DataFrame | None = None) -> list[str]:
    """The views the ingested data has: EEG and topology always, speech only with audio."""
    return modalities_of(load_manifest() if manifest is None else manifest)


def skip_note(stage: str, modality: str) -> bool:
    """True (after printing a one-line note) when the ingested data lacks `modality`: its
    stages then write empty outputs instead of failing."""
    if modality in available_modalities():
        return False
    print(f"{stage} {modality}: skipped: {NO_AUDIO}")
    return True


def _label_index(manifest: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return manifest["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)


def load_labels() -> tuple[np.ndarray, list[str]]:
    """Class index of every trial (manifest order) and the class list."""
    classes = io.read_json(io.CLASSES)
    return _label_index(load_manifest(), classes), classes


def load_trials() -> Trials:
    manifest, classes = load_manifest(), io.read_json(io.CLASSES)
    return Trials(labels=_label_index(manifest, classes), subjects=manifest["subject"].to_numpy(),
                  classes=classes, folds=io.read_json(io.SPLIT)["folds"])


def load_features(modality: str, mmap: bool = False) -> np.ndarray:
    path = io.feature_path(modality)
    if not path.is_file():
        raise PipelineError(f"{path}: no features for modality {modality!r}; run its features stage")
    return np.load(path, mmap_mode="r" if mmap else None)


@dataclass
class FoldData:
    inputs: dict[str, torch.Tensor]   # modality -> normalised features of all trials
    labels: torch.Tensor              # (n_trials,)
    index: dict[str, np.ndarray]      # train / val / test trial indices

    def part(self, name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        idx = torch.as_tensor(self.index[name])
        return {m: x[idx] for m, x in self.inputs.items()}, self.labels[idx]


def fold_data(features: dict[str, np.ndarray], trials: Trials, fold: int) -> FoldData:
    """Features of every trial, standardised with fold `fold`'s train-only statistics."""
    inputs = {}
    for modality, x in features.items():
        stats = np.load(io.normalizer_path(modality))
        inputs[modality] = torch.from_numpy(apply_normalizer(x, stats["mean"][fold], stats["std"][fold]))
    return FoldData(inputs, torch.tensor(trials.labels),
                    fold_indices(trials.subjects, trials.folds[fold]))


def runs(n_folds: int, seeds) -> list[tuple[int, int, int]]:
    """(fold, seed index, seed) of every training run."""
    return [(f, i, s) for f, (i, s) in itertools.product(range(n_folds), enumerate(seeds))]
