"""pipeline/features/mel.py: fixed-length clips and log-mel spectrograms that keep loudness."""
from __future__ import annotations


import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.features.mel import fit_length, log_mel, mel_features
from pipeline.params import ComputeParams, MelParams

P = MelParams(sr=16000, clip_seconds=1.0, n_mels=32, n_frames=40, n_fft=1024, fmin=50.0, fmax=8000.0,
              crop="center")


def _tone(freq: float, amplitude: float = 0.1, seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ fit_length

def test_fit_length_centre_crops():
    y = np.arange(10.0)
    np.testing.assert_array_equal(fit_length(y, 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(fit_length(y, 5), [2, 3, 4, 5, 6])


def test_fit_length_pads_both_sides_with_zeros():
    y = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(fit_length(y, 7), [0, 0, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(fit_length(y, 6), [0, 1, 2, 3, 0, 0])


@pytest.mark.parametrize("size", [1, 99, 100, 101, 1000])
def test_fit_length_exact_size(size):
    assert fit_length(np.ones(size), 100).shape == (100,)
    assert fit_length(np.ones(size), 100).sum() == min(size, 100)


# ------------------------------------------------------------------ log_mel

def test_log_mel_shape_and_dtype():
    clips = np.stack([_tone(440), _tone(1000), _tone(3000)])
    out = log_mel(clips, P)
    assert out.shape == (3, 1, P.n_mels, P.n_frames)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_log_mel_shape_when_length_does_not_divide():
    clips = np.stack([_tone(440, seconds=1.0)[:15999]])  # an odd sample count
    assert log_mel(clips, P).shape == (1, 1, P.n_mels, P.n_frames)


def test_louder_clip_has_higher_db():
    quiet = (0.01 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    loud = 10.0 * quiet  # +20 dB in every bin
    out = log_mel(np.stack([quiet, loud]), P)
    diff = out[1].mean() - out[0].mean()
    assert diff == pytest.approx(20.0, abs=0.5), "dB must be re 1.0, not normalised per clip"
    # a tone: its peak bin rises by the same 20 dB
    tones = log_mel(np.stack([_tone(440, 0.01), _tone(440, 0.1)]), P)
    assert tones[1].max() - tones[0].max() == pytest.approx(20.0, abs=0.5)


def test_tone_peaks_in_its_mel_bin():
    out = log_mel(np.stack([_tone(440), _tone(2000)]), P)
    profile = out[:, 0, :, 5:-5].mean(axis=-1)  # (2, n_mels), frames away from the edges
    peak_440, peak_2000 = profile.argmax(axis=1)
    centres = librosa.mel_frequencies(P.n_mels + 2, fmin=P.fmin, fmax=P.fmax)[1:-1]
    assert abs(peak_440 - np.abs(centres - 440).argmin()) <= 1
    assert abs(peak_2000 - np.abs(centres - 2000).argmin()) <= 1
    assert peak_2000 > peak_440 + 5
    # the 440 Hz clip has much less energy where the 2000 Hz clip peaks, and vice versa
    assert profile[0, peak_2000] < profile[1, peak_2000] - 20
    assert profile[1, peak_440] < profile[0, peak_440] - 20


# ------------------------------------------------------------------ mel_features

def test_mel_features_reads_windows_in_manifest_order(tmp_path):
    sr = 16000
    # one recording: 0.5 s silence, 1 s quiet 440 Hz, 0.5 s gap, 1 s loud 2000 Hz
    audio = np.concatenate([np.zeros(sr // 2), _tone(440, 0.01), np.zeros(sr // 2), _tone(2000, 0.3)])
    path = tmp_path / "a.wav"
    sf.write(path, audio, sr, subtype="FLOAT")
    trials = pd.DataFrame({"audio_path": [str(path)] * 2, "audio_onset": [2.0, 0.5],
                           "audio_duration": [1.0, 1.0]})
    out, counts = mel_features(trials, P)
    assert out.shape == (2, 1, P.n_mels, P.n_frames)
    assert counts == {"padded": 0, "cropped": 0, "exact": 2}
    expected = log_mel(np.stack([_tone(2000, 0.3), _tone(440, 0.01)]), P)
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_mel_features_pads_and_crops_any_rate_and_counts(tmp_path):
    """Clips at 44.1 kHz in stereo, shorter and longer than clip_seconds: resampled, mixed to
    mono, zero-padded or cropped (centre, start or end), and counted."""
    sr = 44100
    t = np.arange(int(3.0 * sr)) / sr
    tone = np.where(t < 1.0, 0.3, 0.01) * np.sin(2 * np.pi * 1000 * t)  # loud first second
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone, tone], axis=1), sr, subtype="FLOAT")
    trials = pd.DataFrame({"audio_path": [str(path)] * 3, "audio_onset": [0.0, 0.0, 0.0],
                           "audio_duration": [0.5, 1.0, 3.0]})
    out, counts = mel_features(trials, P)
    assert counts == {"padded": 1, "cropped": 1, "exact": 1}
    start, _ = mel_features(trials, P.model_copy(update=dict(crop="start")))
    np.testing.assert_allclose(start[2][..., 2:-2], out[1][..., 2:-2], atol=0.05)  # the loud first second
    assert out[2].max() < start[2].max() - 20  # the centre second is the quiet part (30 dB lower)


def test_mel_features_same_for_any_n_jobs(tmp_path):
    sr = 16000
    paths = []
    for k in range(3):
        paths.append(str(tmp_path / f"{k}.wav"))
        sf.write(paths[-1], _tone(300 + 200 * k, 0.1, seconds=2.0), sr, subtype="FLOAT")
    trials = pd.DataFrame({"audio_path": paths, "audio_onset": [0.5] * 3, "audio_duration": [1.0] * 3})
    np.testing.assert_array_equal(mel_features(trials, P, ComputeParams(n_jobs=1))[0],
                                  mel_features(trials, P, ComputeParams(n_jobs=2))[0])
