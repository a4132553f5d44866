"""The one reader path for every recording, generated or brought by a user.

EEG goes through MNE's readers, chosen by file extension (EDF, BDF, GDF, FIF, EEGLAB .set,
BrainVision .vhdr, Neuroscan .cnt, ...), or mne-bids' `read_raw_bids` for a recording inside a
BIDS dataset, plus the EAV dataset's .mat arrays; audio goes
through soundfile (WAV, FLAC, OGG, ...) at any sample rate.
"""
from __future__ import annotations

import functools
from pathlib import Path

import librosa
import mne
import numpy as np
import scipy.io
import soundfile as sf

from pipeline.errors import PipelineError

EAV_SFREQ = 500.0  # the EAV dataset's EEG arrays are sampled at 500 Hz
EAV_ARRAYS = ("seg1", "seg")  # the EEG array's name in EAV .mat files (most use seg1)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def eav_array_shape(path: str | Path) -> tuple[str, tuple[int, int, int]]:
    """Name and shape (samples, channels, trials) of the EEG array of an EAV .mat, header only."""
    try:
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(str(path))}
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read EAV .mat ({_first_line(exc)})") from None
    for name in EAV_ARRAYS:
        if len(shapes.get(name, ())) == 3:
            return name, shapes[name]
    raise PipelineError(f"{path}: no 3-D EEG array named {' or '.join(EAV_ARRAYS)} "
                        f"(found {', '.join(shapes) or 'nothing'})")


def read_eav_mat(path: str | Path) -> mne.io.RawArray:
    """An EAV .mat (samples x channels x trials at 500 Hz, in uV) as one Raw of the trials back
    to back: trial k spans [k, k + 1) x trial length seconds. An 'EDGE boundary' annotation at
    every trial start makes MNE's filters treat each trial as its own segment."""
    name, (n_samples, n_channels, n_trials) = eav_array_shape(path)
    data = scipy.io.loadmat(str(path), variable_names=[name])[name]
    x = np.ascontiguousarray(data.transpose(1, 2, 0)).reshape(n_channels, n_trials * n_samples)
    info = mne.create_info([f"EEG{i + 1:02d}" for i in range(n_channels)], EAV_SFREQ, "eeg")
    raw = mne.io.RawArray(x * 1e-6, info, verbose="error")
    raw.set_annotations(mne.Annotations(np.arange(1, n_trials) * n_samples / EAV_SFREQ, 0.0,
                                        "EDGE boundary"))
    return raw


def bids_path(path: Path):
    """The mne-bids BIDSPath of a recording inside a BIDS dataset (a dataset_description.json in a
    folder above it), else None."""
    for parent in path.resolve().parents:
        if (parent / "dataset_description.json").is_file():
            from mne_bids import get_bids_path_from_fname

            return get_bids_path_from_fname(path.resolve()).update(root=parent)
    return None


@functools.lru_cache(maxsize=4)
def load_montage(spec: str) -> mne.channels.DigMontage:
    """eeg.montage: an MNE standard montage by name (standard_1020, biosemi64, ...) or a montage
    file MNE reads (.locs, .elc, .sfp, .bvef, ...)."""
    if spec in mne.channels.get_builtin_montages():
        return mne.channels.make_standard_montage(spec)
    if not Path(spec).is_file():
        raise PipelineError(f"params: eeg.montage = {spec!r} is not allowed; allowed: an MNE standard montage "
                            f"({', '.join(mne.channels.get_builtin_montages()[:4])}, ...) or a montage file "
                            "(there is no file at that path)")
    try:
        return mne.channels.read_custom_montage(spec)
    except Exception as exc:
        raise PipelineError(f"{spec}: cannot read the montage of eeg.montage ({_first_line(exc)})") from None


class UnplacedBadChannels(PipelineError):
    """Bad channels that cannot be interpolated (no positions): a fix of params, not of a trial."""


def positioned(raw: mne.io.BaseRaw | mne.BaseEpochs) -> set[str]:
    """The channels of `raw` (or epochs) with a position (from the file, electrodes.tsv or eeg.montage)."""
    montage = raw.get_montage()
    if montage is None:
        return set()
    return {name for name, xyz in montage.get_positions()["ch_pos"].items()
            if np.isfinite(xyz).all() and np.any(xyz != 0)}


def select_channels(raw: mne.io.BaseRaw, path, channels=None, drop_channels=(), montage: str | None = None) -> list[str]:
    """Bring `raw`'s EEG channels to what eeg.* asks, in place: `drop_channels` removed, the
    `montage` positions set (matched by name), exactly `channels` kept in that order. The bad
    channels left (channels.tsv status or the file's own `info['bads']`) must have positions, as
    `read_eeg` interpolates them. Returns the channels dropped."""
    dropped = [c for c in drop_channels if c in raw.ch_names]
    if len(raw.ch_names) - len(dropped) < 2:
        raise PipelineError(f"{path}: eeg.drop_channels leaves {len(raw.ch_names) - len(dropped)} EEG channel(s) "
                            "of this recording; at least 2 are needed")
    raw.drop_channels(dropped)
    if montage is not None:
        try:
            raw.set_montage(load_montage(montage).copy(), match_case=False, on_missing="ignore")
        except ValueError as exc:  # e.g. two channels whose names differ only in case
            raise PipelineError(f"{path}: eeg.montage {montage!r} cannot be set ({_first_line(exc)})") from None
    if channels:
        missing = [c for c in channels if c not in raw.ch_names]
        if missing:
            raise PipelineError(f"{path}: lacks eeg.channels {', '.join(missing)} "
                                f"(it has {', '.join(raw.ch_names[:8])}{', ...' if len(raw.ch_names) > 8 else ''})")
        raw.pick(list(channels)).reorder_channels(list(channels))
    bads = list(raw.info["bads"])
    placed = positioned(raw)
    unplaced = [c for c in bads if c not in placed]
    if unplaced or (bads and not placed - set(bads)):
        raise UnplacedBadChannels(
            f"{path}: bad channel(s) {', '.join(unplaced or bads)} cannot be interpolated: "
            f"{'no position' if unplaced else 'no good channel has a position'}; give positions with eeg.montage "
            "(an MNE standard montage such as standard_1020, or a montage file), or drop them from every recording "
            "with eeg.drop_channels")
    return dropped


def interpolate_bad_channels(raw: mne.io.BaseRaw) -> None:
    """Replace the bad channels of a loaded `raw` by MNE's spherical-spline interpolation from
    the good channels that have positions (others do not take part)."""
    if raw.info["bads"]:
        placed = positioned(raw)
        unplaced = [c for c in raw.ch_names if c not in placed and c not in raw.info["bads"]]
        raw.interpolate_bads(reset_bads=True, exclude=unplaced, verbose="error")


def open_eeg(path: str | Path, read_kwargs: dict | None = None) -> mne.io.BaseRaw:
    """One recording's EEG channels (picked by type) as an MNE Raw, nothing loaded yet: MNE's
    reader chosen by extension (`read_kwargs`, eeg.read_kwargs, go to it, e.g. `data_format` for
    Neuroscan .cnt), mne-bids' `read_raw_bids` inside a BIDS dataset, or an EAV .mat. Raises
    PipelineError naming the file for a missing, unreadable or channel-less file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: EEG file not found")
    try:
        if path.suffix.lower() == ".mat":
            raw = read_eav_mat(path)
        elif (bids := bids_path(path)) is not None:  # channel types, bads, positions and units from its sidecars
            from mne_bids import read_raw_bids

            raw = read_raw_bids(bids, extra_params=dict(read_kwargs or {}), verbose="error")
        else:
            raw = mne.io.read_raw(path, preload=False, verbose="error", **(read_kwargs or {}))
    except PipelineError:
        raise
    except Exception as exc:  # MNE raises many types for unreadable files
        hint = f" with eeg.read_kwargs {read_kwargs}" if read_kwargs else " (reader options: eeg.read_kwargs)"
        raise PipelineError(f"{path}: cannot read EEG{hint} ({_first_line(exc)})") from None
    picks = mne.pick_types(raw.info, eeg=True, exclude=[])
    if len(picks) == 0:
        raise PipelineError(f"{path}: no EEG channels")
    return raw.pick(picks)


def read_eeg(path: str | Path, read_kwargs: dict | None = None, channels=None, preload: bool = True, *,
             drop_channels=(), montage: str | None = None) -> mne.io.BaseRaw:
    """The EEG of one recording as eeg.* asks for it: `open_eeg`, then `select_channels`
    (`drop_channels`, `montage`, and with `channels` exactly those, in that order). With
    `preload` the data is loaded and the bad channels interpolated; without it their names stay
    in `raw.info['bads']`."""
    raw = open_eeg(path, read_kwargs)
    select_channels(raw, path, channels, drop_channels, montage)
    if preload:
        raw.load_data(verbose="error")
        interpolate_bad_channels(raw)
    return raw


def eeg_reading(p) -> dict:
    """`read_eeg`'s options from EEGParams `p` (eeg.read_kwargs, channels, drop_channels, montage)."""
    return {"read_kwargs": p.read_kwargs, "channels": p.channels, "drop_channels": p.drop_channels,
            "montage": p.montage}


def eeg_channels_of(path: str | Path, p) -> list[str]:
    """The EEG channels `read_eeg` gives for a recording under EEGParams `p`, in order."""
    return read_eeg(path, preload=False, **eeg_reading(p)).ch_names


def eeg_seconds(raw: mne.io.BaseRaw) -> float:
    """Length of a recording in seconds."""
    return raw.n_times / raw.info["sfreq"]


def audio_seconds(path: str | Path) -> float:
    """Length of an audio file in seconds, from its header."""
    if not Path(path).is_file():
        raise PipelineError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read audio ({_first_line(exc)})") from None
    return info.frames / info.samplerate


MIN_AUDIO_SECONDS = 0.06  # openSMILE's functionals are NaN for a clip shorter than one 60 ms frame


def read_audio(path: str | Path, onset: float, duration: float, sr: int | None) -> np.ndarray:
    """Mono float32 audio of the window [onset, onset + duration) s, resampled to `sr` (None:
    the file's own rate).

    Stereo (or more channels) is mixed down to mono by averaging.
    """
    try:
        with sf.SoundFile(str(path)) as fh:
            native = fh.samplerate
            fh.seek(int(round(onset * native)))
            y = fh.read(int(round(duration * native)), dtype="float32", always_2d=True)
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read audio ({_first_line(exc)})") from None
    y = y.mean(axis=1)
    return librosa.resample(y, orig_sr=native, target_sr=sr) if sr and native != sr and y.size else y
