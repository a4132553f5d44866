"""Reading what ingest and split wrote: the trial table, labels, folds and feature arrays.

Light on purpose (numpy and pandas, no torch): the data stages and evaluate use it too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.data.manifest import modalities_of
from pipeline.errors import PipelineError


@dataclass
class Trials:
    labels: np.ndarray          # (n_trials,) class index of the primary task
    subjects: np.ndarray        # (n_trials,) subject id
    classes: list[str]
    folds: list[dict[str, list[str]]]
    tasks: dict[str, "Task"] = field(default_factory=dict)  # the secondary tasks, in data.tasks order

    @property
    def task_classes(self) -> dict[str, list[str]]:
        """Each secondary task's class names (what a model's task heads are built from)."""
        return {task: t.classes for task, t in self.tasks.items()}

    def for_task(self, task: str) -> "Trials":
        """These trials seen through secondary task `task`: its labels (-1: none) and classes."""
        return Trials(labels=self.tasks[task].labels, subjects=self.subjects, classes=self.tasks[task].classes,
                      folds=self.folds)


@dataclass
class Task:
    """A secondary task: its classes and each trial's class index, -1 where the trial has none."""
    labels: np.ndarray          # (n_trials,) class index or -1
    classes: list[str]


# Only a blank cell is missing: a label or subject 'NA', 'None', 'null', 'nan' or 'N/A' stays that
# string (pandas' default would make it NaN, and the label then an integer -2**63).
AS_WRITTEN = {"keep_default_na": False, "na_values": [""]}


def load_manifest(path: Path = io.MANIFEST) -> pd.DataFrame:
    """The trial table: the manifest (the trials every view keeps, written by features_eeg) or
    io.TRIALS (every trial ingest checked); subject and label kept as strings, as written."""
    return pd.read_csv(path, dtype={"subject": str, "label": str}, **AS_WRITTEN)


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
    manifest, classes, task_classes = load_manifest(), io.read_json(io.CLASSES), io.read_json(io.TASKS)
    # as ingest reads them: only a blank is missing (NaN -> -1), "NA" or "none" are classes
    labels = pd.read_csv(io.MANIFEST, usecols=list(task_classes), dtype=str, **AS_WRITTEN)
    tasks = {task: Task(labels[task].map({c: i for i, c in enumerate(names)}).fillna(-1).to_numpy(np.int64), names)
             for task, names in task_classes.items()}
    return Trials(labels=_label_index(manifest, classes), subjects=manifest["subject"].to_numpy(),
                  classes=classes, folds=io.read_json(io.SPLIT)["folds"], tasks=tasks)


def load_features(modality: str, mmap: bool = False, root: Path = Path(".")) -> np.ndarray:
    """The features stage's array of `modality` in the project at `root`."""
    path = root / io.feature_path(modality)
    if not path.is_file():
        raise PipelineError(f"{path}: no features for modality {modality!r}; run its features stage")
    return np.load(path, mmap_mode="r" if mmap else None)


def task_sizes(trials: Trials) -> list[int]:
    """Class counts of the primary task, then of each secondary task: the column blocks of a
    model with a head per task."""
    return [len(trials.classes), *(len(task.classes) for task in trials.tasks.values())]


def save_task_probabilities(out: Path, probs: np.ndarray, trials: Trials) -> None:
    """Write a stage's probabilities (..., n_trials, sum of task_sizes) under `out`: the primary
    task's to probabilities.npy (what every reader of a single task reads), each secondary
    task's to probabilities_tasks.npz (task -> (..., n_trials, its classes); empty without such
    tasks, so that a stage can depend on it)."""
    blocks = np.split(probs, np.cumsum(task_sizes(trials))[:-1], axis=-1)
    np.save(out / "probabilities.npy", blocks[0])
    np.savez(out / "probabilities_tasks.npz", **dict(zip(trials.tasks, blocks[1:])))


def load_task_probabilities(folder: Path) -> dict[str, np.ndarray]:
    """The secondary tasks' probabilities `save_task_probabilities` wrote ({} without such tasks)."""
    with np.load(folder / "probabilities_tasks.npz") as archive:
        return dict(archive)


def load_all_probabilities(folder: Path, trials: Trials) -> np.ndarray:
    """Every task's probabilities side by side (..., n_trials, sum of task_sizes), as a model outputs them."""
    primary = np.load(folder / "probabilities.npy")
    if not trials.tasks:
        return primary
    tasks = load_task_probabilities(folder)
    return np.concatenate([primary, *(tasks[t] for t in trials.tasks)], axis=-1)
