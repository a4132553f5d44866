"""pipeline/features/eeg.py: MNE preprocessing, epoching and the per-manifest EEG features."""
from __future__ import annotations

import mne
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.features.eeg import cut_epochs, eeg_features, preprocess
from pipeline.params import ArtifactParams, ComputeParams, EEGParams

NO_CLEANING = ArtifactParams(ica=False, ica_method="infomax", ica_components=15, seed=0, iclabel_reject={},
                             autoreject=False)
P = EEGParams(l_freq=1.0, h_freq=40.0, notch=50.0, sfreq=128.0, reference="average", epoch_seconds=2.0,
              channels=None, read_kwargs={}, drop_channels=(), montage=None, artifacts=NO_CLEANING)
NATIVE = 512.0
SECONDS = 20.0
# Channel amplitude patterns (uV) that sum to zero: the average reference leaves them alone,
# so whatever happens to them is the filters' doing.
ALPHA_UV = np.array([10.0, -10.0, 6.0, -6.0])
LINE_UV = np.array([30.0, -30.0, 20.0, -20.0])


def _raw(seed: int = 0, names=None, seconds: float = SECONDS) -> mne.io.RawArray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * NATIVE)) / NATIVE
    x = (ALPHA_UV[:, None] * np.sin(2 * np.pi * 10.0 * t)
         + LINE_UV[:, None] * np.sin(2 * np.pi * 50.0 * t + 0.3)
         + 0.5 * rng.standard_normal((4, t.size)))
    info = mne.create_info(names or ["C3", "C4", "P3", "P4"], NATIVE, ch_types="eeg")
    return mne.io.RawArray(x * 1e-6, info, verbose="error")


def _amplitude(x: np.ndarray, sfreq: float, freq: float) -> np.ndarray:
    """Per-channel amplitude of the `freq` sinusoid, by least squares on sin and cos."""
    t = np.arange(x.shape[-1]) / sfreq
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.T, rcond=None)
    return np.hypot(*coef)


def test_preprocess_removes_line_noise_keeps_alpha():
    raw = preprocess(_raw(), P)
    assert raw.info["sfreq"] == P.sfreq
    assert raw.n_times == int(SECONDS * P.sfreq)
    x = raw.get_data(units="uV")[:, int(2 * P.sfreq):-int(2 * P.sfreq)]  # away from the edges
    line = _amplitude(x, P.sfreq, 50.0)
    alpha = _amplitude(x, P.sfreq, 10.0)
    assert (line < 0.03 * np.abs(LINE_UV)).all(), line  # > 99.9 % of the power gone
    np.testing.assert_allclose(alpha, np.abs(ALPHA_UV), rtol=0.05)


@pytest.mark.parametrize("notch", [50.0, None])
def test_notch_alone_removes_line_noise(notch):
    """With the low-pass above 50 Hz only the notch can remove the line noise."""
    p = EEGParams(l_freq=1.0, h_freq=70.0, notch=notch, sfreq=256.0, reference="none", epoch_seconds=2.0,
                  channels=None, read_kwargs={}, drop_channels=(), montage=None, artifacts=NO_CLEANING)
    x = preprocess(_raw(), p).get_data(units="uV")[:, 512:-512]
    line = _amplitude(x, p.sfreq, 50.0)
    if notch is None:
        np.testing.assert_allclose(line, np.abs(LINE_UV), rtol=0.05)
    else:
        assert (line < 0.05 * np.abs(LINE_UV)).all(), line
    np.testing.assert_allclose(_amplitude(x, p.sfreq, 10.0), np.abs(ALPHA_UV), rtol=0.05)


def test_preprocess_average_reference():
    raw = _raw()
    raw._data += 40e-6 * np.sin(2 * np.pi * 7.0 * raw.times)  # common to every channel
    x = preprocess(raw, P).get_data(units="uV")
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-6)
    assert _amplitude(x[:, 256:-256], P.sfreq, 7.0).max() < 1.0


def test_preprocess_without_notch_or_reference_keeps_common_signal():
    p = EEGParams(l_freq=1.0, h_freq=40.0, notch=None, sfreq=128.0, reference="none", epoch_seconds=2.0,
                  channels=None, read_kwargs={}, drop_channels=(), montage=None, artifacts=NO_CLEANING)
    raw = _raw()
    raw._data += 40e-6 * np.sin(2 * np.pi * 7.0 * raw.times)
    x = preprocess(raw, p).get_data(units="uV")[:, 256:-256]
    np.testing.assert_allclose(_amplitude(x, p.sfreq, 7.0), 40.0, rtol=0.05)


def test_cut_epochs_shape_and_content():
    raw = preprocess(_raw(), P)
    onsets = np.array([1.0, 5.5, 17.0])
    epochs = cut_epochs(raw, onsets, P)
    n_times = int(P.epoch_seconds * P.sfreq)
    assert epochs.shape == (3, 4, n_times)
    assert epochs.dtype == np.float32
    data = raw.get_data(units="uV")
    for e, onset in zip(epochs, onsets):
        start = int(round(onset * P.sfreq))
        np.testing.assert_allclose(e, data[:, start:start + n_times], rtol=1e-5, atol=1e-4)


def test_cut_epochs_in_any_order_and_repeated():
    """Trials keep their own windows whatever their order, and two trials may share a window."""
    raw = preprocess(_raw(), P)
    onsets = np.array([17.0, 1.0, 5.5, 1.0])
    epochs = cut_epochs(raw, onsets, P)
    assert epochs.shape[0] == 4
    np.testing.assert_array_equal(epochs[1], epochs[3])
    np.testing.assert_array_equal(epochs, cut_epochs(raw, np.array([1.0, 5.5, 17.0]), P)[[2, 0, 1, 0]])


def test_cut_epochs_window_past_the_end():
    raw = preprocess(_raw(), P)
    with pytest.raises(PipelineError, match="do not fit"):
        cut_epochs(raw, np.array([1.0, SECONDS - 1.0]), P)
    with pytest.raises(PipelineError, match="do not fit"):
        cut_epochs(raw, np.array([SECONDS + 5.0]), P)


def test_cut_epochs_last_window_that_fits():
    raw = preprocess(_raw(), P)
    assert cut_epochs(raw, np.array([SECONDS - P.epoch_seconds]), P).shape == (1, 4, 256)


def _save(raw: mne.io.BaseRaw, path) -> str:
    raw.save(path, overwrite=True, verbose="error")
    return str(path)


def test_eeg_features_from_a_manifest(tmp_path):
    a = _save(_raw(seed=1), tmp_path / "a_raw.fif")
    b = _save(_raw(seed=2, seconds=12.0), tmp_path / "b_raw.fif")
    trials = pd.DataFrame({"eeg_path": [a, b, a, b],
                           "eeg_onset": [1.0, 3.0, 10.0, 8.0],
                           "eeg_duration": [2.0] * 4})
    out, channels, _ = eeg_features(trials, P)
    assert out.shape == (4, 4, 256) and out.dtype == np.float32
    assert channels == ["C3", "C4", "P3", "P4"]
    # rows come back in manifest order, each cut from its own (preprocessed) recording
    for path, rows in ((a, [0, 2]), (b, [1, 3])):
        expected = cut_epochs(preprocess(mne.io.read_raw(path, preload=True, verbose="error"), P),
                              trials.loc[rows, "eeg_onset"].to_numpy(), P)
        np.testing.assert_allclose(out[rows], expected, rtol=1e-5, atol=1e-4)
    assert not np.allclose(out[0], out[1])
    # the line noise is gone and alpha kept in the features, too
    assert (_amplitude(out[0], P.sfreq, 50.0) < 1.0).all()


def test_eeg_features_channel_mismatch(tmp_path):
    a = _save(_raw(seed=1), tmp_path / "a_raw.fif")
    b = _save(_raw(seed=2, names=["Fz", "Cz", "Pz", "Oz"]), tmp_path / "b_raw.fif")
    trials = pd.DataFrame({"eeg_path": [a, b], "eeg_onset": [1.0, 1.0], "eeg_duration": [2.0, 2.0]})
    with pytest.raises(PipelineError, match="channels"):
        eeg_features(trials, P)


def test_eeg_epoch_is_the_centre_of_a_longer_window(tmp_path):
    a = _save(_raw(seed=1), tmp_path / "a_raw.fif")
    centred = eeg_features(pd.DataFrame({"eeg_path": [a], "eeg_onset": [2.0], "eeg_duration": [6.0]}), P)[0]
    exact = eeg_features(pd.DataFrame({"eeg_path": [a], "eeg_onset": [4.0], "eeg_duration": [2.0]}), P)[0]
    np.testing.assert_array_equal(centred, exact)


def test_window_shorter_than_the_epoch_is_an_error_naming_the_key(tmp_path):
    a = _save(_raw(seed=1), tmp_path / "a_raw.fif")
    with pytest.raises(PipelineError, match="eeg.epoch_seconds"):
        eeg_features(pd.DataFrame({"eeg_path": [a], "eeg_onset": [2.0], "eeg_duration": [1.0]}), P)


def test_eeg_features_same_for_any_n_jobs(tmp_path):
    paths = [_save(_raw(seed=s), tmp_path / f"{s}_raw.fif") for s in range(3)]
    trials = pd.DataFrame({"eeg_path": paths * 2, "eeg_onset": [1.0] * 3 + [5.0] * 3, "eeg_duration": [2.0] * 6})
    np.testing.assert_array_equal(eeg_features(trials, P, ComputeParams(n_jobs=1))[0],
                                  eeg_features(trials, P, ComputeParams(n_jobs=2))[0])


def test_eeg_features_window_past_end_names_the_file(tmp_path):
    a = _save(_raw(seed=1), tmp_path / "a_raw.fif")
    trials = pd.DataFrame({"eeg_path": [a], "eeg_onset": [SECONDS - 0.5], "eeg_duration": [2.0]})
    with pytest.raises(PipelineError, match="a_raw.fif"):
        eeg_features(trials, P)


# ------------------------------------------------------------------ a model's preprocessing, matched by predict

def test_matched_filters_bring_a_recording_to_what_the_model_saw_or_stop():
    """A model trained on 64 Hz recordings saw no low-pass (nothing above 32 Hz) and no notch: a
    256 Hz recording is low-passed at 32 Hz, without notch; a 64 Hz one is left as trained. A
    model trained at 256 Hz (low-passed at 40 Hz) cannot be given a 64 Hz recording: it lacks
    32-40 Hz. A notch above the band changes nothing, so 512 Hz meets a 256 Hz model as is."""
    from pipeline.features.eeg import applied_filters, matched_filters

    low = [applied_filters(P, 64.0)]
    assert low == [{"notch": None, "low_pass": None, "top": 32.0}]
    assert matched_filters(P, 256.0, low, "new.fif") == (None, 32.0)
    assert matched_filters(P, 64.0, low, "new.fif") == (None, None)
    assert matched_filters(P, 256.0, None, "new.fif") == (50.0, 40.0)  # training: the params' own
    high = [applied_filters(P, 256.0)]
    with pytest.raises(PipelineError) as info:
        matched_filters(P, 64.0, high, "new.fif")
    message = str(info.value)
    assert "\n" not in message and message.startswith("new.fif: sampled at 64 Hz it holds EEG up to 32 Hz") and \
        "the model saw EEG up to 40 Hz (low-passed at 40 Hz" in message
    assert matched_filters(P.model_copy(update={"notch": 45.0}), 512.0, high, "new.fif") == (45.0, 40.0)


def test_a_higher_rate_recording_brought_to_a_low_rate_model_is_closer_to_what_it_saw(tmp_path, realdata):
    """The real 128 Hz recording and its 64 Hz copy (what a model trained on 64 Hz recordings
    saw): brought to the model's band (low-passed at 32 Hz) the 128 Hz epochs are nearer the 64
    Hz ones than under the params' own 40 Hz low-pass."""
    from pipeline.features.eeg import preprocessing_record

    raw = mne.io.read_raw(realdata / "eeg" / "test_raw.set", preload=True, verbose="error")
    raw.copy().resample(64.0, verbose="error").save(tmp_path / "low_eeg.fif", verbose="error")
    raw.save(tmp_path / "high_eeg.fif", verbose="error")
    windows = {"eeg_onset": [10.0, 50.0, 100.0, 150.0], "eeg_duration": [2.0] * 4}
    table = lambda name: pd.DataFrame({"eeg_path": [str(tmp_path / name)] * 4, **windows})  # noqa: E731
    seen = preprocessing_record([tmp_path / "low_eeg.fif"], P)
    assert seen["sfreq"] == [64.0] and seen["resampled_to"] == 128.0
    trained = eeg_features(table("low_eeg.fif"), P)[0]
    error = lambda x: np.sqrt(np.mean((x - trained) ** 2) / np.mean(trained ** 2))  # noqa: E731
    assert error(eeg_features(table("high_eeg.fif"), P, seen=seen["filters"])[0]) < \
        0.75 * error(eeg_features(table("high_eeg.fif"), P)[0])
