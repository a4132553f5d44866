"""Builders the tests share: a small manifest dataset on disk, branches, model inputs and folds.

Each test states what it plants in the data; these only spare it the boilerplate around that
(seeded construction, identity normalisation, index splits), so a change to a constructor's
signature is one edit here."""
from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from pipeline.folds import FoldData, NormalizedRows
from pipeline.nets import BranchClassifier

# ------------------------------------------------------------------ a manifest dataset on disk

CH = ["Fz", "Cz", "Pz", "Oz"]
SFREQ = 100.0
SR = 16000
SECONDS = 20.0
SUBJECTS = ("sub-01", "sub-02", "sub-03")
ONSETS = (0.0, 4.0, 8.0, 12.0)
DURATION = 4.0


def write_fif(path: Path, channels=CH, seconds=SECONDS, seed=0, edit=None) -> Path:
    """4 channels of noise at 100 Hz; `edit(x)` may change the data (in V) before saving."""
    x = np.random.default_rng(seed).standard_normal((len(channels), int(seconds * SFREQ))) * 1e-5
    if edit is not None:
        edit(x)
    mne.io.RawArray(x, mne.create_info(list(channels), SFREQ, "eeg"), verbose="error").save(
        path, overwrite=True, verbose="error")
    return path


def write_wav(path: Path, seconds=SECONDS, seed=0, silent=False) -> Path:
    y = np.zeros(int(seconds * SR)) if silent else 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))
    sf.write(path, y, SR)
    return path


def make_dataset(root: Path) -> pd.DataFrame:
    """3 subjects, one FIF and one WAV each, 4 trials each (rows 2-5, 6-9, 10-13 of the CSV)."""
    rows = []
    for s, subject in enumerate(SUBJECTS):
        write_fif(root / f"{subject}_eeg.fif", seed=s)
        write_wav(root / f"{subject}_audio.wav", seed=s)
        for k, onset in enumerate(ONSETS):
            rows.append({"subject": subject, "label": "ab"[k % 2], "eeg_path": f"{subject}_eeg.fif",
                         "eeg_onset": onset, "eeg_duration": DURATION, "audio_path": f"{subject}_audio.wav",
                         "audio_onset": onset, "audio_duration": DURATION})
    return pd.DataFrame(rows).astype(object)


def write_manifest(root: Path, df: pd.DataFrame, name="manifest.csv") -> Path:
    path = root / name
    df.to_csv(path, index=False)
    return path


def run_params(params, root: Path, on_error="fail", classes=None, channels=None, n_jobs=1):
    """`params` reading the manifest `root`/manifest.csv (as `make_dataset` writes it)."""
    data = params.data.model_copy(update=dict(source="manifest", root=str(root), manifest="manifest.csv",
                                              on_error=on_error, classes=classes))
    return params.model_copy(update=dict(data=data,
                                         eeg=params.eeg.model_copy(update=dict(channels=channels, read_kwargs={})),
                                         compute=params.compute.model_copy(update=dict(n_jobs=n_jobs))))


def one_line(info: pytest.ExceptionInfo) -> str:
    """The raised error's message, asserted to be one line (what the CLI prints)."""
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------ branches, inputs, folds

def make_branches(shapes: dict[str, tuple[int, ...]], n_classes: int = 3, embed: int | dict[str, int] = 6,
             dropout: float = 0.0, encoders: dict[str, str] | None = None, seed: int = 0) -> dict[str, BranchClassifier]:
    """Untrained branches, one per view of `shapes` (view -> input shape without the batch axis),
    their weights drawn in `shapes`' order after `torch.manual_seed(seed)`; `embed` an embedding
    size for all or per view, `encoders` per view (default: the view's first)."""
    torch.manual_seed(seed)
    return {m: BranchClassifier(m, s, n_classes, embed[m] if isinstance(embed, dict) else embed, dropout,
                                (encoders or {}).get(m))
            for m, s in shapes.items()}


def random_inputs(shapes: dict[str, tuple[int, ...]], n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Standard normal inputs (n, *shape) per view, from a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, *s, generator=g) for m, s in shapes.items()}


def split_index(n_train: int, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    """Consecutive train / val / test trial indices."""
    ends = np.cumsum([n_train, n_val, n_test])
    return {"train": np.arange(0, ends[0]), "val": np.arange(ends[0], ends[1]), "test": np.arange(ends[1], ends[2])}


def fold_data(inputs: dict[str, np.ndarray | torch.Tensor], labels, index: dict[str, np.ndarray]) -> FoldData:
    """A fold of inputs taken as already standardised (mean 0, std 1: read back unchanged)."""
    rows = {m: NormalizedRows(np.asarray(x, np.float32), np.float32(0), np.float32(1)) for m, x in inputs.items()}
    return FoldData(rows, torch.as_tensor(labels), index)
