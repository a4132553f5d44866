"""The one reader path for every recording, generated or brought by a user.

EEG goes through MNE's readers (chosen by file extension), audio through soundfile.
"""
from __future__ import annotations

from pathlib import Path

import librosa
import mne
import numpy as np
import soundfile as sf

from pipeline.errors import PipelineError


def read_eeg(path: str | Path, preload: bool = True) -> mne.io.BaseRaw:
    """An MNE Raw of the EEG channels of `path` (any format `mne.io.read_raw` knows)."""
    try:
        raw = mne.io.read_raw(path, preload=preload, verbose="error")
    except Exception as exc:  # MNE raises many types for unreadable files
        raise PipelineError(f"{path}: cannot read EEG ({type(exc).__name__}: {exc})") from None
    picks = mne.pick_types(raw.info, eeg=True, exclude=[])
    if len(picks) == 0:
        raise PipelineError(f"{path}: no EEG channels")
    return raw.pick(picks)


def eeg_seconds(path: str | Path) -> float:
    """Length of an EEG recording in seconds, read from its header only."""
    raw = read_eeg(path, preload=False)
    return raw.n_times / raw.info["sfreq"]


def audio_seconds(path: str | Path) -> float:
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read audio ({exc})") from None
    return info.frames / info.samplerate


def read_audio(path: str | Path, onset: float, duration: float, sr: int) -> np.ndarray:
    """Mono float32 audio of the window [onset, onset + duration) s, resampled to `sr`."""
    try:
        with sf.SoundFile(str(path)) as fh:
            native = fh.samplerate
            fh.seek(int(round(onset * native)))
            y = fh.read(int(round(duration * native)), dtype="float32", always_2d=True)
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read audio ({exc})") from None
    y = y.mean(axis=1)
    return librosa.resample(y, orig_sr=native, target_sr=sr) if native != sr else y
