"""Ingest: a source's candidate trials, each checked against its recordings before any feature
is computed, so bad input is found once, in one place, with one clear line.

Under `data.on_error: fail` the first bad trial stops ingest (nothing is written); under
`skip` every bad trial is dropped and listed with its reason in reports/ingest.json. Trial
windows are read from disk subject after subject, on `compute.n_jobs` joblib workers, so
memory holds a few recordings at a time, never the dataset.
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from pipeline.audit import permuted_within_subjects
from pipeline.data.manifest import COLUMNS, BadInput, modalities_of, portable
from pipeline.data.readers import (MIN_AUDIO_SECONDS, UnplacedBadChannels, audio_seconds, eeg_seconds, open_eeg,
                                   read_audio, select_channels)
from pipeline.data.sources import SOURCES
from pipeline.errors import PipelineError
from pipeline.parallel import stream
from pipeline.params import EEGParams, Params


def _seconds(value) -> float:
    """A time in seconds from a manifest cell: blank -> NaN (the whole file); raises ValueError
    for anything that is not a finite number (the text 'nan' included)."""
    if isinstance(value, str):
        if value == "":
            return math.nan
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(value)
    return float(value)


def _bad_time(row) -> str | None:
    """Why a row's onsets/durations are unusable, or None: numbers of seconds, onsets >= 0,
    durations > 0, blank for the whole file."""
    for col in ("eeg_onset", "eeg_duration", "audio_onset", "audio_duration"):
        try:
            value = _seconds(row[col])
        except ValueError:
            value = None
        if value is None or value < 0 or (col.endswith("duration") and value == 0):
            return f"{col} {row[col]!r} is not allowed: a number of seconds (onset >= 0, duration > 0) or blank"
    return None


def _row_checks(table: pd.DataFrame, classes, task_classes: dict, bad: BadInput, labelled: bool = True) -> pd.DataFrame:
    """Checks that need no recording: blank fields (a blank label only where `labelled`), times
    that are not numbers, labels outside `data.classes` (and secondary tasks' values outside
    `data.task_classes`), duplicated rows, missing audio where the other rows have audio."""
    has_audio = "mel" in modalities_of(table)
    first_seen: dict[tuple, str] = {}
    keep = []
    for i, row in table.iterrows():
        report = lambda kind, reason: bad(row["where"], kind, reason, row["subject"], row["label"], i)  # noqa: E731
        key = tuple(str(row[c]) for c in COLUMNS)
        blank = [c for c in ("subject", "label", "eeg_path") if row[c] == "" and (labelled or c != "label")]
        if blank:
            report("blank_field", f"blank {', '.join(blank)}")
            continue
        if key in first_seen:
            report("duplicate_row", f"duplicates {first_seen[key]}")
            continue
        first_seen[key] = row["where"]
        if classes is not None and row["label"] not in classes and (labelled or row["label"] != ""):
            report("label_not_in_classes", f"label {row['label']!r} is not in data.classes ({', '.join(classes)})")
            continue
        outside = [(t, row[t]) for t, values in task_classes.items() if row[t] not in ("", *values)]
        if outside:
            task, value = outside[0]
            report("label_not_in_classes", f"{task} {value!r} is not in data.task_classes.{task} "
                                           f"({', '.join(task_classes[task])})")
            continue
        if has_audio and row["audio_path"] == "":
            report("no_audio", "blank audio_path while other rows have audio")
            continue
        problem = _bad_time(row)
        if problem:
            report("bad_time", problem)
            continue
        keep.append(i)
    kept = table.loc[keep].copy()
    for col in ("eeg_onset", "eeg_duration", "audio_onset", "audio_duration"):
        kept[col] = [_seconds(v) for v in kept[col]]
    return kept


def _fill(onset: float, duration: float, length: float) -> tuple[float, float]:
    """Blank onset: the start of the file; blank duration: up to its end."""
    onset = 0.0 if math.isnan(onset) else onset
    return onset, (length - onset if math.isnan(duration) else duration)


def _past_end(what: str, path, onset: float, duration: float, length: float, tolerance: float) -> str | None:
    if onset + duration > length + tolerance:
        return (f"{path}: {what} window {onset:.3f}-{onset + duration:.3f} s ends past the end of "
                f"the recording ({length:.3f} s)")
    return None


def check_eeg_windows(path: str, windows: list[tuple[int, float, float]],
                      p: EEGParams) -> tuple[dict | None, list[tuple]]:
    """Check EEG trial windows (index, onset, duration) of one file: readable, its channels
    brought to eeg.* (bad ones with positions to be interpolated from), inside the recording,
    finite, no flat channel but the bad ones. Returns the file's channels ({"channels",
    "interpolated", "dropped"}; None if unreadable) and, per window, (index, onset, duration,
    problem kind or None, message)."""
    try:
        raw = open_eeg(path, p.read_kwargs)
        dropped = select_channels(raw, path, p.channels, p.drop_channels, p.montage)
    except UnplacedBadChannels:
        raise  # whatever data.on_error says: eeg.montage or eeg.drop_channels mends it, not dropping trials
    except PipelineError as exc:
        kind = "missing_file" if not Path(path).is_file() else \
            "channels" if "eeg.channels" in str(exc) or "eeg.drop_channels" in str(exc) else "unreadable"
        return None, [(i, onset, duration, kind, str(exc)) for i, onset, duration in windows]
    sfreq, length = raw.info["sfreq"], eeg_seconds(raw)
    good = [k for k, name in enumerate(raw.ch_names) if name not in raw.info["bads"]]  # the bad ones are interpolated
    out = []
    for i, onset, duration in windows:
        onset, duration = _fill(onset, duration, length)
        problem = _past_end("EEG", path, onset, duration, length, 0.5 / sfreq)
        if problem:
            out.append((i, onset, duration, "window_past_end", problem))
            continue
        start = int(round(onset * sfreq))
        x = raw.get_data(picks=good, start=start, stop=max(start + 1, int(round((onset + duration) * sfreq))))
        span = f"{onset:.3f}-{onset + duration:.3f} s"
        if not np.isfinite(x).all():
            out.append((i, onset, duration, "nan_eeg", f"{path}: EEG window {span} contains NaN or infinite values"))
            continue
        flat = [raw.ch_names[good[c]] for c in np.flatnonzero(np.ptp(x, axis=1) == 0)]
        if flat:
            out.append((i, onset, duration, "flat_eeg",
                        f"{path}: flat EEG in window {span}: channel(s) {', '.join(flat[:6])}"
                        f"{' ...' if len(flat) > 6 else ''} never change (leave them out with eeg.channels)"))
            continue
        out.append((i, onset, duration, None, ""))
    return {"channels": list(raw.ch_names), "interpolated": list(raw.info["bads"]), "dropped": dropped}, out


def check_audio_windows(path: str, windows: list[tuple[int, float, float]]) -> tuple[None, list[tuple]]:
    """Check audio trial windows of one file: readable, inside the file, long enough for
    openSMILE, not empty or silent."""
    try:
        length = audio_seconds(path)
    except PipelineError as exc:
        kind = "missing_file" if not Path(path).is_file() else "unreadable"
        return None, [(i, onset, duration, kind, str(exc)) for i, onset, duration in windows]
    out = []
    for i, onset, duration in windows:
        onset, duration = _fill(onset, duration, length)
        problem = _past_end("audio", path, onset, duration, length, 1e-3)
        if problem:
            out.append((i, onset, duration, "window_past_end", problem))
            continue
        span = f"{onset:.3f}-{onset + duration:.3f} s"
        y = read_audio(path, onset, duration, sr=None)
        if y.size == 0 or not np.any(y):
            out.append((i, onset, duration, "empty_audio",
                        f"{path}: audio window {span} is empty ({'no samples' if y.size == 0 else 'every sample is 0'})"))
            continue
        if duration < MIN_AUDIO_SECONDS:
            out.append((i, onset, duration, "short_audio",
                        f"{path}: audio window {span} is {duration * 1000:.0f} ms, shorter than openSMILE's "
                        f"{MIN_AUDIO_SECONDS * 1000:.0f} ms analysis window (the acoustic view has no features for it)"))
            continue
        out.append((i, onset, duration, None, ""))
    return None, out


def _tasks(trials: pd.DataFrame, workers: int):
    """(modality, path, windows) work items, subject after subject; a file's windows are split
    over the workers, except EAV .mat files, which are read whole."""
    for _, rows in trials.groupby("subject", sort=False).groups.items():
        for modality in ("eeg", "audio"):
            part = trials.loc[rows]
            part = part[part[f"{modality}_path"] != ""]
            for path, idx in part.groupby(f"{modality}_path", sort=False).groups.items():
                windows = [(i, trials.at[i, f"{modality}_onset"], trials.at[i, f"{modality}_duration"]) for i in idx]
                path = str(Path(path).resolve())  # workers may run in another working folder
                n_chunks = 1 if path.lower().endswith(".mat") else min(workers, len(windows))
                for chunk in np.array_split(np.arange(len(windows)), n_chunks):
                    yield modality, path, [windows[k] for k in chunk]


def _run_task(modality: str, path: str, windows, eeg: EEGParams):
    if modality == "eeg":
        return check_eeg_windows(path, windows, eeg)
    return check_audio_windows(path, windows)


def check_trials(table: pd.DataFrame, p: Params, bad: BadInput,
                 labelled: bool = True) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The trials of `table` that pass every check, with blank onsets/durations filled in, and
    per EEG recording the channels interpolated and dropped ({path: {"interpolated", "dropped"}}).
    `labelled=False` (predict's new recordings): a blank label is an unlabelled trial, not bad input."""
    trials = _row_checks(table.reset_index(drop=True), p.data.classes, p.data.task_classes, bad, labelled)
    workers = joblib.effective_n_jobs(p.compute.n_jobs)
    tasks = list(_tasks(trials, workers))
    results = stream(_run_task, [(*task, p.eeg) for task in tasks], p.compute, "ingest", "file part")
    reference: tuple[str, list[str]] | None = None  # the first file's EEG channels
    dropped: set[int] = set()
    repairs: dict[str, dict] = {}
    with contextlib.closing(results):  # closes the progress bar when a bad trial stops ingest
        for (modality, path, _), (info, outcomes) in zip(tasks, results):
            mismatch = None
            if info is not None:
                repairs[portable(Path(path))] = {k: info[k] for k in ("interpolated", "dropped")}
            channels = info["channels"] if info else None
            if channels is not None and p.eeg.channels is None:
                if reference is None:
                    reference = (path, channels)
                elif channels != reference[1]:
                    mismatch = (f"{path}: EEG channels ({len(channels)}: {', '.join(channels[:4])}, ...) differ "
                                f"from {reference[0]}'s ({len(reference[1])}: {', '.join(reference[1][:4])}, ...); "
                                "choose a common subset with eeg.channels")
            for i, onset, duration, kind, message in outcomes:
                trials.at[i, f"{modality}_onset"], trials.at[i, f"{modality}_duration"] = onset, duration
                if mismatch and kind is None:
                    kind, message = "channels", mismatch
                if kind is not None and i not in dropped:
                    dropped.add(i)
                    bad(trials.at[i, "where"], kind, message, trials.at[i, "subject"], trials.at[i, "label"], i)
    return trials.drop(index=sorted(dropped)), repairs


def ingest(params: Params) -> tuple[pd.DataFrame, list[str], dict[str, list[str]], dict]:
    """Run the configured source and check its trials.

    Returns the manifest (one row per good trial; the secondary tasks' columns after COLUMNS),
    the class list, each secondary task's classes and the ingest report.
    """

    bad = BadInput(params.data.on_error)
    table, extras = SOURCES[params.data.source]().trials(params, bad)
    _check_task_columns(table, params)
    subjects_in = sorted(set(table["subject"]) | {d["subject"] for d in bad.dropped if d["subject"]})
    trials, repairs = check_trials(table, params, bad)
    if trials.empty:
        raise PipelineError(f"ingest: every trial was dropped ({len(bad.dropped)} problems; the first: "
                            f"{bad.dropped[0]['where']}: {bad.dropped[0]['reason']})" if bad.dropped
                            else "ingest: the source has no trials")
    classes = list(params.data.classes) if params.data.classes else sorted(trials["label"].unique())
    if len(set(trials["label"])) < 2:
        raise PipelineError(f"ingest: only one class left ({trials['label'].iloc[0]}); at least 2 are needed")
    tasks = task_classes(trials, params)
    if params.audit.permute_labels:  # the null audit of the whole run: every label column, within subjects
        order = permuted_within_subjects(trials["subject"].to_numpy(), np.random.default_rng(params.audit.seed))
        columns = ["label", *tasks]
        trials[columns] = trials[columns].to_numpy()[order]
    kept_subjects = sorted(trials["subject"].unique())
    dropped = sorted(bad.dropped, key=lambda d: d["order"])
    report = {
        "source": params.data.source,
        "root": params.data.root,
        "on_error": params.data.on_error,
        "trials_in": len(table),  # the rows the source produced
        "trials_kept": len(trials),
        "trials_dropped": len(table) - len(trials),
        "problems": len(dropped),
        "problems_before_rows": sum(d["order"] < 0 for d in dropped),  # found by the source (e.g. EAV) itself
        "subjects_in": len(subjects_in),
        "subjects_kept": len(kept_subjects),
        "subjects_dropped": sorted(set(subjects_in) - set(kept_subjects)),
        "dropped_by_kind": dict(Counter(d["kind"] for d in dropped)),
        "modalities": modalities_of(trials),
        "classes": classes,
        "labels_permuted": params.audit.permute_labels,
        **({"task_classes": tasks} if tasks else {}),
        "dropped": [{k: v for k, v in d.items() if k != "order"} for d in dropped],
        # per EEG recording: bad channels interpolated (eeg.montage or the file's positions), eeg.drop_channels dropped
        "channels": repairs,
        **extras,
    }
    manifest = trials[[*COLUMNS, *tasks]].reset_index(drop=True)
    return manifest, classes, tasks, report


def _check_task_columns(table: pd.DataFrame, params: Params) -> None:
    """Every secondary task of `data.tasks` is a label column of the source's trials."""
    source = params.data.source
    for task in params.data.secondary_tasks:
        if task in COLUMNS or task == "where":
            raise PipelineError(f"params: data.tasks = {list(params.data.tasks)} is not allowed; {task!r} is a "
                                f"manifest column of its own ({', '.join(COLUMNS)}), not a label column")
        if task not in table.columns:  # the manifest reader names its file; this is another source
            raise PipelineError(f"params: data.tasks names {task!r}, a column data.source {source!r} does not "
                                f"give (its columns: {', '.join(c for c in table.columns if c != 'where')})")


def task_classes(trials: pd.DataFrame, params: Params) -> dict[str, list[str]]:
    """Each secondary task's classes: `data.task_classes.<task>` in its order, or the sorted set of
    the task's non-blank values among the kept trials. A task needs 2 or more classes present."""
    out = {}
    for task in params.data.secondary_tasks:
        present = sorted(set(trials[task]) - {""})
        if len(present) < 2:
            raise PipelineError(f"ingest: task {task!r} of data.tasks has {len(present)} class(es) among the "
                                f"kept trials ({', '.join(map(repr, present)) or 'every value blank'}); "
                                "at least 2 are needed")
        out[task] = list(params.data.task_classes.get(task) or present)
    return out
