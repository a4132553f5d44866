"""pipeline/data/readers.py: every EEG format read in place from the shared real recordings
(EEGLAB, EDF, BrainVision, BDF, Neuroscan), FIF and EAV .mat written here, audio through
soundfile; bad files are one PipelineError naming the file. Plus the filters of
pipeline/features/eeg.py adapted to a recording's sampling rate."""
from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import scipy.io
import soundfile as sf

from pipeline.data.readers import audio_seconds, eeg_seconds, read_audio, read_eeg
from pipeline.errors import PipelineError
from pipeline.features.eeg import adapt_filters, preprocess, recording_epochs

# name -> (read_kwargs, channels, sfreq, seconds)
REAL = {
    "test_raw.set": (None, 32, 128.0, 238.3125),
    "test_reduced.edf": (None, 138, 512.0, 6.0),
    "test_NO.vhdr": (None, 65, 5000.0, 0.4476),
    "test_bdf_stim_channel.bdf": (None, 3, 500.0, 10.0),
    "scan41_short.cnt": ({"data_format": "int16"}, 128, 400.0, 7.675),
}


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ real recordings, in place

@pytest.mark.parametrize("name", sorted(REAL))
def test_real_recording(realdata, name):
    read_kwargs, n_channels, sfreq, seconds = REAL[name]
    path = realdata / "eeg" / name
    raw = read_eeg(path, read_kwargs)
    assert len(raw.ch_names) == n_channels
    assert raw.info["sfreq"] == pytest.approx(sfreq)
    assert eeg_seconds(raw) == pytest.approx(seconds, abs=1e-3)
    assert set(raw.get_channel_types()) == {"eeg"}
    x = raw.get_data()
    assert x.shape == (n_channels, raw.n_times)
    assert np.isfinite(x).all()
    assert np.ptp(x, axis=1).max() > 0  # real signal, not zeros


def test_bdf_stim_channel_is_not_picked(realdata):
    path = realdata / "eeg" / "test_bdf_stim_channel.bdf"
    everything = mne.io.read_raw(path, preload=False, verbose="error")
    assert "stim" in everything.get_channel_types()  # the file does hold a stim channel
    raw = read_eeg(path)
    assert raw.ch_names == ["C3", "C4", "Cz"]
    assert "Status" not in raw.ch_names


def test_preload_false_reads_header_only(realdata):
    raw = read_eeg(realdata / "eeg" / "test_reduced.edf", preload=False)
    assert not raw.preload
    assert len(raw.ch_names) == 138 and eeg_seconds(raw) == pytest.approx(6.0)


def test_cnt_without_read_kwargs_names_file_and_option(realdata):
    path = realdata / "eeg" / "scan41_short.cnt"
    with pytest.raises(PipelineError) as info:
        read_eeg(path)
    message = _one_line(info)
    assert str(path) in message and "eeg.read_kwargs" in message


def test_cnt_with_wrong_read_kwargs_names_them(realdata):
    path = realdata / "eeg" / "scan41_short.cnt"
    with pytest.raises(PipelineError) as info:
        read_eeg(path, {"no_such_option": 1})
    message = _one_line(info)
    assert str(path) in message and "eeg.read_kwargs" in message and "no_such_option" in message


def test_real_channels_pick_in_given_order(realdata):
    path = realdata / "eeg" / "test_bdf_stim_channel.bdf"
    full = read_eeg(path).get_data()
    raw = read_eeg(path, channels=["Cz", "C3"])
    assert raw.ch_names == ["Cz", "C3"]
    np.testing.assert_array_equal(raw.get_data(), full[[2, 0]])


def test_real_missing_channel_names_file_and_channel(realdata):
    path = realdata / "eeg" / "test_reduced.edf"
    with pytest.raises(PipelineError) as info:
        read_eeg(path, channels=["A1", "Fpz"])
    message = _one_line(info)
    assert str(path) in message and "Fpz" in message and "eeg.channels" in message


# ------------------------------------------------------------------ FIF written here

CH = ["Fz", "Cz", "Pz", "Oz"]


def _fif(folder: Path, name="rec_raw.fif", sfreq=100.0, seconds=5.0, seed=0) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(CH), int(sfreq * seconds))) * 1e-5
    info = mne.create_info(CH, sfreq, "eeg")
    path = folder / name
    mne.io.RawArray(x, info, verbose="error").save(path, verbose="error")
    return path, x


def test_fif_round_trip(tmp_path):
    path, x = _fif(tmp_path)
    raw = read_eeg(path)
    assert raw.ch_names == CH and raw.info["sfreq"] == 100.0
    assert eeg_seconds(raw) == pytest.approx(5.0)
    np.testing.assert_allclose(raw.get_data(), x, rtol=1e-6, atol=1e-12)


def test_fif_only_eeg_channels(tmp_path):
    info = mne.create_info(["Fz", "Cz", "EOG1", "STI"], 100.0, ["eeg", "eeg", "eog", "stim"])
    path = tmp_path / "mixed_raw.fif"
    mne.io.RawArray(np.random.default_rng(1).standard_normal((4, 300)) * 1e-5, info,
                    verbose="error").save(path, verbose="error")
    assert read_eeg(path).ch_names == ["Fz", "Cz"]


def test_fif_without_eeg_channels(tmp_path):
    info = mne.create_info(["EOG1", "STI"], 100.0, ["eog", "stim"])
    path = tmp_path / "noeeg_raw.fif"
    mne.io.RawArray(np.ones((2, 300)), info, verbose="error").save(path, verbose="error")
    with pytest.raises(PipelineError) as info_:
        read_eeg(path)
    message = _one_line(info_)
    assert str(path) in message and "no EEG channels" in message


@pytest.mark.parametrize("channels", [["Oz", "Fz"], ["Pz", "Cz", "Fz"], ["Fz", "Cz", "Pz", "Oz"]])
def test_channels_pick_exactly_in_order(tmp_path, channels):
    path, x = _fif(tmp_path)
    raw = read_eeg(path, channels=channels)
    assert raw.ch_names == channels
    np.testing.assert_allclose(raw.get_data(), x[[CH.index(c) for c in channels]], rtol=1e-6, atol=1e-12)


def test_channel_not_in_file(tmp_path):
    path, _ = _fif(tmp_path)
    with pytest.raises(PipelineError) as info:
        read_eeg(path, channels=["Fz", "T7"])
    message = _one_line(info)
    assert str(path) in message and "T7" in message and "eeg.channels" in message


def test_missing_file(tmp_path):
    path = tmp_path / "ghost.edf"
    with pytest.raises(PipelineError, match="not found") as info:
        read_eeg(path)
    assert str(path) in _one_line(info)


@pytest.mark.parametrize("name", ["x.edf", "x.fif", "x.bdf", "x.set", "x.vhdr"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(PipelineError) as info:  # nothing but PipelineError escapes
        read_eeg(path)
    message = _one_line(info)
    assert str(path) in message and "cannot read EEG" in message


def test_unknown_extension(tmp_path):
    path = tmp_path / "x.xyz"
    path.write_bytes(b"not eeg")
    with pytest.raises(PipelineError) as info:
        read_eeg(path)
    assert str(path) in _one_line(info)


# ------------------------------------------------------------------ EAV .mat

def _eav_mat(path: Path, name="seg1", n_samples=1000, n_channels=30, n_trials=4, seed=0) -> np.ndarray:
    seg = 10 * np.random.default_rng(seed).standard_normal((n_samples, n_channels, n_trials))
    scipy.io.savemat(str(path), {name: seg})
    return seg


@pytest.mark.parametrize("name", ["seg1", "seg"])
def test_eav_mat(tmp_path, name):
    path = tmp_path / "subject01_eeg.mat"
    seg = _eav_mat(path, name)
    raw = read_eeg(path)
    assert len(raw.ch_names) == 30 and raw.info["sfreq"] == 500.0
    assert eeg_seconds(raw) == pytest.approx(8.0)
    x = raw.get_data()
    for k in range(4):
        np.testing.assert_allclose(x[:, k * 1000:(k + 1) * 1000], seg[:, :, k].T * 1e-6, rtol=1e-12)
    # trial k's window in seconds is [2k, 2k + 2)
    k = 2
    window = raw.get_data(start=int(2.0 * k * 500), stop=int(2.0 * (k + 1) * 500))
    np.testing.assert_allclose(window, seg[:, :, k].T * 1e-6, rtol=1e-12)
    # trial boundaries are marked so MNE filters each trial on its own
    edges = [a["onset"] for a in raw.annotations if a["description"] == "EDGE boundary"]
    assert edges == pytest.approx([2.0, 4.0, 6.0])


def test_eav_mat_channel_pick(tmp_path):
    path = tmp_path / "subject01_eeg.mat"
    seg = _eav_mat(path)
    raw = read_eeg(path, channels=["EEG03", "EEG01"])
    assert raw.ch_names == ["EEG03", "EEG01"]
    np.testing.assert_allclose(raw.get_data()[:, :1000], seg[:, [2, 0], 0].T * 1e-6, rtol=1e-12)


@pytest.mark.parametrize("content", [{"other": np.zeros((10, 3, 2))}, {"seg1": np.zeros((10, 3))}])
def test_eav_mat_without_eeg_array(tmp_path, content):
    path = tmp_path / "subject01_eeg.mat"
    scipy.io.savemat(str(path), content)
    with pytest.raises(PipelineError) as info:
        read_eeg(path)
    message = _one_line(info)
    assert str(path) in message and "seg1" in message


def test_eav_mat_corrupt(tmp_path):
    path = tmp_path / "subject01_eeg.mat"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(PipelineError) as info:
        read_eeg(path)
    assert str(path) in _one_line(info)


# ------------------------------------------------------------------ audio

@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
@pytest.mark.parametrize("native", [22050, 44100])
def test_audio_formats_mono_mix_and_resample(tmp_path, fmt, native):
    seconds, sr = 2.0, 16000
    t = np.arange(int(seconds * native)) / native
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    same = tmp_path / f"same.{fmt}"
    opposite = tmp_path / f"opposite.{fmt}"
    sf.write(same, np.column_stack([x, x]), native)
    sf.write(opposite, np.column_stack([x, -x]), native)
    assert audio_seconds(same) == pytest.approx(seconds, abs=1e-3)

    onset, duration = 0.5, 1.0
    y = read_audio(same, onset, duration, sr)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - duration * sr) <= 1
    # left = right = x: the mix is x (a 440 Hz tone of amplitude 0.5)
    assert np.sqrt(np.mean(y[100:-100] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    # left = x, right = -x: the mix is ~0
    z = read_audio(opposite, onset, duration, sr)
    assert abs(z.size - duration * sr) <= 1
    assert np.abs(z).max() < 0.05


def test_audio_native_rate_window_is_exact(tmp_path):
    native = 22050
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * native)
    path = tmp_path / "a.wav"
    sf.write(path, x, native, subtype="FLOAT")
    y = read_audio(path, 1.0, 0.5, None)
    np.testing.assert_allclose(y, x[native:native + native // 2].astype(np.float32), atol=1e-7)
    y = read_audio(path, 1.0, 0.5, native)  # same rate: no resampling
    np.testing.assert_allclose(y, x[native:native + native // 2].astype(np.float32), atol=1e-7)


def test_audio_missing_and_corrupt(tmp_path):
    ghost = tmp_path / "ghost.wav"
    with pytest.raises(PipelineError) as info:
        audio_seconds(ghost)
    assert str(ghost) in _one_line(info) and "not found" in str(info.value)
    with pytest.raises(PipelineError) as info:
        read_audio(ghost, 0.0, 1.0, 16000)
    assert str(ghost) in _one_line(info)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(1024))
    for call in (lambda: audio_seconds(bad), lambda: read_audio(bad, 0.0, 1.0, 16000)):
        with pytest.raises(PipelineError) as info:
            call()
        assert str(bad) in _one_line(info) and "cannot read audio" in str(info.value)


# ------------------------------------------------------------------ filters fit to the sampling rate

def test_adapt_filters_keeps_what_fits(params):
    p = params.eeg.model_copy(update=dict(l_freq=1.0, h_freq=40.0, notch=50.0))
    assert adapt_filters(p, 256.0, "rec.fif") == (50.0, 40.0, [])


def test_adapt_filters_drops_notch_at_nyquist(params):
    p = params.eeg.model_copy(update=dict(l_freq=1.0, h_freq=40.0, notch=50.0))
    notch, h_freq, notes = adapt_filters(p, 100.0, "some/rec.edf")
    assert notch is None and h_freq == 40.0
    assert len(notes) == 1 and "some/rec.edf" in notes[0] and "eeg.notch" in notes[0]


def test_adapt_filters_drops_h_freq_at_nyquist(params):
    p = params.eeg.model_copy(update=dict(l_freq=1.0, h_freq=40.0, notch=None))
    notch, h_freq, notes = adapt_filters(p, 64.0, "low_rate.set")
    assert notch is None and h_freq is None
    assert len(notes) == 1 and "low_rate.set" in notes[0] and "eeg.h_freq" in notes[0]


def test_adapt_filters_drops_both(params):
    p = params.eeg.model_copy(update=dict(l_freq=1.0, h_freq=40.0, notch=50.0))
    notch, h_freq, notes = adapt_filters(p, 64.0, "r.fif")
    assert (notch, h_freq) == (None, None) and len(notes) == 2


@pytest.mark.parametrize("l_freq", [32.0, 40.0])
def test_adapt_filters_l_freq_at_nyquist_raises(params, l_freq):
    p = params.eeg.model_copy(update=dict(l_freq=l_freq, h_freq=45.0, notch=None))
    with pytest.raises(PipelineError) as info:
        adapt_filters(p, 64.0, "r.fif")
    message = _one_line(info)
    assert "r.fif" in message and "eeg.l_freq" in message


def test_real_128hz_recording_with_h_freq_70_warns(realdata, params):
    path = realdata / "eeg" / "test_raw.set"
    p = params.eeg.model_copy(update=dict(h_freq=70.0, sfreq=128.0, notch=50.0, epoch_seconds=2.0))
    epochs, channels, notes, _ = recording_epochs(str(path), np.array([10.0, 20.0]), np.array([2.0, 2.0]), p)
    assert len(notes) == 1  # the 50 Hz notch fits under 64 Hz, the 70 Hz low-pass does not
    assert str(path) in notes[0] and "eeg.h_freq" in notes[0]
    assert epochs.shape == (2, 32, 256) and len(channels) == 32
    assert np.isfinite(epochs).all()


def test_preprocess_resamples(tmp_path, params):
    path, _ = _fif(tmp_path, sfreq=256.0, seconds=10.0)
    raw = read_eeg(path)
    p = params.eeg.model_copy(update=dict(l_freq=1.0, h_freq=40.0, notch=50.0, sfreq=128.0, reference="average"))
    assert adapt_filters(p, raw.info["sfreq"], path)[2] == []
    assert preprocess(raw, p, path) is raw
    assert raw.info["sfreq"] == 128.0 and raw.n_times == 1280
    # average reference: channels sum to ~0 at every sample
    assert np.abs(raw.get_data().sum(axis=0)).max() < 1e-12


# ------------------------------------------------------------------ bad channels: one rule for every source

LOCS = "test_chans.locs"


def _positioned_fif(tmp_path, realdata, bads=("F3",), montage=True, edit=None) -> Path:
    """test_raw.set with its real channel names, `bads` marked bad, saved as FIF (with or without
    the positions of test_chans.locs); `edit(raw)` may change the data first."""
    from conftest import positioned_recording

    raw = positioned_recording(realdata, bads)
    if not montage:
        raw.set_montage(None)
    if edit is not None:
        edit(raw)
    path = tmp_path / "recording_eeg.fif"
    raw.save(path, overwrite=True, verbose="error")
    return path


def _kill_f3(raw):
    raw._data[raw.ch_names.index("F3")] = 0.0  # a dead electrode


def test_a_bad_channel_is_interpolated_from_the_file_s_positions(tmp_path, realdata):
    """F3, dead (flat) and marked bad in the file, comes back as MNE's spherical-spline estimate
    from its neighbours: close to the real F3 the file held before it died."""
    from conftest import positioned_recording

    truth = positioned_recording(realdata, ()).get_data(picks="F3")[0]
    raw = read_eeg(_positioned_fif(tmp_path, realdata, edit=_kill_f3))
    assert raw.info["bads"] == [] and len(raw.ch_names) == 32
    estimate = raw.get_data(picks="F3")[0]
    assert np.ptp(estimate) > 0 and np.corrcoef(estimate, truth)[0, 1] > 0.8


@pytest.mark.parametrize("montage", [LOCS, "standard_1020"])
def test_eeg_montage_gives_positions_by_channel_name(tmp_path, realdata, montage):
    """A file without positions: eeg.montage (the recording's own .locs file, or MNE's
    standard_1020 matched by name whatever the case, where EOG1/EOG2 have none and take no part)
    lets the dead F3 be interpolated."""
    from conftest import positioned_recording

    truth = positioned_recording(realdata, ()).get_data(picks="F3")[0]
    path = _positioned_fif(tmp_path, realdata, montage=False, edit=_kill_f3)
    spec = str(realdata / "eeg" / LOCS) if montage == LOCS else montage
    estimate = read_eeg(path, montage=spec).get_data(picks="F3")[0]
    assert np.corrcoef(estimate, truth)[0, 1] > 0.8


def test_a_bad_channel_without_positions_stops_naming_it_and_the_two_ways_out(tmp_path, realdata):
    path = _positioned_fif(tmp_path, realdata, bads=("F3", "Fz"), montage=False)
    with pytest.raises(PipelineError) as info:
        read_eeg(path, preload=False)
    message = _one_line(info)
    assert message.startswith(f"{path}: bad channel(s) F3, Fz cannot be interpolated") and \
        "eeg.montage" in message and "eeg.drop_channels" in message
    raw = read_eeg(path, drop_channels=("F3", "Fz", "Oz_not_there"))  # dropped from every recording
    assert "F3" not in raw.ch_names and "Fz" not in raw.ch_names and len(raw.ch_names) == 30
    with pytest.raises(PipelineError) as info:
        read_eeg(path, drop_channels=tuple(raw.ch_names) + ("F3",))
    assert _one_line(info) == f"{path}: eeg.drop_channels leaves 1 EEG channel(s) of this recording; at least 2 are needed"
    with pytest.raises(PipelineError, match="eeg.montage = 'standard_9999' is not allowed"):
        read_eeg(path, montage="standard_9999")


def test_one_file_inside_and_outside_bids_gives_the_same_eeg_features(tmp_path, realdata, downloaded_bids, params):
    """sub-02's recording of the downloaded BIDS tree (F3 bad in channels.tsv, positions in
    electrodes.tsv) and the same recording as a FIF outside BIDS (F3 bad in the file, dead) give
    the same features: both interpolate F3 before the average reference."""
    import pandas as pd

    from pipeline.features.eeg import eeg_features

    inside = next(p for p in downloaded_bids["recordings"] if "sub-02" in str(p))
    outside = _positioned_fif(tmp_path, realdata, edit=_kill_f3)
    p = params.eeg.model_copy(update=dict(epoch_seconds=2.0))
    windows = {"eeg_onset": [10.0, 50.0, 100.0], "eeg_duration": [2.0] * 3}
    a, channels, _ = eeg_features(pd.DataFrame({"eeg_path": [str(inside)] * 3, **windows}), p)
    b, same, _ = eeg_features(pd.DataFrame({"eeg_path": [str(outside)] * 3, **windows}), p)
    assert channels == same and "F3" in channels
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()  # BrainVision stores 0.1 uV steps
