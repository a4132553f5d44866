"""pipeline/features/acoustic.py: openSMILE functionals per trial window, in manifest order."""
from __future__ import annotations

import numpy as np
import opensmile
import pandas as pd
import pytest
import soundfile as sf

from pipeline.errors import PipelineError
from pipeline.features.acoustic import acoustic_features, file_functionals
from pipeline.params import AcousticParams, ComputeParams

SR = 16000
BOTH = AcousticParams(sr=SR, feature_sets=("eGeMAPSv02", "ComParE_2016"))


def _voice(f0: float, seconds: float, amplitude: float = 0.2) -> np.ndarray:
    """A harmonic tone with a slow pitch glide: openSMILE finds a voice in it."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 2 * t))) / SR
    return (amplitude * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


@pytest.fixture
def two_files(tmp_path):
    """Two WAVs of 1.2 s segments at 120 Hz and 240 Hz pitch; a manifest over them, interleaved."""
    low = np.concatenate([_voice(120, 1.2), _voice(120, 1.2, 0.05)])
    high = np.concatenate([_voice(240, 1.2), _voice(240, 1.2, 0.05)])
    sf.write(tmp_path / "low.wav", low, SR)
    sf.write(tmp_path / "high.wav", high, SR)
    rows = [("low.wav", 0.0), ("high.wav", 0.0), ("low.wav", 1.2), ("high.wav", 1.2)]
    return pd.DataFrame({"audio_path": [str(tmp_path / f) for f, _ in rows],
                         "audio_onset": [o for _, o in rows], "audio_duration": [1.2] * 4})


def test_functionals_are_openSMILEs_own_in_set_order(two_files):
    x = acoustic_features(two_files, BOTH, ComputeParams(n_jobs=1))
    assert x.shape == (4, 88 + 6373) and x.dtype == np.float32 and np.isfinite(x).all()
    y, _ = sf.read(two_files.loc[1, "audio_path"], dtype="float32")
    for cols, name in ((slice(0, 88), "eGeMAPSv02"), (slice(88, None), "ComParE_2016")):
        smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, name),
                                feature_level=opensmile.FeatureLevel.Functionals)
        np.testing.assert_allclose(x[1, cols], smile.process_signal(y[:int(1.2 * SR)], SR).to_numpy()[0], rtol=1e-6)


def test_rows_follow_the_manifest_and_see_pitch_and_loudness(two_files):
    x = acoustic_features(two_files, AcousticParams(sr=SR, feature_sets=("eGeMAPSv02",)), ComputeParams(n_jobs=2))
    f0 = x[:, 0]  # eGeMAPS' first functional: F0 semitones from 27.5 Hz, mean
    assert f0[1] - f0[0] == pytest.approx(12, abs=1)  # an octave apart
    assert f0[3] - f0[2] == pytest.approx(12, abs=1)
    loudness = x[:, 10]  # loudness_sma3_amean
    assert loudness[0] > loudness[2] and loudness[1] > loudness[3]


def test_resampled_to_acoustic_sr_before_openSMILE(tmp_path):
    """Every file reaches openSMILE at acoustic.sr: a 44.1 kHz file gives exactly what its
    resampled version gives, and another acoustic.sr gives other functionals."""
    import librosa

    y = librosa.resample(_voice(150, 1.0), orig_sr=SR, target_sr=44100)
    sf.write(tmp_path / "a44.wav", y, 44100, subtype="FLOAT")
    p = AcousticParams(sr=SR, feature_sets=("eGeMAPSv02",))
    got = file_functionals(str(tmp_path / "a44.wav"), [0.0], [1.0], p)[0]
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    resampled = librosa.resample(y, orig_sr=44100, target_sr=SR)
    np.testing.assert_allclose(got, smile.process_signal(resampled, SR).to_numpy()[0], rtol=1e-5)
    at_8k = file_functionals(str(tmp_path / "a44.wav"), [0.0], [1.0], AcousticParams(sr=8000, feature_sets=("eGeMAPSv02",)))
    assert not np.allclose(got, at_8k[0], rtol=1e-3)


def test_a_clip_too_short_for_openSMILE_is_a_named_error(tmp_path):
    sf.write(tmp_path / "short.wav", _voice(150, 0.05), SR)
    with pytest.raises(PipelineError) as info:
        file_functionals(str(tmp_path / "short.wav"), [0.0], [0.05], BOTH)
    message = str(info.value)
    assert "short.wav" in message and "0.000-0.050 s" in message and "NaN" in message and "\n" not in message
