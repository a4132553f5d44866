"""EEG view: MNE preprocessing of each continuous recording, then fixed-length epochs."""
from __future__ import annotations

import mne
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.readers import read_eeg
from pipeline.errors import PipelineError
from pipeline.params import EEGParams


def preprocess(raw: mne.io.BaseRaw, p: EEGParams) -> mne.io.BaseRaw:
    """Notch, band-pass, reference and resample one continuous recording (in place).

    Filtering runs on the whole recording before epoching, so trial edges carry no filter
    transients, and before resampling, so nothing aliases.
    """
    if p.notch is not None:
        raw.notch_filter(p.notch, verbose="error")
    raw.filter(p.l_freq, p.h_freq, verbose="error")
    if p.reference == "average":
        raw.set_eeg_reference("average", projection=False, verbose="error")
    raw.resample(p.sfreq, verbose="error")
    return raw


def cut_epochs(raw: mne.io.BaseRaw, onsets: np.ndarray, p: EEGParams) -> np.ndarray:
    """Epochs of `p.epoch_seconds` from each onset (s), shape (n, n_channels, n_times), in uV."""
    sfreq = raw.info["sfreq"]
    samples = raw.first_samp + np.round(np.asarray(onsets) * sfreq).astype(int)
    events = np.column_stack([samples, np.zeros_like(samples), np.ones_like(samples)])
    n_times = int(round(p.epoch_seconds * sfreq))
    epochs = mne.Epochs(raw, events, tmin=0.0, tmax=(n_times - 1) / sfreq, baseline=None,
                        preload=True, reject_by_annotation=False, event_repeated="drop",
                        verbose="error")
    if len(epochs) != len(onsets):
        raise PipelineError(f"{raw.filenames[0]}: {len(onsets) - len(epochs)} trial window(s) of "
                            f"{p.epoch_seconds} s do not fit in the recording")
    return epochs.get_data(units="uV").astype(np.float32)


def eeg_features(trials: pd.DataFrame, p: EEGParams) -> tuple[np.ndarray, list[str]]:
    """Preprocessed epochs for every trial, in manifest order: (n_trials, n_channels, n_times).

    Each recording is read and filtered once, then cut into its trials. All recordings must
    share one channel set.
    """
    out: np.ndarray | None = None
    channels: list[str] | None = None
    groups = trials.groupby("eeg_path", sort=False).groups
    for path, rows in tqdm(groups.items(), desc="eeg features", unit="recording"):
        raw = preprocess(read_eeg(path), p)
        if channels is None:
            channels = list(raw.ch_names)
        elif list(raw.ch_names) != channels:
            raise PipelineError(f"{path}: EEG channels {raw.ch_names} differ from the first "
                                f"recording's {channels}")
        data = cut_epochs(raw, trials.loc[rows, "eeg_onset"].to_numpy(), p)
        if out is None:
            out = np.empty((len(trials), *data.shape[1:]), dtype=np.float32)
        out[rows] = data
    return out, channels
