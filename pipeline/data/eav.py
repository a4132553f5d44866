"""The EAV dataset's own layout (Lee et al., 42 subjects; EEG, audio and video in conversation).

    subjectNN/EEG/subjectNN_eeg.mat        seg1 (some files: seg): 10000 samples x 30 ch x 200 trials, 500 Hz
    subjectNN/EEG/subjectNN_eeg_label.mat  label: one-hot, 10 classes x 200 trials
    subjectNN/Audio/*.wav                  the 100 speaking trials, 20 s each; the emotion is the
                                           fifth '_'-separated field of the name (..._Speaking_Anger_...)

Class c (0-based) is emotion EMOTIONS[c // 2]; odd classes are listening, even ones speaking.
Audio file k of an emotion (in name order) is paired with speaking trial k of that emotion.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from pipeline.data.manifest import COLUMNS, BadInput, portable
from pipeline.data.readers import EAV_SFREQ, eav_array_shape
from pipeline.errors import PipelineError
from pipeline.params import Params, ParamsError

EMOTIONS = ("neutral", "sadness", "anger", "happiness", "calmness")  # EAV's class order


def _natural(path: Path) -> list:
    """Sort key that puts Trial_2 before Trial_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def read_labels(path: Path) -> np.ndarray:
    """Class index (0-9) of every trial from an EAV label .mat (one-hot, 10 x trials)."""
    try:
        label = np.asarray(scipy.io.loadmat(str(path), variable_names=["label"])["label"])
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read EAV labels ({type(exc).__name__}: {exc})") from None
    if label.ndim != 2 or label.shape[0] != 2 * len(EMOTIONS):
        raise PipelineError(f"{path}: label has shape {label.shape}; expected one-hot 10 classes x trials")
    return label.argmax(axis=0)


def audio_by_emotion(folder: Path) -> dict[str, list[Path]]:
    """The subject's speaking clips per emotion, in name order."""
    out: dict[str, list[Path]] = {e: [] for e in EMOTIONS}
    for wav in sorted(folder.glob("*.wav"), key=_natural):
        fields = wav.stem.split("_")
        emotion = fields[4].lower() if len(fields) > 4 else ""
        if emotion in out:
            out[emotion].append(wav)
    return out


class EAVSource:
    """Trials of `data.eav.task` from every subjectNN folder under `data.root`, cut into
    `data.eav.segment_seconds` segments that keep their trial's subject."""

    def trials(self, params: Params, bad: BadInput) -> tuple[pd.DataFrame, dict]:
        root, p = Path(params.data.root), params.data.eav
        subjects = sorted((d for d in root.glob("subject*") if d.is_dir()), key=_natural)
        if not subjects:
            raise PipelineError(f"{root}: no subjectNN folders (data.source eav expects "
                                "subjectNN/EEG/subjectNN_eeg.mat, _eeg_label.mat and subjectNN/Audio/*.wav)")
        rows, pairing = [], []
        for folder in subjects:
            name = folder.name
            eeg = folder / "EEG" / f"{name}_eeg.mat"
            try:
                if not eeg.is_file():
                    raise PipelineError(f"{eeg}: EEG file not found")
                _, (n_samples, _, n_trials) = eav_array_shape(eeg)
                labels = read_labels(folder / "EEG" / f"{name}_eeg_label.mat")
                if len(labels) != n_trials:
                    raise PipelineError(f"{eeg}: {n_trials} trials but {len(labels)} labels")
            except PipelineError as exc:
                bad(str(folder), "unreadable" if eeg.is_file() else "missing_file", str(exc), name)
                continue
            trial_seconds = n_samples / EAV_SFREQ
            segment = p.segment_seconds or trial_seconds
            n_segments = int(trial_seconds / segment + 1e-9)
            if n_segments == 0:
                raise ParamsError(f"params: data.eav.segment_seconds = {segment} is not allowed; allowed: "
                                  f"at most the trial length of {eeg} ({trial_seconds} s), or null")
            audio = audio_by_emotion(folder / "Audio") if p.task == "speaking" else {}
            used = {e: 0 for e in EMOTIONS}
            for k, c in enumerate(labels):
                emotion, speaking = EMOTIONS[c // 2], c % 2 == 0
                if (p.task == "speaking" and not speaking) or (p.task == "listening" and speaking):
                    continue
                where = f"{eeg} trial {k + 1}"
                wav = ""
                if p.task == "speaking":
                    if used[emotion] >= len(audio[emotion]):
                        bad(where, "unpaired", f"speaking trial {k + 1} ({emotion}) has no audio file: "
                                               f"{len(audio[emotion])} {emotion} file(s) in {folder / 'Audio'}", name, emotion)
                        continue
                    wav = audio[emotion][used[emotion]]
                    used[emotion] += 1
                    pairing.append({"subject": name, "eeg_trial": k + 1, "label": emotion, "audio": portable(wav)})
                for j in range(n_segments):
                    rows.append({"subject": name, "label": emotion, "eeg_path": portable(eeg),
                                 "eeg_onset": k * trial_seconds + j * segment, "eeg_duration": segment,
                                 "audio_path": portable(wav) if wav else "",
                                 "audio_onset": j * segment if wav else "", "audio_duration": segment if wav else "",
                                 "condition": "speaking" if speaking else "listening",
                                 "where": f"{where} segment {j + 1}"})
        # with both conditions, `condition` is a label column a secondary task can learn (data.tasks)
        table = pd.DataFrame(rows, columns=[*COLUMNS, *(["condition"] if p.task == "both" else []), "where"])
        return table, {"eav_pairing": pairing}
