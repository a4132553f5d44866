"""BIDS datasets (OpenNeuro's layout) through mne-bids: recordings found by their entities,
trials from each recording's events.tsv.

    <root>/dataset_description.json
    <root>/sub-<label>[/ses-<label>]/eeg/sub-<label>[_ses-<label>]_task-<label>[_run-<index>]_eeg.<ext>
                                     .../..._events.tsv   onset, duration, trial_type (or value), [stim_file]
    <root>/sub-<label>[/ses-<label>]/beh/<same entities>_audio.wav   (BEP047 draft: audio beside the EEG)

Only the dataset's own recordings count: those under `sub-*/` at the root, never a copy in
derivatives/, sourcedata/ or code/. A trial is an event whose `data.bids.label_column` value is a
class. Values are matched as MNE matches event_id tags: a label of `data.bids.labels` selects
every value that has it among its '/'-separated tags (`emotion/happy` is a `happy` trial), and
`BAD...` and `EDGE...` annotations (MNE's rule for segments to reject) are never trials. Its window
runs from its onset to `data.bids.trial_end`: its own duration, `trial_seconds` later, or the next
event with a given value (`next:<value>`). The subject is the BIDS subject, so a subject's sessions
and runs stay together in the splits.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.manifest import COLUMNS, BadInput, portable
from pipeline.data.readers import eeg_seconds, open_eeg
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
                                suffixes=p.datatype, extensions=EEG_EXTENSIONS,
                                ignore_nosub=True)  # derivatives/, sourcedata/: no recordings of their own
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


def has_tags(value: str, label: str) -> bool:
    """Whether event `value` carries every '/'-separated tag of `label`, as MNE selects event_id
    keys (`emotion/happy` has `happy`, `emotion` and `emotion/happy`)."""
    return set(label.split("/")) <= set(value.split("/"))


def class_of(value: str, p: BIDSParams) -> tuple[str | None, str | None]:
    """The class of event `value` (None: no trial) and why it is bad input (None: it is not).
    Blank, 'n/a' and the end marker are no trials; with `labels` the class is the one label whose
    tags the value has (two: bad input naming both), without them the value itself unless it is
    a BAD/EDGE annotation (a label listed by name, such as a valence class 'bad', still counts)."""
    if value in ("", "n/a") or (p.end_marker is not None and has_tags(value, p.end_marker)):
        return None, None
    if p.labels is None:
        return (None if value.upper().startswith(("BAD", "EDGE")) else value), None
    matched = [label for label in p.labels if has_tags(value, label)]
    if len(matched) > 1:
        return None, f"value {value!r} has the tags of {' and '.join(map(repr, matched))} (data.bids.labels): which class?"
    return (matched[0] if matched else None), None


def window_end(events: pd.DataFrame, k: int, column: str, p: BIDSParams) -> float | str:
    """Where trial `k`'s window ends (seconds), or why it has none (a string)."""
    onset = events["onset"].iloc[k]
    if p.trial_end == "fixed":
        return onset + p.trial_seconds
    if p.trial_end == "duration":
        duration = pd.to_numeric(events["duration"].iloc[k], errors="coerce") if "duration" in events else np.nan
        return onset + duration if np.isfinite(duration) and duration > 0 else \
            "no positive duration (data.bids.trial_end duration)"
    ends = events[column].map(lambda value: has_tags(value, p.end_marker))
    later = events[(events["onset"] > onset) & ends]
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
                length = eeg_seconds(open_eeg(path.fpath))
            except PipelineError as exc:
                bad(str(path.fpath), "unreadable", str(exc), subject)
                continue
            used.append(portable(Path(path.fpath)))
            trials = []  # (event index, class)
            for k, value in enumerate(events[column]):
                label, problem = class_of(value, p)
                if problem:
                    bad(f"{where} event at {events['onset'].iloc[k]} s", "ambiguous_label", problem, subject, value)
                elif label is not None:
                    trials.append((k, label))
            onsets = Counter(events["onset"].iloc[k] for k, _ in trials)
            for k, label in trials:
                row_where = f"{where} event at {events['onset'].iloc[k]} s ({events[column].iloc[k]})"
                if not np.isfinite(events["onset"].iloc[k]):
                    bad(row_where, "bad_time", "its onset is not a number", subject, label)
                    continue
                onset, end = float(events["onset"].iloc[k]), window_end(events, k, column, p)
                if onsets[onset] > 1:
                    bad(row_where, "same_onset", f"{onsets[onset]} trials start at {onset:g} s, on one EEG window",
                        subject, label)
                    continue
                if isinstance(end, str):
                    bad(row_where, "no_window", end, subject, label)
                    continue
                reached = sorted(o for o in onsets if onset < o < end)
                if p.end_marker is not None and reached:
                    bad(row_where, "overlapping_window", f"its window {onset:g}-{end:g} s (to the next "
                        f"'{p.end_marker}') reaches the next trial's onset at {reached[0]:g} s: is an end marker "
                        "missing?", subject, label)
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
