"""pipeline/data/studies.py: the one-informative-view study (speech carries the class, EEG none)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import soundfile as sf

from pipeline.data.studies import write_one_view_study
from pipeline.data.synthetic import CLASSES


def test_study_layout_and_class_free_eeg(tmp_path, realdata):
    eeg = realdata / "eeg" / "test_raw.set"
    manifest = pd.read_csv(write_one_view_study(tmp_path, eeg, n_subjects=3, trials_per_class=2, seed=1))
    assert len(manifest) == 3 * 5 * 2 and sorted(manifest["label"].unique()) == sorted(CLASSES)
    assert (manifest.groupby("subject")["label"].value_counts() == 2).all()
    assert set(manifest["eeg_path"]) == {str(eeg.resolve())}  # the real recording, read in place
    # each subject's EEG windows lie in its own stretch of the recording, drawn whatever the label
    stretches = manifest.groupby("subject")["eeg_onset"].agg(["min", "max"])
    assert (stretches["max"].iloc[:-1].to_numpy() < stretches["min"].iloc[1:].to_numpy()).all()
    # speech: one WAV per subject holding its trials back to back
    y, sr = sf.read(tmp_path / "sub-01_audio.wav")
    assert sr == 16000 and len(y) == 10 * 2 * sr
    # the voice's level follows the class: clip energy is ordered by class index within a subject
    sub = manifest[manifest["subject"] == "sub-01"]
    energy = {lab: np.mean([np.sqrt(np.mean(y[int(o * sr):int((o + 2) * sr)] ** 2))
                            for o in sub.loc[sub["label"] == lab, "audio_onset"]]) for lab in CLASSES}
    assert energy[CLASSES[4]] > energy[CLASSES[0]]
