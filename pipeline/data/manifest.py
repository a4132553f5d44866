"""The trial manifest: one row per trial, the single interface between sources and features.

Columns: subject, label, eeg_path, eeg_onset, eeg_duration, audio_path, audio_onset,
audio_duration. Onset and duration are seconds inside the file (blank: the whole file); the
audio columns may be missing or blank for EEG-only data. The label columns of secondary tasks
(`data.tasks` after `label`) follow; a blank there leaves the trial out of that task only.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.modalities import MODALITIES

COLUMNS = ("subject", "label", "eeg_path", "eeg_onset", "eeg_duration",
           "audio_path", "audio_onset", "audio_duration")
REQUIRED = ("subject", "label", "eeg_path")
PATH_COLUMNS = ("eeg_path", "audio_path")


def modalities_of(manifest: pd.DataFrame) -> list[str]:
    """The views a trial table has: every view of the registry, those that need audio only when
    some row has an audio_path (blank cells may be '' as written or NaN as read back)."""
    has_audio = manifest["audio_path"].fillna("").ne("").any()
    return [m for m, spec in MODALITIES.items() if has_audio or not spec.needs_audio]


def portable(path: Path) -> str:
    """Relative to the working directory when inside it, so outputs do not depend on where
    the project is checked out (DVC hashes them)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def read_manifest_csv(path: str | Path, tasks: tuple[str, ...] = ()) -> pd.DataFrame:
    """A user manifest as a table of COLUMNS and the secondary `tasks`' columns (as text, blanks
    as '') plus `where` (file and row, for messages). Paths are resolved against the manifest's
    folder (absolute paths are kept).

    Raises PipelineError naming the file for a missing or unreadable manifest, missing
    required or task columns or no rows: those stop ingest whatever `data.on_error` says.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: manifest not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path}: manifest is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; required: "
                            f"{', '.join(REQUIRED)}; optional: {', '.join(c for c in COLUMNS if c not in REQUIRED)}")
    missing_tasks = [t for t in tasks if t not in df.columns]
    if missing_tasks:
        raise PipelineError(f"{path}: no column {', '.join(map(repr, missing_tasks))} named in data.tasks; "
                            f"its columns: {', '.join(df.columns)}")
    if df.empty:
        raise PipelineError(f"{path}: manifest has no rows")
    df = df.reindex(columns=[*COLUMNS, *tasks], fill_value="").apply(lambda col: col.str.strip())
    for col in PATH_COLUMNS:
        df[col] = [portable(path.parent / p) if p else "" for p in df[col]]
    df["where"] = [f"{path} row {i + 2}" for i in range(len(df))]
    return df


class BadInput:
    """The `data.on_error` policy: `fail` raises at the first bad trial, `skip` records it."""

    def __init__(self, on_error: str):
        self.on_error = on_error
        self.dropped: list[dict] = []

    def __call__(self, where: str, kind: str, reason: str, subject: str = "", label: str = "",
                 order: int = -1) -> None:
        if self.on_error == "fail":
            raise PipelineError(f"{where}: {reason}")
        self.dropped.append({"where": where, "subject": subject, "label": label, "kind": kind,
                             "reason": reason, "order": order})
