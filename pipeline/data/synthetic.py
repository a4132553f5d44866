"""The embedded default data: real FIF and WAV recordings written from a generative model.

Five EAV classes sit on arousal x valence. Each view carries a different part of the class:

* speech (WAV): arousal, through pitch level and range, energy and speaking rate of a
  source-filter voice (jittered pulse train through formant resonators, syllable envelope);
* EEG band power: valence, through frontal alpha asymmetry;
* EEG inter-channel coupling (what the topology view sees): the arousal x valence diagonal,
  through how many clusters of channels share a theta/beta source. Channels are drawn anew
  every trial and every channel keeps the same band power, so the pattern is visible to a
  permutation-invariant summary (persistent homology of the coupling graph) and not to power.

No single view separates all five classes; any two of them together can. Subjects differ in
gain, alpha peak and voice pitch; recordings carry 50 Hz line noise and frontal blinks.
Everything is drawn from one numpy Generator seeded with `data.synthetic.seed`.
"""
from __future__ import annotations

import csv
import functools
from pathlib import Path

import mne
import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from pipeline.params import SyntheticParams

CLASSES = ("neutral", "anger", "happiness", "sadness", "calmness")
# (arousal, valence) of each class, as in the EAV dataset's circumplex placement.
AROUSAL_VALENCE = {
    "neutral": (0.0, 0.0),
    "anger": (1.0, -1.0),
    "happiness": (1.0, 1.0),
    "sadness": (-1.0, -1.0),
    "calmness": (-1.0, 1.0),
}
# Their levels as the manifest's `arousal` and `valence` columns (secondary tasks, data.tasks).
AROUSAL_LEVELS = {-1.0: "low", 0.0: "mid", 1.0: "high"}
VALENCE_LEVELS = {-1.0: "negative", 0.0: "neutral", 1.0: "positive"}


def circumplex_columns(label: str) -> dict[str, str]:
    """A class's `arousal` and `valence` manifest columns: its place on the circumplex."""
    arousal, valence = AROUSAL_VALENCE[label]
    return {"arousal": AROUSAL_LEVELS[arousal], "valence": VALENCE_LEVELS[valence]}
# Coupled-cluster layout per sign of arousal * valence (the diagonal of the circumplex).
CLUSTERS = {-1.0: (8,), 0.0: (4, 4), 1.0: (2, 2, 2, 2)}

CHANNELS = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "C3", "Cz", "C4",
            "P3", "Pz", "P4", "O1", "Oz", "O2")
LEFT_FRONTAL = ("Fp1", "F7", "F3")
RIGHT_FRONTAL = ("Fp2", "F8", "F4")
BLINK_WEIGHTS = {"Fp1": 1.0, "Fp2": 1.0, "F7": 0.35, "F8": 0.35, "F3": 0.3, "F4": 0.3, "Fz": 0.3}
ALPHA_TOPOGRAPHY = {"O1": 1.0, "Oz": 1.0, "O2": 1.0, "P3": 0.8, "Pz": 0.8, "P4": 0.8}
VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480),
                  (300, 870, 2240), (640, 1190, 2390))


@functools.lru_cache(maxsize=None)
def _bandpass(low: float, high: float, sfreq: float) -> np.ndarray:
    """The 4th-order Butterworth band-pass of `_bandlimited`, designed once per band (a quarter
    of the stage's time when designed for every signal)."""
    return signal.butter(4, [low, high], btype="bandpass", fs=sfreq, output="sos")


def _bandlimited(rng, n_signals: int, n: int, low: float, high: float, sfreq: float) -> np.ndarray:
    """Unit-variance Gaussian noise band-passed to [low, high] Hz, shape (n_signals, n)."""
    x = signal.sosfiltfilt(_bandpass(low, high, sfreq), rng.standard_normal((n_signals, n)), axis=-1)
    return x / x.std(axis=-1, keepdims=True)


def _pink(rng, n_signals: int, n: int) -> np.ndarray:
    """Unit-variance 1/f noise, shape (n_signals, n)."""
    spectrum = np.fft.rfft(rng.standard_normal((n_signals, n)), axis=-1)
    freqs = np.arange(spectrum.shape[-1])
    spectrum /= np.sqrt(np.maximum(freqs, 1.0))
    x = np.fft.irfft(spectrum, n=n, axis=-1)
    return x / x.std(axis=-1, keepdims=True)


def _coupled(rng, n: int, clusters: tuple[int, ...], strength: float, low: float, high: float,
             sfreq: float) -> np.ndarray:
    """Band-limited activity where each cluster of randomly drawn channels shares one source.

    Every channel has unit variance whatever its cluster, so band power says nothing; only
    the correlation structure (|correlation| `strength` inside a cluster) carries the pattern.
    Half of each cluster carries the source and half its negative, so a cluster adds nothing to
    the mean over channels: an average reference then takes the same power from every channel.
    (With every member in phase, re-referencing cut the cluster channels' power to about 0.6 of
    the others', and band power alone saw the layout meant for the topology view.)
    """
    n_ch = len(CHANNELS)
    out = _bandlimited(rng, n_ch, n, low, high, sfreq)
    sources = _bandlimited(rng, len(clusters), n, low, high, sfreq)
    order = rng.permutation(n_ch)
    start = 0
    for k, size in enumerate(clusters):
        members = order[start:start + size]
        start += size
        signs = np.where(np.arange(size) % 2 == 0, 1.0, -1.0)[:, None]
        out[members] = np.sqrt(strength) * signs * sources[k] + np.sqrt(1 - strength) * out[members]
    return out


def eeg_trial(rng, arousal: float, valence: float, subject: dict, p: SyntheticParams) -> np.ndarray:
    """One trial of EEG in microvolts, shape (n_channels, trial_seconds * eeg_sfreq)."""
    n = int(round(p.trial_seconds * p.eeg_sfreq))
    idx = {ch: i for i, ch in enumerate(CHANNELS)}
    x = 6.0 * _pink(rng, len(CHANNELS), n)

    # Alpha: posterior-dominant; the frontal left/right balance follows valence.
    alpha = _bandlimited(rng, len(CHANNELS), n, subject["alpha_peak"] - 1.5,
                         subject["alpha_peak"] + 1.5, p.eeg_sfreq)
    amp = np.full(len(CHANNELS), 4.0)
    for ch, w in ALPHA_TOPOGRAPHY.items():
        amp[idx[ch]] = 4.0 + 6.0 * w
    shift = 0.35 * p.valence_strength * valence + rng.normal(0, 0.15)
    for ch in LEFT_FRONTAL:
        amp[idx[ch]] = 7.0 * np.exp(-shift)
    for ch in RIGHT_FRONTAL:
        amp[idx[ch]] = 7.0 * np.exp(shift)
    x += amp[:, None] * alpha

    # Theta and beta coupling: cluster layout from the arousal x valence diagonal.
    diagonal = float(np.sign(arousal * valence))
    clusters = CLUSTERS[diagonal]
    strength = float(np.clip(0.55 * p.coupling_strength + rng.normal(0, 0.05), 0.0, 0.95))
    x += 4.0 * _coupled(rng, n, clusters, strength, 4.0, 8.0, p.eeg_sfreq)
    x += 3.0 * _coupled(rng, n, clusters, strength, 14.0, 28.0, p.eeg_sfreq)
    return x * subject["gains"][:, None]


def _blinks(rng, n: int, sfreq: float, every: float = 3.0) -> np.ndarray:
    """Blink artifacts (about one every `every` seconds, 80-150 uV) over frontal channels, shape
    (n_ch, n)."""
    out = np.zeros((len(CHANNELS), n))
    width = int(0.3 * sfreq)
    shape = np.hanning(width)
    for onset in rng.uniform(0, n - width, size=rng.poisson(n / sfreq / every)).astype(int):
        amplitude = rng.uniform(80, 150)
        for ch, w in BLINK_WEIGHTS.items():
            out[CHANNELS.index(ch), onset:onset + width] += w * amplitude * shape
    return out


# Extra blinks a second per class at data.synthetic.artifact_class_coupling 1: sad trials blink
# most, then angry ones (the confound an EEG branch can learn instead of the brain's signal).
CLASS_BLINK_RATE = {"neutral": 0.25, "anger": 0.5, "happiness": 0.0, "sadness": 1.0, "calmness": 0.0}


def voice_clip(rng, arousal: float, subject: dict, p: SyntheticParams) -> np.ndarray:
    """One trial of speech-like audio, shape (trial_seconds * audio_sr,), in [-1, 1].

    Arousal raises pitch, pitch range, energy and syllable rate; valence leaves no trace.
    """
    sr = p.audio_sr
    n = int(round(p.trial_seconds * sr))
    t = np.arange(n) / sr
    a = p.arousal_strength * arousal
    f0_mean = subject["f0"] * 2.0 ** ((0.30 * a + rng.normal(0, 0.06)))
    f0_range = max(0.05, 0.14 + 0.08 * a + rng.normal(0, 0.02))
    rate = max(1.5, 4.0 + 1.3 * a + rng.normal(0, 0.4))
    f0 = f0_mean * (1 + f0_range * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6.3)))
    f0 *= 1 + 0.015 * rng.standard_normal(n)  # jitter
    phase = np.cumsum(f0 / sr)
    source = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
    source = signal.lfilter([1.0], [1.0, -0.95], source)  # glottal roll-off

    voice = np.zeros(n)
    period = int(sr / rate)
    for start in range(int(rng.uniform(0, 0.3) * sr), n - period // 2, period):
        stop = min(n, start + int(period * rng.uniform(0.55, 0.85)))
        seg = source[start:stop]
        for formant, bandwidth in zip(VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))], (80, 100, 120)):
            r = np.exp(-np.pi * bandwidth / sr)
            theta = 2 * np.pi * formant * subject["formant_scale"] / sr
            seg = signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], seg)
        voice[start:stop] += seg * np.hanning(stop - start)
    voice /= np.abs(voice).max() + 1e-12
    energy = 0.12 * 10 ** (0.2 * a + rng.normal(0, 0.05))
    noise = 0.004 * rng.standard_normal(n)
    return np.clip(energy * voice + noise, -1, 1)


def draw_subject(rng, p: SyntheticParams) -> dict:
    """One subject's traits: EEG channel gains, alpha peak, voice pitch and formants, line noise."""
    return {
        "gains": rng.uniform(0.7, 1.4) * rng.uniform(0.95, 1.05, size=len(CHANNELS)),
        "alpha_peak": rng.uniform(8.5, 11.5),
        "f0": rng.uniform(100, 220),
        "formant_scale": rng.uniform(0.9, 1.15),
        "line_noise": rng.uniform(5, 20),
    }


def generate(out_dir: Path, p: SyntheticParams) -> Path:
    """Write one FIF and one WAV recording per subject plus manifest.csv into `out_dir`.

    Trials sit back to back with `gap_seconds` between them, in random class order; the
    manifest gives each trial's onset and duration inside its recordings. Returns the
    manifest path.
    """
    rng = np.random.default_rng(p.seed)
    confound = np.random.default_rng([p.seed, 1])  # its own stream: coupling 0 leaves every other draw as it was
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    info = mne.create_info(list(CHANNELS), p.eeg_sfreq, ch_types="eeg")
    info.set_montage("standard_1020")
    step = p.trial_seconds + p.gap_seconds
    for s in tqdm(range(p.n_subjects), desc="synthetic subjects", unit="subject"):
        subject = draw_subject(rng, p)
        name = f"sub-{s + 1:02d}"
        labels = rng.permutation(np.repeat(CLASSES, p.trials_per_class))
        total = len(labels) * step + p.gap_seconds
        n_eeg = int(round(total * p.eeg_sfreq))
        eeg = 6.0 * _pink(rng, len(CHANNELS), n_eeg) * subject["gains"][:, None]
        audio = 0.004 * rng.standard_normal(int(round(total * p.audio_sr)))
        for i, label in enumerate(labels):
            arousal, valence = AROUSAL_VALENCE[label]
            onset = p.gap_seconds + i * step
            trial = eeg_trial(rng, arousal, valence, subject, p)
            e0 = int(round(onset * p.eeg_sfreq))
            eeg[:, e0:e0 + trial.shape[1]] = trial
            rate = p.artifact_class_coupling * CLASS_BLINK_RATE[label]
            if rate > 0:
                eeg[:, e0:e0 + trial.shape[1]] += _blinks(confound, trial.shape[1], p.eeg_sfreq, 1.0 / rate)
            clip = voice_clip(rng, arousal, subject, p)
            a0 = int(round(onset * p.audio_sr))
            audio[a0:a0 + clip.size] = clip
            rows.append({"subject": name, "label": label,
                         "eeg_path": f"{name}_eeg.fif", "eeg_onset": onset, "eeg_duration": p.trial_seconds,
                         "audio_path": f"{name}_audio.wav", "audio_onset": onset,
                         "audio_duration": p.trial_seconds, **circumplex_columns(label)})
        times = np.arange(n_eeg) / p.eeg_sfreq
        eeg += _blinks(rng, n_eeg, p.eeg_sfreq)
        eeg += subject["line_noise"] * np.sin(2 * np.pi * 50.0 * times + rng.uniform(0, 6.3))
        raw = mne.io.RawArray(eeg * 1e-6, info, verbose="error")
        raw.save(out_dir / f"{name}_eeg.fif", overwrite=True, verbose="error")
        sf.write(out_dir / f"{name}_audio.wav", np.clip(audio, -1, 1), p.audio_sr, subtype="PCM_16")

    return write_manifest(out_dir / "manifest.csv", rows)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """A manifest CSV (one dict a trial, the manifest columns as keys) for a generated study."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
