"""BIDS datasets (OpenNeuro's layout) through mne-bids: recordings found by their entities,
trials from each recording's events.tsv.

    <root>/dataset_description.json
    <root>/sub-<label>[/ses-<label>]/eeg/sub-<label>[_ses-<label>]_task-<label>[_run-<index>]_eeg.<ext>
                                     .../..._events.tsv   onset, duration, trial_type (or value), [stim_file]
    <root>/sub-<label>[/ses-<label>]/beh/<same entities>_audio.wav   (BEP047 draft: audio beside the EEG)

A trial is an event whose `data.bids.label_column` value is a class; its window runs from its
onset to `data.bids.trial_end`: its own duration, `trial_seconds` later, or the next event with
a given value (`next:<value>`). The subject is the BIDS subject, so a subject's sessions and runs
stay together in the splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.manifest import COLUMNS, BadInput, portable
from pipeline.data.readers import eeg_seconds, read_eeg
from pipeline.errors import PipelineError
from pipeline.params import BIDSParams, Params

EEG_EXTENSIONS = [".set", ".vhdr", ".edf", ".bdf", ".fif", ".cnt"]  # what mne-bids reads as EEG


def recordings(root: Path, p: BIDSParams) -> list:
    """The BIDSPaths of the EEG recordings under `root` that `p` selects (mne-bids' own search)."""
    from mne_bids import find_matching_paths

    if not (root / "dataset_description.json").is_file():
        raise PipelineError(f"{root}: not a BIDS dataset (no dataset_description.json); data.source bids "
                            "expects a BIDS root at data.root")
    found = find_matching_paths(root, tasks=p.task, sessions=None if p.sessions is None else list(p.sessions),
                                runs=None if p.runs is None else list(p.runs), datatypes=p.datatype,
                                suffixes=p.datatype, extensions=EEG_EXTENSIONS)
    if not found:
        raise PipelineError(f"{root}: no {p.datatype} recordings match data.bids (task {p.task}, sessions "
                            f"{p.sessions}, runs {p.runs})")
    return sorted(found, key=lambda bp: str(bp.fpath))


def label_column(events: pd.DataFrame, wanted: str) -> str | None:
    """The events column that holds the class: `wanted`, or `value` when `wanted` is the default
    trial_type and the file has none (as mne-bids reads events)."""
    if wanted in events.columns:
        return wanted
    return "value" if wanted == "trial_type" and "value" in events.columns else None


def window_end(events: pd.DataFrame, k: int, column: str, p: BIDSParams) -> float | str:
    """Where trial `k`'s window ends (seconds), or why it has none (a string)."""
    onset = events["onset"].iloc[k]
    if p.trial_end == "fixed":
        return onset + p.trial_seconds
    if p.trial_end == "duration":
        duration = pd.to_numeric(events["duration"].iloc[k], errors="coerce") if "duration" in events else np.nan
        return onset + duration if np.isfinite(duration) and duration > 0 else \
            "no positive duration (data.bids.trial_end duration)"
    later = events[(events["onset"] > onset) & (events[column] == p.end_marker)]
    return float(later["onset"].iloc[0]) if len(later) else f"no later '{p.end_marker}' event ({p.trial_end})"


def audio_of(path, events: pd.DataFrame, k: int, onset: float, root: Path) -> tuple[str, float | str]:
    """The trial's audio and its onset in that file: the events' stim_file (BIDS stimuli/, from 0),
    or the recording's BEP047 beh/<entities>_audio.wav (aligned with the EEG, from the same
    onset); ('', '') without either."""
    stim = str(events["stim_file"].iloc[k]).strip() if "stim_file" in events else ""
    if stim and stim != "n/a":
        return portable(root / "stimuli" / stim), 0.0
    entities = path.copy().update(suffix=None, extension=None).basename  # mne-bids knows no audio extension yet
    beh = Path(path.directory).parent / "beh" / f"{entities}_audio.wav"
    return (portable(beh), onset) if beh.is_file() else ("", "")


class BIDSSource:
    """Trials of every selected recording of a BIDS dataset at `data.root` (`data.bids`)."""

    def trials(self, params: Params, bad: BadInput) -> tuple[pd.DataFrame, dict]:
        root, p = Path(params.data.root), params.data.bids
        rows, used = [], []
        for path in recordings(root, p):
            subject = f"sub-{path.subject}"
            events_file = path.copy().update(suffix="events", extension=".tsv").fpath
            where = str(events_file)
            if not Path(events_file).is_file():
                bad(where, "missing_file", "events.tsv not found", subject)
                continue
            events = pd.read_csv(events_file, sep="\t", dtype=str, keep_default_na=False)
            column = label_column(events, p.label_column)
            if column is None or "onset" not in events:
                bad(where, "bad_label", f"no onset or no label column {p.label_column!r} (data.bids.label_column); "
                                        f"its columns: {', '.join(events.columns)}", subject)
                continue
            events["onset"] = pd.to_numeric(events["onset"], errors="coerce")
            events = events.sort_values("onset", kind="stable").reset_index(drop=True)
            try:
                length = eeg_seconds(read_eeg(path.fpath, preload=False))
            except PipelineError as exc:
                bad(str(path.fpath), "unreadable", str(exc), subject)
                continue
            used.append(portable(Path(path.fpath)))
            for k, label in enumerate(events[column]):
                if (p.labels is not None and label not in p.labels) or label in (p.end_marker, "n/a", ""):
                    continue
                row_where = f"{where} event at {events['onset'].iloc[k]} s ({label})"
                if not np.isfinite(events["onset"].iloc[k]):
                    bad(row_where, "bad_time", "its onset is not a number", subject, label)
                    continue
                onset, end = float(events["onset"].iloc[k]), window_end(events, k, column, p)
                if isinstance(end, str):
                    bad(row_where, "no_window", end, subject, label)
                    continue
                if end > length + 1e-6:
                    bad(row_where, "out_of_range", f"the trial ends at {end:g} s, past the recording's end "
                                                   f"({length:g} s)", subject, label)
                    continue
                audio, audio_onset = audio_of(path, events, k, onset, root)
                rows.append({"subject": subject, "label": label, "eeg_path": portable(Path(path.fpath)),
                             "eeg_onset": onset, "eeg_duration": end - onset, "audio_path": audio,
                             "audio_onset": audio_onset, "audio_duration": end - onset if audio else "",
                             "where": row_where})
        return pd.DataFrame(rows, columns=[*COLUMNS, "where"]), {"bids_recordings": used}
