"""Speech view: fixed-shape log-mel spectrograms with librosa."""
from __future__ import annotations

import librosa
import numpy as np
import pandas as pd

from pipeline import io
from pipeline.data.readers import read_audio
from pipeline.dataset import NO_AUDIO, load_manifest, skip_note
from pipeline.parallel import LOCAL, stream_files
from pipeline.params import ComputeParams, MelParams, Params


def fit_length(y: np.ndarray, n: int, crop: str = "center") -> np.ndarray:
    """Crop (`crop`: center, start or end) or zero-pad (both sides) a 1-D clip to `n` samples."""
    if y.size >= n:
        start = {"center": (y.size - n) // 2, "start": 0, "end": y.size - n}[crop]
        return y[start:start + n]
    before = (n - y.size) // 2
    return np.pad(y, (before, n - y.size - before))


def log_mel(clips: np.ndarray, p: MelParams) -> np.ndarray:
    """Log-mel power (dB re 1.0, so loudness is kept) of stacked clips.

    clips: (n, clip_seconds * sr) -> (n, 1, n_mels, n_frames), float32. librosa gets the
    clips as one array, which is several times faster than a loop over clips.
    """
    hop = clips.shape[-1] // p.n_frames
    mel = librosa.feature.melspectrogram(y=clips, sr=p.sr, n_fft=p.n_fft, hop_length=hop,
                                         n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    return db[:, None, :, :p.n_frames].astype(np.float32)


def file_mels(path: str, onsets, durations, p: MelParams) -> tuple[np.ndarray, list[str]]:
    """Log-mel of each (onset, duration) window of one audio file, and per clip whether it
    was 'padded', 'cropped' or 'exact' (within one sample) to fit `p.clip_seconds`."""
    n = int(round(p.clip_seconds * p.sr))
    clips = [read_audio(path, onset, duration, p.sr) for onset, duration in zip(onsets, durations)]
    fits = ["exact" if abs(y.size - n) <= 1 else ("padded" if y.size < n else "cropped") for y in clips]
    return log_mel(np.stack([fit_length(y, n, p.crop) for y in clips]), p), fits


def mel_features(trials: pd.DataFrame, p: MelParams, compute: ComputeParams = LOCAL) -> tuple[np.ndarray, dict[str, int]]:
    """Log-mel of every trial's audio window, in manifest order: (n_trials, 1, n_mels, n_frames),
    and how many clips were padded, cropped or already the right length.

    Audio files are processed as `compute` says (pipeline.parallel) and streamed into the output.
    """
    out = np.empty((len(trials), 1, p.n_mels, p.n_frames), dtype=np.float32)
    counts = {"padded": 0, "cropped": 0, "exact": 0}
    for _, rows, (mels, fits) in stream_files(trials, "audio", file_mels, p, compute, "mel features"):
        out[rows] = mels
        for fit in fits:
            counts[fit] += 1
    return out, counts


def features(trials: pd.DataFrame, params: Params, eeg: np.ndarray | None = None) -> np.ndarray:
    """The view's feature function (the stage's, through `mel_features`, and predict's): log-mel
    of every trial's audio window, (n_trials, 1, n_mels, n_frames); `eeg` is not read."""
    return mel_features(trials, params.mel, params.compute)[0]


def compute(params: Params) -> np.ndarray:
    """The features_mel stage's array, (n_trials, 1, n_mels, n_frames), and its report of
    padded and cropped clips. Data without audio gets an empty array and a 'skipped' report."""
    if skip_note("features", "mel"):
        x, counts = np.zeros(0, np.float32), {"skipped": NO_AUDIO}
    else:
        p = params.mel
        x, counts = mel_features(load_manifest(), p, params.compute)
        print(f"features mel: clips of {p.clip_seconds} s: {counts['exact']} exact, "
              f"{counts['padded']} zero-padded, {counts['cropped']} cropped ({p.crop})")
    io.write_json(io.MEL_REPORT, counts)
    return x
