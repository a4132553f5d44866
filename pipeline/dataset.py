"""Reading what ingest and split wrote: the trial table, labels, folds and feature arrays.

Light on purpose (numpy and pandas, no torch): the data stages and evaluate use it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.data.manifest import modalities_of
from pipeline.errors import PipelineError


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


def load_features(modality: str, mmap: bool = False, root: Path = Path(".")) -> np.ndarray:
    """The features stage's array of `modality` in the project at `root`."""
    path = root / io.feature_path(modality)
    if not path.is_file():
        raise PipelineError(f"{path}: no features for modality {modality!r}; run its features stage")
    return np.load(path, mmap_mode="r" if mmap else None)
