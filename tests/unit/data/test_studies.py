"""pipeline/data/studies.py: studies where speech carries the class and EEG none (synthetic voice
and real espeak-ng speech)."""
from __future__ import annotations

import mne
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.data.studies import write_one_view_study
from pipeline.data.synthetic import CLASSES

from dvc_project import ROOT



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


def test_speech_study_pairs_the_committed_clips_with_class_free_eeg(tmp_path, realdata):
    """The committed clips (tests/fixtures/speech_clips, made by write_speech_clips with espeak-ng)
    come out as a manifest study: every clip whole as its audio window, each subject's EEG windows
    inside its own stretch of the recording, and the same labels in every subject."""
    from pipeline.data.studies import write_speech_study

    clips = ROOT / "tests" / "fixtures" / "speech_clips" / "clips.csv"
    eeg = realdata / "eeg" / "test_raw.set"
    manifest = pd.read_csv(write_speech_study(clips, eeg, tmp_path, seed=1))
    assert len(manifest) == len(pd.read_csv(clips)) == 40
    assert manifest.groupby("subject")["label"].value_counts().unstack().eq(2).all().all()
    raw = mne.io.read_raw(eeg, preload=False, verbose="error")
    stretch = raw.n_times / raw.info["sfreq"] / 4
    for s, rows in manifest.groupby("subject"):
        k = int(s.split("-")[1]) - 1
        assert (rows["eeg_onset"] >= k * stretch).all() and (rows["eeg_onset"] + 4.0 <= (k + 1) * stretch).all()
    first = manifest.iloc[0]
    assert first["audio_onset"] == 0.0 and first["audio_duration"] == pytest.approx(sf.info(first["audio_path"]).duration,
                                                                                      abs=1e-4)


def test_committed_clips_are_acted_as_the_generator_says():
    """Each committed clip's prosody is its class's point within the generator's jitter, and each
    subject is one espeak-ng voice: what the generator promises, checked on its output."""
    from pipeline.data.studies import SPEECH_JITTER, SPEECH_PROSODY, SPEECH_VOICES

    clips = pd.read_csv(ROOT / "tests" / "fixtures" / "speech_clips" / "clips.csv")
    for _, clip in clips.iterrows():
        centre = SPEECH_PROSODY[clip["label"]]
        for value, c, j in zip((clip["pitch"], clip["rate"], clip["amplitude"]), centre, SPEECH_JITTER):
            assert abs(value - c) <= j
    assert clips.groupby("subject")["voice"].nunique().eq(1).all()
    assert list(dict.fromkeys(clips["voice"])) == list(SPEECH_VOICES[:4])
