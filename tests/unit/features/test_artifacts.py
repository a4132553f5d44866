"""pipeline/features/artifacts.py on the real EEGLAB recording with its real positions
(test_chans.locs): ICLabel finds its blinks, removing them takes the blinks out of the frontal
channels and leaves occipital alpha alone; seeded; without positions one line naming the keys."""
from __future__ import annotations

import mne
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.features.artifacts import fit_ica, remove_components

from conftest import positioned_recording

FRONTAL = ["FPz", "F3", "Fz", "F4"]
OCCIPITAL = ["O1", "Oz", "O2"]


@pytest.fixture(scope="module")
def recording(realdata):
    return positioned_recording(realdata, ())


@pytest.fixture(scope="module")
def eye_only(params):
    return params.eeg.artifacts.model_copy(update={"ica": True, "iclabel_reject": {"eye blink": 0.8}})


def _power(raw, picks, low, high, centres=None, half=0.25):
    x = raw.copy().filter(low, high, verbose="error").get_data(picks=picks)
    if centres is not None:
        w = int(half * raw.info["sfreq"])
        x = np.concatenate([x[:, max(0, c - w):c + w] for c in centres], axis=1)
    return float(np.mean(x ** 2))


def test_iclabel_finds_the_blinks_and_removing_them_spares_occipital_alpha(recording, eye_only):
    """One component is ICLabel's 'eye blink' (p > 0.9); removing it cuts frontal 1-4 Hz power in
    the recording's blink windows (find_eog_events on EOG1) by at least half, and moves
    occipital 8-13 Hz power by less than 10%."""
    ica, components = fit_ica(recording, eye_only, "test_raw.set")
    removed = [c for c in components if c["removed"]]
    assert [(c["label"], c["removed_as"]) for c in removed] == [("eye blink", "eye blink")] and removed[0]["p"] > 0.9
    assert len(components) == 15 and all(set(c) == {"component", "label", "p", "removed", "removed_as"}
                                         for c in components)
    clean = recording.copy()
    remove_components(clean, ica, components)
    blinks = mne.preprocessing.find_eog_events(recording, ch_name="EOG1", verbose="error")[:, 0] - recording.first_samp
    assert len(blinks) >= 10
    assert _power(clean, FRONTAL, 1.0, 4.0, blinks) < 0.5 * _power(recording, FRONTAL, 1.0, 4.0, blinks)
    assert abs(_power(clean, OCCIPITAL, 8.0, 13.0) / _power(recording, OCCIPITAL, 8.0, 13.0) - 1) < 0.10


def test_ica_is_seeded_from_params(recording, eye_only):
    few = eye_only.model_copy(update={"ica_components": 5.0})  # a smaller fit: the seed's effect is the point
    first = fit_ica(recording, few, "r")[0].get_components()
    assert np.array_equal(first, fit_ica(recording, few, "r")[0].get_components())
    other = fit_ica(recording, few.model_copy(update={"seed": 1}), "r")[0].get_components()
    assert not np.array_equal(first, other)


def test_ica_without_positions_is_one_line_naming_the_keys(recording, eye_only):
    bare = recording.copy().set_montage(None)
    with pytest.raises(PipelineError) as info:
        fit_ica(bare, eye_only, "bare.fif")
    message = str(info.value)
    assert "\n" not in message and message.startswith("bare.fif: eeg.artifacts.ica needs every channel's position")
    assert "eeg.montage" in message and "eeg.drop_channels" in message


def test_a_count_of_components_is_capped_at_the_data_s_rank(recording, eye_only):
    """With two channels interpolated the average-referenced data has rank 32 - 1 - 2 = 29: 40
    components asked for are 29 fitted, not a multi-line MNE error or an unstable fit."""
    from pipeline.data.readers import interpolate_bad_channels

    raw = recording.copy()
    raw.info["bads"] = ["F3", "Oz"]
    interpolate_bad_channels(raw)
    assert len(fit_ica(raw, eye_only.model_copy(update={"ica_components": 40.0}), "r")[1]) == 29


@pytest.mark.parametrize("method", ["picard", "fastica"])
def test_every_ica_method_gives_labelled_components(recording, eye_only, method):
    few = eye_only.model_copy(update={"ica_method": method, "ica_components": 5.0})
    components = fit_ica(recording, few, "r")[1]
    assert len(components) == 5 and all(0 < c["p"] <= 1 for c in components)


# autoreject (local) over one recording's trial windows


@pytest.fixture(scope="module")
def windows(recording, params):
    """30 windows of 2 s of the real recording, band-passed 1-40 Hz, and their data in uV."""
    from pipeline.features.eeg import trial_windows

    p = params.eeg.model_copy(update={"epoch_seconds": 2.0})
    raw = recording.copy().filter(1.0, 40.0, verbose="error")
    epochs, trial_of = trial_windows(raw, np.arange(30) * 4.0 + 2.0, p)
    assert list(trial_of) == list(range(30))
    return epochs, epochs.get_data(units="uV")


def _with(epochs, data):
    return mne.EpochsArray(data * 1e-6, epochs.info, verbose="error")


def test_autoreject_repairs_a_trial_s_bad_channel_and_drops_a_ruined_trial(windows, eye_only):
    """A 400 uV oscillation on Oz of trial 4 is interpolated away (the trial is repaired, its other
    channels untouched); 800 uV on every channel of trial 9 drops it; the verdicts name them."""
    from pipeline.features.artifacts import repair_epochs

    epochs, data = windows
    t = np.arange(data.shape[-1]) / epochs.info["sfreq"]
    spoiled = data.copy()
    oz = epochs.ch_names.index("Oz")
    spoiled[4, oz] += 400 * np.sin(2 * np.pi * 7 * t)
    spoiled[9] += 800 * np.sin(2 * np.pi * 3 * t)
    out, verdicts = repair_epochs(_with(epochs, spoiled), eye_only.model_copy(update={"autoreject": True}), "r")
    assert out.shape == data.shape and len(verdicts) == 30
    assert verdicts[4]["status"] == "repaired" and "Oz" in verdicts[4]["channels"]
    assert verdicts[9]["status"] == "dropped" and len(verdicts[9]["channels"]) >= len(epochs.ch_names) // 2
    untouched = [k for k, name in enumerate(epochs.ch_names) if name not in verdicts[4]["channels"]]
    np.testing.assert_allclose(out[4, untouched], spoiled[4, untouched], rtol=1e-5, atol=1e-3)
    assert np.ptp(out[4, oz]) < 0.5 * np.ptp(spoiled[4, oz])  # the oscillation is gone
    np.testing.assert_allclose(out[9], spoiled[9], rtol=1e-5, atol=1e-3)  # a dropped trial keeps its data
    assert sum(v["status"] == "dropped" for v in verdicts) <= 3  # the real trials mostly stay


def test_autoreject_is_seeded_and_needs_positions(windows, eye_only):
    from pipeline.features.artifacts import repair_epochs

    epochs, data = windows
    p = eye_only.model_copy(update={"autoreject": True})
    first = repair_epochs(_with(epochs, data), p, "r")
    again = repair_epochs(_with(epochs, data), p, "r")
    assert first[1] == again[1] and np.array_equal(first[0], again[0])
    bare = _with(epochs, data).set_montage(None)
    with pytest.raises(PipelineError) as info:
        repair_epochs(bare, p, "bare.fif")
    message = str(info.value)
    assert "\n" not in message and message.startswith("bare.fif: eeg.artifacts.autoreject needs every channel's position")
