"""EEG view: MNE preprocessing of each continuous recording, then fixed-length epochs."""
from __future__ import annotations

import functools
import time
from collections import Counter

import mne
import numpy as np
import pandas as pd

from pipeline import io
from pipeline.data.readers import eeg_reading, open_eeg, read_eeg
from pipeline.dataset import load_manifest
from pipeline.errors import PipelineError, warn
from pipeline.features.artifacts import fit_ica, remove_components, removed_topographies
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


def cut_epochs(raw: mne.io.BaseRaw, onsets, p: EEGParams, durations=None) -> np.ndarray:
    """The centre `p.epoch_seconds` of each trial window [onset, onset + duration) s (no
    durations: windows of exactly `p.epoch_seconds`), shape (n, n_channels, n_times), in uV.
    Windows may come in any order and may repeat (two trials sharing one EEG window)."""
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
    return epochs.get_data(units="uV").astype(np.float32)[trial_of]


def recording_epochs(path: str, onsets, durations, p: EEGParams,
                     seen: list[dict] | None = None) -> tuple[np.ndarray, list[str], list[str], dict | None]:
    """Read, clean (eeg.artifacts), preprocess and epoch one recording: (epochs, channel names,
    warnings, what cleaning found: {"components", "topographies", "info", "seconds"} or None)."""
    raw = read_eeg(path, **eeg_reading(p))
    notes = adapt_filters(p, raw.info["sfreq"], path)[2] if seen is None else []
    cleaning = None
    if p.artifacts.ica:
        start = time.perf_counter()
        ica, components = fit_ica(raw, p.artifacts, path)
        cleaning = {"components": components, "topographies": removed_topographies(ica, components),
                    "info": raw.info, "seconds": time.perf_counter() - start}
    preprocess(raw, p, path, seen)
    if cleaning is not None:
        remove_components(raw, ica, cleaning["components"])
    return cut_epochs(raw, onsets, p, durations), list(raw.ch_names), notes, cleaning


def eeg_features(trials: pd.DataFrame, p: EEGParams, compute: ComputeParams = LOCAL,
                 seen: list[dict] | None = None) -> tuple[np.ndarray, list[str], dict[str, dict]]:
    """Preprocessed epochs for every trial, in manifest order: (n_trials, n_channels, n_times),
    the channel names and per recording what cleaning found (`recording_epochs`; {} without it).

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
            cleaned[path] = cleaning
        if channels is None:
            channels = names
        elif names != channels:
            raise PipelineError(f"{path}: EEG channels {names} differ from the first recording's {channels}")
        if out is None:
            out = np.empty((len(trials), *data.shape[1:]), dtype=np.float32)
        out[rows] = data
    return out, channels, cleaned


def preprocessing_record(paths, p: EEGParams) -> dict:
    """What the EEG of recordings `paths` went through (a model stores it; predict checks new
    recordings against it): their sampling rates, each distinct `applied_filters`, l_freq, the
    reference, the rate they were resampled to and the artifact cleaning (eeg.artifacts; None
    without ICA)."""
    rates = sorted({float(open_eeg(path, p.read_kwargs).info["sfreq"]) for path in dict.fromkeys(paths)})
    filters = []
    for rate in rates:
        if (setting := applied_filters(p, rate)) not in filters:
            filters.append(setting)
    return {"sfreq": rates, "filters": filters, "l_freq": p.l_freq, "reference": p.reference, "resampled_to": p.sfreq,
            "artifacts": p.artifacts.model_dump(mode="json") if p.artifacts.ica else None}


def artifact_report(cleaned: dict[str, dict], p: EEGParams) -> dict:
    """reports/artifacts.json: the settings, per recording each component's ICLabel class and
    probability and whether it was removed, and the count of removed components per class."""
    removed = Counter(c["removed_as"] for r in cleaned.values() for c in r["components"] if c["removed"])
    return {"ica": p.artifacts.ica, **({"settings": p.artifacts.model_dump(mode="json"),
                                        "removed_by_label": dict(sorted(removed.items())),
                                        "recordings": {path: r["components"] for path, r in cleaned.items()}}
                                       if p.artifacts.ica else {})}


def compute(params: Params) -> np.ndarray:
    """The features_eeg stage's array: every ingested trial, (n_trials, n_channels, n_times); and
    what artifact cleaning removed (reports/artifacts.json, the removed components' topographies,
    and ICA's seconds per recording in reports/eeg_cost.json, null without it: no stage output)."""
    from pipeline.plots import plot_removed_components

    x, _, cleaned = eeg_features(load_manifest(), params.eeg, params.compute)
    report = artifact_report(cleaned, params.eeg)
    io.write_json(io.ARTIFACTS_REPORT, report)
    plot_removed_components(io.FIGURES / "removed_components.png", cleaned)
    seconds = [r["seconds"] for r in cleaned.values()]
    io.write_json(io.EEG_COST, {"ica_s_per_recording": float(np.mean(seconds)) if seconds else None})
    if cleaned:
        print(f"features eeg: ICA removed {sum(report['removed_by_label'].values())} component(s) of "
              f"{len(cleaned)} recording(s): " + (", ".join(f"{n} {label}" for label, n in
                                                       report["removed_by_label"].items()) or "none"))
    return x
