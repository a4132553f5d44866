"""A one-informative-view study: speech carries the class, the EEG views carry none.

The failure fusion must survive, as real studies show it: one strong view next to empty ones.
Each subject's speech is the synthetic voice (source-filter, pitch/energy/rate) at a level set
by the class; its EEG windows are cut from one real recording at onsets drawn independently of
the labels (each subject gets its own stretch of the recording, so subjects still differ).
Written as a `manifest` study: WAVs and a manifest.csv that points at the EEG file in place.
"""
from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import soundfile as sf

from pipeline.data.synthetic import CLASSES, draw_subject, voice_clip, write_manifest
from pipeline.params import SyntheticParams


def write_one_view_study(out_dir: Path, eeg_file: Path, n_subjects: int = 6, trials_per_class: int = 8,
                         trial_seconds: float = 2.0, voice_spread: float = 1.2, seed: int = 0) -> Path:
    """Write the study into `out_dir` (audio per subject + manifest.csv); returns the manifest.

    Class k of the five speaks at arousal level (k - 2) * `voice_spread`, so speech tells the
    classes apart (less so for a small spread) while EEG and its topology know nothing of them.
    """
    rng = np.random.default_rng(seed)
    raw = mne.io.read_raw(eeg_file, preload=False, verbose="error")
    length = raw.n_times / raw.info["sfreq"]
    stretch = length / n_subjects
    if stretch < trial_seconds:
        raise ValueError(f"{eeg_file}: {length:.1f} s is too short for {n_subjects} subjects of {trial_seconds} s trials")
    voice = SyntheticParams(seed=seed, n_subjects=n_subjects, trials_per_class=trials_per_class,
                            trial_seconds=trial_seconds, gap_seconds=0.0, eeg_sfreq=256.0, audio_sr=16000,
                            arousal_strength=1.0, valence_strength=0.0, coupling_strength=0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        name = f"sub-{s + 1:02d}"
        subject = draw_subject(rng, voice)
        labels = rng.permutation(np.repeat(np.arange(len(CLASSES)), trials_per_class))
        onsets = rng.uniform(s * stretch, (s + 1) * stretch - trial_seconds - 0.5, size=len(labels))
        clips = [voice_clip(rng, (k - 2) * voice_spread, subject, voice) for k in labels]
        sf.write(out_dir / f"{name}_audio.wav", np.concatenate(clips), voice.audio_sr, subtype="PCM_16")
        for i, (k, onset) in enumerate(zip(labels, onsets)):
            rows.append({"subject": name, "label": CLASSES[k], "eeg_path": str(Path(eeg_file).resolve()),
                         "eeg_onset": round(float(onset), 4), "eeg_duration": trial_seconds,
                         "audio_path": f"{name}_audio.wav", "audio_onset": i * trial_seconds,
                         "audio_duration": trial_seconds})
    return write_manifest(out_dir / "manifest.csv", rows)
