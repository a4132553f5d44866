"""Studies where one view carries the class and the EEG views carry none, and one where only artifacts do.

The failure fusion must survive, as real studies show it: one strong view next to empty ones.
In both, the EEG windows are cut from one real recording at onsets drawn independently of the
labels (each subject gets its own stretch of the recording, so subjects still differ), and the
study is written as a `manifest` study whose manifest.csv points at the EEG file in place, with
each class's `arousal` and `valence` columns (synthetic.circumplex_columns: secondary tasks).

* write_one_view_study: each subject's speech is the synthetic voice (source-filter,
  pitch/energy/rate) at a level set by the class.
* write_speech_clips + write_speech_study: real speech, espeak-ng voices as subjects and five
  classes acted by pitch, rate and amplitude (`python -m pipeline speech-study`).
"""
from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pandas as pd
import soundfile as sf

from pipeline.data.synthetic import CLASSES, circumplex_columns, draw_subject, voice_clip, write_manifest
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
                            arousal_strength=1.0, valence_strength=0.0, coupling_strength=0.0,
                            artifact_class_coupling=0.0)
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
                         "audio_duration": trial_seconds, **circumplex_columns(CLASSES[k])})
    return write_manifest(out_dir / "manifest.csv", rows)


# A real-speech study: espeak-ng voices as subjects, classes acted by prosody. espeak-ng takes
# pitch 0-99, rate in words per minute and amplitude 0-200; each class sits at its own point,
# and every clip is jittered around it (SPEECH_JITTER) so the classes overlap a little.
SPEECH_PROSODY = {  # class: (pitch, rate, amplitude)
    "neutral": (50, 160, 100),
    "anger": (40, 210, 170),
    "happiness": (80, 200, 120),
    "sadness": (25, 115, 60),
    "calmness": (50, 120, 85),
}
SPEECH_JITTER = (4, 8, 8)
# Accent x voice variant: distinct speakers (formants, base pitch, timbre) from espeak-ng's own data
SPEECH_VOICES = ("en-gb+m1", "en-us+f2", "en-gb-scotland+m3", "en-us+f4", "en-gb-x-rp+m7", "en-029+f1",
                 "en-gb-x-gbclan+m5", "en-us+f3", "en-gb+m4", "en-gb-x-rp+f5", "en-us+m6", "en-gb-scotland+f2",
                 "en-029+m2", "en-gb-x-gbcwmd+f3", "en-gb-x-gbclan+f1", "en-us+m4")
SPEECH_SENTENCES = (
    "The meeting starts at nine.", "Please put the chairs back where you found them after the lesson.",
    "The train leaves from the second platform.", "We walked along the river until the road turned north.",
    "Bring the blue folder to the office.", "The old clock on the wall stopped again yesterday afternoon.",
    "He opened the window and looked at the street below for a long time.", "It is raining again in the city.",
    "The shop on the corner sells bread, milk and newspapers every morning from six.",
    "She wrote the numbers down.", "The parcel arrived on Tuesday.",
    "They painted the fence white, then green, and finally left it as it was before.",
)


def espeak_clip(text: str, voice: str, pitch: int, rate: int, amplitude: int, sr: int) -> np.ndarray:
    """One utterance from espeak-ng (a Debian package; only generating a study needs it), mono
    float32 at `sr`."""
    import io
    import shutil
    import subprocess

    import librosa

    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    wav = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "-a", str(amplitude),
                          "--stdout", text], check=True, capture_output=True).stdout
    y, native = sf.read(io.BytesIO(wav), dtype="float32")
    return librosa.resample(y, orig_sr=native, target_sr=sr)


def write_speech_clips(out_dir: Path, n_voices: int = 8, clips_per_class: int = 12, sr: int = 16000,
                       seed: int = 0, first_voice: int = 0) -> Path:
    """Synthesise the study's clips into `out_dir`: one FLAC per clip and clips.csv (subject,
    label, file, voice, pitch, rate, amplitude, text). Returns clips.csv.

    The voices are SPEECH_VOICES[first_voice:first_voice + n_voices]; subject k is voice k of
    that list, so studies with disjoint voice ranges share no speaker."""
    if not (0 <= first_voice and 1 <= n_voices and first_voice + n_voices <= len(SPEECH_VOICES)):
        raise ValueError(f"voices {first_voice}-{first_voice + n_voices - 1}: within 0-{len(SPEECH_VOICES) - 1}")
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, voice in enumerate(SPEECH_VOICES[first_voice:first_voice + n_voices], start=first_voice):
        labels = rng.permutation(np.repeat(list(SPEECH_PROSODY), clips_per_class))
        for i, label in enumerate(labels):
            prosody = [int(round(c + rng.uniform(-j, j))) for c, j in zip(SPEECH_PROSODY[label], SPEECH_JITTER)]
            text = SPEECH_SENTENCES[rng.integers(len(SPEECH_SENTENCES))]
            name = f"sub-{s + 1:02d}_clip-{i + 1:03d}.flac"
            sf.write(out_dir / name, espeak_clip(text, voice, *prosody, sr), sr, subtype="PCM_16")
            rows.append({"subject": f"sub-{s + 1:02d}", "label": label, "file": name, "voice": voice,
                         "pitch": prosody[0], "rate": prosody[1], "amplitude": prosody[2], "text": text})
    return write_manifest(out_dir / "clips.csv", rows)


def write_speech_study(clips_csv: Path, eeg_file: Path, out_dir: Path, eeg_seconds: float = 4.0,
                       seed: int = 0) -> Path:
    """Pair each clip of `clips_csv` (write_speech_clips) with a class-free window of a real EEG
    recording, as write_one_view_study does; writes out_dir/manifest.csv and returns it.

    The audio window is the whole clip; the EEG window (`eeg_seconds`) is drawn from its
    subject's own stretch of the recording, independently of the label.
    """
    clips = pd.read_csv(clips_csv)
    subjects = list(dict.fromkeys(clips["subject"]))
    raw = mne.io.read_raw(eeg_file, preload=False, verbose="error")
    stretch = raw.n_times / raw.info["sfreq"] / len(subjects)
    if stretch < eeg_seconds + 0.5:
        raise ValueError(f"{eeg_file}: too short for {len(subjects)} subjects of {eeg_seconds} s windows")
    rng = np.random.default_rng(seed)
    rows = []
    for _, clip in clips.iterrows():
        s = subjects.index(clip["subject"])
        audio = Path(clips_csv).parent.resolve() / clip["file"]
        rows.append({"subject": clip["subject"], "label": clip["label"], "eeg_path": str(Path(eeg_file).resolve()),
                     "eeg_onset": round(float(rng.uniform(s * stretch, (s + 1) * stretch - eeg_seconds - 0.5)), 4),
                     "eeg_duration": eeg_seconds, "audio_path": str(audio), "audio_onset": 0.0,
                     "audio_duration": round(sf.info(str(audio)).duration, 4), **circumplex_columns(clip["label"])})
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_manifest(out_dir / "manifest.csv", rows)


def blink_topography(raw: mne.io.BaseRaw, eog_channel: str) -> np.ndarray:
    """The recording's own blinks' spatial pattern, (n_channels,), scaled to 1 at `eog_channel`:
    the 1-10 Hz signal at each blink's peak (mne.preprocessing.find_eog_events), averaged."""
    peaks = mne.preprocessing.find_eog_events(raw, ch_name=eog_channel, verbose="error")[:, 0] - raw.first_samp
    if len(peaks) == 0:
        raise ValueError(f"no blinks found on {eog_channel}: no blink topography to copy")
    x = raw.copy().filter(1.0, 10.0, verbose="error").get_data()[:, peaks].mean(axis=1)
    return x / x[raw.ch_names.index(eog_channel)]


ARTIFACT_CLASSES = ("neutral", "sadness")  # sadness: the class that blinks


def write_artifact_study(out_dir: Path, eeg_file: Path, montage_file: Path, eog_channel: str = "EOG1",
                         n_subjects: int = 4, trials_per_class: int = 12, trial_seconds: float = 2.0,
                         seed: int = 0) -> Path:
    """A study whose class lives only in artifacts: every subject's recording is the real one
    (its real names and positions from `montage_file`, its gain drawn per subject), trial windows
    drawn at random, and one or two blink-shaped deflections (the recording's own blink
    topography, a 0.3 s Hanning wave of 80-150 uV at `eog_channel`) added inside each sadness
    trial. The brain signal carries no class; an EEG model that scores above chance has learned
    blinks. Writes a FIF per subject and manifest.csv into `out_dir`; returns the manifest."""
    rng = np.random.default_rng(seed)
    raw = mne.io.read_raw(eeg_file, preload=True, verbose="error")
    montage = mne.channels.read_custom_montage(montage_file)
    if len(montage.ch_names) != len(raw.ch_names):
        raise ValueError(f"{montage_file}: {len(montage.ch_names)} positions for {len(raw.ch_names)} channels")
    raw.rename_channels(dict(zip(raw.ch_names, montage.ch_names)))
    raw.set_montage(montage)
    pattern = blink_topography(raw, eog_channel)
    sfreq, width = raw.info["sfreq"], int(0.3 * raw.info["sfreq"])
    n_trials = len(ARTIFACT_CLASSES) * trials_per_class
    slots = int((raw.times[-1] - 1.0) // (trial_seconds + 0.5))
    if slots < n_trials:
        raise ValueError(f"{eeg_file}: {raw.times[-1]:.0f} s holds {slots} trials of {trial_seconds} s, not {n_trials}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        name = f"sub-{s + 1:02d}"
        x = raw.get_data() * rng.uniform(0.8, 1.25)
        labels = rng.permutation(np.repeat(ARTIFACT_CLASSES, trials_per_class))
        onsets = 0.5 + np.sort(rng.choice(slots, size=n_trials, replace=False)) * (trial_seconds + 0.5)
        for label, onset in zip(labels, onsets):
            if label == "sadness":
                for _ in range(rng.integers(1, 3)):
                    start = int((onset + rng.uniform(0.1, trial_seconds - 0.4)) * sfreq)
                    x[:, start:start + width] += np.outer(pattern, np.hanning(width)) * rng.uniform(80, 150) * 1e-6
            rows.append({"subject": name, "label": label, "eeg_path": f"{name}_eeg.fif",
                         "eeg_onset": round(float(onset), 4), "eeg_duration": trial_seconds})
        mne.io.RawArray(x, raw.info, verbose="error").save(out_dir / f"{name}_eeg.fif", overwrite=True, verbose="error")
    return write_manifest(out_dir / "manifest.csv", rows)
