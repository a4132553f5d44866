"""The trial manifest: one row per trial, the single interface between sources and features."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pipeline.data.readers import audio_seconds, eeg_seconds
from pipeline.errors import PipelineError

COLUMNS = ("subject", "label", "eeg_path", "eeg_onset", "eeg_duration",
           "audio_path", "audio_onset", "audio_duration")
PATH_COLUMNS = ("eeg_path", "audio_path")


def _portable(path: Path) -> str:
    """Relative to the working directory when inside it, so outputs do not depend on where
    the project is checked out (DVC hashes them)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV, resolve its paths and check every trial window against its file.

    Paths in the CSV are relative to the CSV's folder (absolute paths are kept). Raises
    PipelineError naming the file and row for a missing column, a missing file or a window
    past the end of its recording.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: manifest not found")
    df = pd.read_csv(path, dtype={"subject": str, "label": str})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; required: {', '.join(COLUMNS)}")
    if df.empty:
        raise PipelineError(f"{path}: manifest has no rows")
    df = df[list(COLUMNS)].copy()
    for col in PATH_COLUMNS:
        df[col] = [_portable(path.parent / p) for p in df[col]]
    for col, length in (("eeg", eeg_seconds), ("audio", audio_seconds)):
        for file, rows in df.groupby(f"{col}_path").groups.items():
            if not os.path.isfile(file):
                raise PipelineError(f"{path}: row {rows[0] + 2}: {col} file {file} not found")
            seconds = length(file)
            end = df.loc[rows, f"{col}_onset"] + df.loc[rows, f"{col}_duration"]
            past = end[end > seconds + 1e-6]
            if len(past):
                row = past.index[0]
                raise PipelineError(f"{path}: row {row + 2}: {col} window ends at {past.iloc[0]:.3f} s, "
                                    f"past the end of {file} ({seconds:.3f} s)")
    return df.reset_index(drop=True)
