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
