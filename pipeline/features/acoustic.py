"""Acoustic view: openSMILE functionals of each trial's audio window (eGeMAPSv02, ComParE_2016).

These are the standard features of affective computing: reviewers of a speech-emotion claim ask
for them first. Each clip gets one row: the chosen sets' functionals side by side, in the order
of `acoustic.feature_sets` (AcousticParams.columns says which columns are which set).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd

from pipeline.data.readers import MIN_AUDIO_SECONDS, read_audio
from pipeline.dataset import load_manifest, skip_note
from pipeline.errors import PipelineError
from pipeline.parallel import LOCAL, stream_files
from pipeline.params import ACOUSTIC_FEATURE_SETS, AcousticParams, ComputeParams, Params


@functools.lru_cache(maxsize=4)
def smiles(feature_sets: tuple[str, ...]) -> list:
    """One openSMILE extractor of functionals per set, made once per process (imported here:
    opensmile loads pandas and pyarrow, which only this stage needs)."""
    import opensmile

    return [opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, name),
                            feature_level=opensmile.FeatureLevel.Functionals) for name in feature_sets]


def clip_functionals(y: np.ndarray, sr: int, extractors: list) -> np.ndarray:
    """(samples,) mono clip -> (features,) float32: every extractor's functionals, concatenated.
    A clip too short for openSMILE's analysis windows comes back as NaN (openSMILE's own answer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Segment too short, filling with NaN": checked below
        return np.concatenate([s.process_signal(y, sr).to_numpy(np.float32)[0] for s in extractors])


def file_functionals(path: str, onsets, durations, p: AcousticParams) -> np.ndarray:
    """Functionals of each (onset, duration) window of one audio file: (n_windows, features).

    A window openSMILE cannot describe (non-finite output) is a PipelineError naming the file
    and the window: the features never carry NaN into training.
    """
    extractors = smiles(p.feature_sets)
    rows = []
    for onset, duration in zip(onsets, durations):
        row = clip_functionals(read_audio(path, onset, duration, p.sr), p.sr, extractors)
        if not np.isfinite(row).all():
            raise PipelineError(f"{path}: audio window {onset:.3f}-{onset + duration:.3f} s: openSMILE gives no "
                                f"functionals for it ({int((~np.isfinite(row)).sum())} of {row.size} are NaN or "
                                f"infinite; a clip shorter than its {MIN_AUDIO_SECONDS * 1000:.0f} ms analysis "
                                "window gives nothing)")
        rows.append(row)
    return np.stack(rows)


def acoustic_features(trials: pd.DataFrame, p: AcousticParams, compute: ComputeParams = LOCAL) -> np.ndarray:
    """openSMILE functionals of every trial's audio window, in manifest order: (n_trials, features),
    float32. Audio files are processed as `compute` says (pipeline.parallel)."""
    n_features = sum(ACOUSTIC_FEATURE_SETS[name] for name in p.feature_sets)
    out = np.empty((len(trials), n_features), dtype=np.float32)
    for _, rows, functionals in stream_files(trials, "audio", file_functionals, p, compute, "acoustic features"):
        out[rows] = functionals
    return out


def features(trials: pd.DataFrame, params: Params, eeg: np.ndarray | None = None) -> np.ndarray:
    """The view's feature function (the stage's and predict's): openSMILE functionals of every
    trial's audio window, (n_trials, features); `eeg` is not read."""
    return acoustic_features(trials, params.acoustic, params.compute)


def compute(params: Params) -> np.ndarray:
    """The features_acoustic stage's array, (n_trials, features); data without audio gets an
    empty array (the view is skipped, as mel is)."""
    if skip_note("features", "acoustic"):
        return np.zeros(0, np.float32)
    p = params.acoustic
    x = features(load_manifest(), params)
    print(f"features acoustic: {' + '.join(f'{n} ({ACOUSTIC_FEATURE_SETS[n]})' for n in p.feature_sets)} "
          f"openSMILE functionals per clip")
    return x
