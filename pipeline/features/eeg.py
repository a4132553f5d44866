"""EEG view: MNE preprocessing of each continuous recording, then fixed-length epochs."""
from __future__ import annotations

import functools
import time
from collections import Counter

import mne
import numpy as np
import pandas as pd

from pipeline import io
from pipeline.data.readers import eeg_reading, open_eeg, positioned, read_eeg
from pipeline.dataset import load_manifest
from pipeline.errors import PipelineError, warn
from pipeline.features.artifacts import fit_ica, remove_components, removed_topographies, repair_epochs
from pipeline.parallel import LOCAL, stream_files
from pipeline.params import ComputeParams, EEGParams, Params


def adapt_filters(p: EEGParams, sfreq: float, path) -> tuple[float | None, float | None, list[str]]:
    """The notch and low-pass cut-off that fit a recording sampled at `sfreq`.

    A notch or `h_freq` at or above the recording's Nyquist frequency cannot be applied (and is
    not needed: the recording holds nothing up there); it is dropped with a warning naming the
    file. Returns (notch, h_freq, warnings).
    """
    nyquist = sfreq / 2
    notch, h_freq, notes = p.notch, p.h_freq, []
    if notch is not None and notch >= nyquist:
        notes.append(f"{path}: eeg.notch {notch:g} Hz is at or above this recording's Nyquist frequency "
                     f"({nyquist:g} Hz at {sfreq:g} Hz); no notch filter for it")
        notch = None
    if h_freq >= nyquist:
        notes.append(f"{path}: eeg.h_freq {h_freq:g} Hz is at or above this recording's Nyquist frequency "
                     f"({nyquist:g} Hz at {sfreq:g} Hz); no low-pass filter for it")
        h_freq = None
    if p.l_freq >= nyquist:
        raise PipelineError(f"{path}: eeg.l_freq {p.l_freq:g} Hz is at or above this recording's Nyquist "
                            f"frequency ({nyquist:g} Hz at {sfreq:g} Hz)")
    return notch, h_freq, notes


def applied_filters(p: EEGParams, sfreq: float) -> dict:
    """What `preprocess` does to a recording sampled at `sfreq` Hz, as a model records it:
    {"notch": Hz or None, "low_pass": Hz or None, "top": the highest frequency its EEG then
    holds (the low-pass, else the Nyquist frequency)}. A notch at or above the top is listed as
    None: it changes nothing the band holds."""
    notch, h_freq, _ = adapt_filters(p, sfreq, "")
    top = h_freq if h_freq is not None else sfreq / 2
    return {"notch": notch if notch is not None and notch < top else None, "low_pass": h_freq, "top": top}


def _describe(setting: dict) -> str:
    low_pass = f"low-passed at {setting['low_pass']:g} Hz" if setting["low_pass"] else \
        f"no low-pass: nothing above its Nyquist frequency {setting['top']:g} Hz"
    return f"{low_pass}, {'a ' + format(setting['notch'], 'g') + ' Hz notch' if setting['notch'] else 'no notch'}"


def matched_filters(p: EEGParams, sfreq: float, seen: list[dict] | None, path) -> tuple[float | None, float | None]:
    """The (notch, low-pass) to apply to a recording at `sfreq` Hz: `adapt_filters`' own, or,
    with `seen` (the `applied_filters` of the recordings a model was trained on), the ones that
    bring it to the widest band the model saw within its reach: a recording that holds more
    (a higher sampling rate) is low-passed at that band's top. One that holds less than every
    band the model saw cannot be brought to it: PipelineError naming both."""
    own = applied_filters(p, sfreq)
    if seen is None or own in seen:
        return adapt_filters(p, sfreq, path)[:2]
    reachable = [s for s in seen if s["top"] <= own["top"]]
    if not reachable:
        widest = max(seen, key=lambda s: s["top"])
        raise PipelineError(f"{path}: sampled at {sfreq:g} Hz it holds EEG up to {own['top']:g} Hz ({_describe(own)}); "
                            f"the model saw EEG up to {widest['top']:g} Hz ({_describe(widest)}): it cannot be "
                            "brought to that; record at a higher rate, or train a model on such recordings")
    target = max(reachable, key=lambda s: s["top"])
    if target["top"] >= own["top"]:  # the same band (only the notch differs): no low-pass below its own
        return target["notch"], own["low_pass"]
    return target["notch"], target["top"]


def preprocess(raw: mne.io.BaseRaw, p: EEGParams, path="recording", seen: list[dict] | None = None) -> mne.io.BaseRaw:
    """Notch, band-pass, reference and resample one continuous recording (in place).

    Filtering runs on the whole recording before epoching, so trial edges carry no filter
    transients, and before resampling, so nothing aliases. Filters that do not fit the
    recording's sampling rate are adapted (see `adapt_filters`), or brought to what a model saw
    (`seen`: see `matched_filters`).
    """
    notch, h_freq = matched_filters(p, raw.info["sfreq"], seen, path)
    if notch is not None:
        raw.notch_filter(notch, verbose="error")
    raw.filter(p.l_freq, h_freq, verbose="error")
    if p.reference == "average":
        raw.set_eeg_reference("average", projection=False, verbose="error")
    raw.resample(p.sfreq, verbose="error")
    return raw


def trial_windows(raw: mne.io.BaseRaw, onsets, p: EEGParams, durations=None) -> tuple[mne.Epochs, np.ndarray]:
    """The distinct windows of `p.epoch_seconds` at the centre of each trial window [onset,
    onset + duration) s (no durations: windows of exactly `p.epoch_seconds`) as epochs, and for
    each trial the index of its window (trials may come in any order and two may share one)."""
    sfreq = raw.info["sfreq"]
    starts = np.asarray(onsets, dtype=float)
    if durations is not None:
        starts = starts + (np.asarray(durations) - p.epoch_seconds) / 2
    samples, trial_of = np.unique(raw.first_samp + np.round(starts * sfreq).astype(int), return_inverse=True)
    events = np.column_stack([samples, np.zeros_like(samples), np.ones_like(samples)])
    n_times = int(round(p.epoch_seconds * sfreq))
    epochs = mne.Epochs(raw, events, tmin=0.0, tmax=(n_times - 1) / sfreq, baseline=None,
                        preload=True, reject_by_annotation=False, verbose="error")
    if len(epochs) != len(samples):
        raise PipelineError(f"{raw.filenames[0]}: {len(samples) - len(epochs)} trial window(s) of "
                            f"{p.epoch_seconds} s do not fit in the recording")
    return epochs, trial_of


def cut_epochs(raw: mne.io.BaseRaw, onsets, p: EEGParams, durations=None) -> np.ndarray:
    """Each trial's window (`trial_windows`), shape (n, n_channels, n_times), in uV."""
    epochs, trial_of = trial_windows(raw, onsets, p, durations)
    return epochs.get_data(units="uV").astype(np.float32)[trial_of]


def recording_epochs(path: str, onsets, durations, p: EEGParams,
                     seen: list[dict] | None = None) -> tuple[np.ndarray, list[str], list[str], dict | None]:
    """Read, clean (eeg.artifacts), preprocess and epoch one recording: (epochs, channel names,
    warnings, what cleaning found or None without it: {"components" (ICA's, None without it),
    "topographies", "info", "ica_seconds", "trials" (autoreject's verdict on each trial, None
    without it), "autoreject_seconds"}). A trial autoreject drops keeps its unrepaired epoch."""
    raw = read_eeg(path, **eeg_reading(p))
    notes = adapt_filters(p, raw.info["sfreq"], path)[2] if seen is None else []
    cleaning = {"components": None, "topographies": None, "info": raw.info, "ica_seconds": None,
                "trials": None, "autoreject_seconds": None} if p.artifacts.enabled else None
    if p.artifacts.ica:
        start = time.perf_counter()
        ica, components = fit_ica(raw, p.artifacts, path)
        cleaning.update(components=components, topographies=removed_topographies(ica, components),
                        ica_seconds=time.perf_counter() - start)
    preprocess(raw, p, path, seen)
    if p.artifacts.ica:
        remove_components(raw, ica, cleaning["components"])
    epochs, trial_of = trial_windows(raw, onsets, p, durations)
    if not p.artifacts.autoreject:
        return epochs.get_data(units="uV").astype(np.float32)[trial_of], list(raw.ch_names), notes, cleaning
    start = time.perf_counter()
    data, windows = repair_epochs(epochs, p.artifacts, path)
    cleaning.update(trials=[windows[w] for w in trial_of], autoreject_seconds=time.perf_counter() - start)
    return data[trial_of], list(raw.ch_names), notes, cleaning


def eeg_features(trials: pd.DataFrame, p: EEGParams, compute: ComputeParams = LOCAL,
                 seen: list[dict] | None = None) -> tuple[np.ndarray, list[str], dict[str, dict]]:
    """Preprocessed epochs for every trial, in table order: (n_trials, n_channels, n_times),
    the channel names and per recording what cleaning found (`recording_epochs`, with "rows":
    its trials' positions in the table; {} without cleaning; `dropped_trials` reads it).

    Recordings are processed as `compute` says (pipeline.parallel) and streamed into the output, so memory
    holds a few recordings, not the dataset. Each recording is read and filtered once, then cut
    into its trials. All recordings must share one channel set (ingest checks it). With `seen`
    (a model's record of its recordings' filters) each is brought to what the model saw.
    """
    short = trials["eeg_duration"] < p.epoch_seconds - 1e-6
    if short.any():
        raise PipelineError(f"params: eeg.epoch_seconds = {p.epoch_seconds} is not allowed; allowed: at most "
                            f"the shortest trial window ({trials['eeg_duration'].min():g} s, in "
                            f"{trials.loc[short.idxmax(), 'eeg_path']})")
    out: np.ndarray | None = None
    channels: list[str] | None = None
    cleaned: dict[str, dict] = {}
    epochs_of = recording_epochs if seen is None else functools.partial(recording_epochs, seen=seen)
    for path, rows, (data, names, notes, cleaning) in stream_files(trials, "eeg", epochs_of, p, compute,
                                                                   "eeg features", "recording"):
        for note in notes:
            warn(note)
        if cleaning is not None:
            cleaned[path] = {**cleaning, "rows": rows}
        if channels is None:
            channels = names
        elif names != channels:
            raise PipelineError(f"{path}: EEG channels {names} differ from the first recording's {channels}")
        if out is None:
            out = np.empty((len(trials), *data.shape[1:]), dtype=np.float32)
        out[rows] = data
    return out, channels, cleaned


def dropped_trials(n_trials: int, cleaned: dict[str, dict]) -> np.ndarray:
    """Which of the `n_trials` trials of `eeg_features`' table autoreject dropped, (n_trials,) bool."""
    dropped = np.zeros(n_trials, bool)
    for r in cleaned.values():
        if r["trials"] is not None:
            dropped[r["rows"]] = [t["status"] == "dropped" for t in r["trials"]]
    return dropped


def preprocessing_record(paths, p: EEGParams) -> dict:
    """What the EEG of recordings `paths` went through (a model stores it; predict checks new
    recordings against it): their sampling rates, each distinct `applied_filters`, l_freq, the
    reference, the rate they were resampled to and the artifact cleaning (eeg.artifacts; None
    without any)."""
    rates = sorted({float(open_eeg(path, p.read_kwargs).info["sfreq"]) for path in dict.fromkeys(paths)})
    filters = []
    for rate in rates:
        if (setting := applied_filters(p, rate)) not in filters:
            filters.append(setting)
    return {"sfreq": rates, "filters": filters, "l_freq": p.l_freq, "reference": p.reference, "resampled_to": p.sfreq,
            "artifacts": p.artifacts.model_dump(mode="json") if p.artifacts.enabled else None}


TRIAL_STATUSES = ("kept", "repaired", "dropped")


def artifact_report(trials: pd.DataFrame, cleaned: dict[str, dict], p: EEGParams) -> dict:
    """reports/artifacts.json: the settings; with ICA, per recording each component's ICLabel
    class and probability and whether it was removed, and the removed components per class; with
    autoreject, per recording each trial's onset, label, status (kept, repaired, dropped) and
    channels (`repair_epochs`), and the trials per status."""
    a = p.artifacts
    report = {"ica": a.ica, "autoreject": a.autoreject}
    if a.enabled:
        report["settings"] = a.model_dump(mode="json")
    if a.ica:
        removed = Counter(c["removed_as"] for r in cleaned.values() for c in r["components"] if c["removed"])
        report.update(removed_by_label=dict(sorted(removed.items())),
                      recordings={path: r["components"] for path, r in cleaned.items()})
    if a.autoreject:
        statuses = Counter(t["status"] for r in cleaned.values() for t in r["trials"])
        report.update(trials_by_status={s: statuses.get(s, 0) for s in TRIAL_STATUSES},
                      trials={path: [{"onset": float(trials["eeg_onset"].iat[row]), "label": trials["label"].iat[row], **t}
                                     for row, t in zip(r["rows"], r["trials"])] for path, r in cleaned.items()})
    return report


def cleaning_said(report: dict) -> str:
    """What cleaning did, in a clause (the stage's and predict's output)."""
    said = []
    if report["ica"]:
        said.append(f"ICA removed {sum(report['removed_by_label'].values())} component(s) of "
                    f"{len(report['recordings'])} recording(s) ("
                    + (", ".join(f"{n} {label}" for label, n in report["removed_by_label"].items()) or "none") + ")")
    if report["autoreject"]:
        n = report["trials_by_status"]
        said.append(f"autoreject repaired {n['repaired']} and dropped {n['dropped']} of {sum(n.values())} trial(s)")
    return "; ".join(said)


def channel_layout(path: str, p: EEGParams) -> dict:
    """The EEG view's channels as `read_eeg` gives them for recording `path` under eeg.*: their
    names in order and each one's head position (metres, MNE's head frame; None without one),
    from the file, electrodes.tsv or eeg.montage. The explain stage draws its topomaps from it."""
    raw = read_eeg(path, preload=False, **eeg_reading(p))
    placed = positioned(raw)
    xyz = raw.get_montage().get_positions()["ch_pos"] if placed else {}
    return {"channels": list(raw.ch_names),
            "positions": {ch: [float(v) for v in xyz[ch]] if ch in placed else None for ch in raw.ch_names}}


def compute(params: Params) -> np.ndarray:
    """The features_eeg stage: the epochs of every ingested trial autoreject keeps, (n_kept,
    n_channels, n_times), and the manifest of those trials (data/interim/manifest.csv: every
    other stage reads it, so a dropped trial leaves every view, as bad input leaves ingest's
    table); what artifact cleaning did (reports/artifacts.json, the removed components'
    topographies, and its seconds per recording in reports/eeg_cost.json, null without it: no
    stage output), and the channels' names and positions (data/features/eeg_channels.json)."""
    from pipeline.plots import plot_removed_components

    trials = load_manifest(io.TRIALS)
    x, channels, cleaned = eeg_features(trials, params.eeg, params.compute)
    dropped = dropped_trials(len(trials), cleaned)
    kept = trials[~dropped].reset_index(drop=True)
    emptied = [c for c in io.read_json(io.CLASSES) if c not in set(kept["label"])]
    if emptied:
        raise PipelineError(f"{io.TRIALS}: eeg.artifacts.autoreject dropped every trial of class {emptied[0]} "
                            f"({int(dropped.sum())} of {len(trials)} trials dropped); nothing is left to learn it from")
    report = artifact_report(trials, cleaned, params.eeg)
    io.write_json(io.ARTIFACTS_REPORT, report)
    plot_removed_components(io.FIGURES / "removed_components.png", cleaned)
    io.write_json(io.EEG_COST, {f"{step}_s_per_recording": float(np.mean(seconds)) if (seconds := [
        r[f"{step}_seconds"] for r in cleaned.values() if r[f"{step}_seconds"] is not None]) else None
        for step in ("ica", "autoreject")})
    io.save_csv(io.MANIFEST, kept)
    layout = channel_layout(trials["eeg_path"].iloc[0], params.eeg)
    if layout["channels"] != channels:  # ingest checks one channel set for every recording
        raise PipelineError(f"{trials['eeg_path'].iloc[0]}: channels {layout['channels']} differ from the epochs' {channels}")
    io.write_json(io.EEG_CHANNELS, layout)
    if cleaned:
        print(f"features eeg: {cleaning_said(report)}")
    return x[~dropped]
