"""data.source bids (pipeline/data/bids.py): recordings found with mne-bids, trial windows in the
three encodings of data.bids.trial_end, read with read_raw_bids, and bad input. Fixtures are
written by mne-bids' own write_raw_bids from the real recording in ../shared/realdata/eeg."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data.bids import BIDSSource
from pipeline.data.manifest import BadInput
from pipeline.data.readers import read_eeg
from pipeline.errors import PipelineError
from pipeline.params import ParamsError, parse_params


def _params(params, root, **bids):
    raw = params.model_dump(mode="json")
    raw.pop("branches")
    raw["data"].update(source="bids", root=str(root))
    raw["data"]["bids"].update(bids)
    return parse_params(raw)


def _events(root, subject="01", session=None) -> pd.DataFrame:
    folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "eeg"
    return pd.read_csv(next(folder.glob("*_events.tsv")), sep="\t", keep_default_na=False)


@pytest.mark.parametrize("trial_end,bids", [
    ("duration", {"trial_end": "duration"}),
    ("fixed", {"trial_end": "fixed", "trial_seconds": 2.0}),
    ("next:exit", {"trial_end": "next:exit", "labels": ["rt", "square"]}),  # press1 and exit are no classes
])
def test_every_window_encoding_gives_the_same_trials(tmp_path, params, realdata, write_bids, trial_end, bids):
    """The same events as onset + duration, as fixed 2 s windows and as 'exit' markers 2 s later
    give the same trials: one per labelled event, 2 s from its onset; 'press1' and 'exit' are no
    trials; the subject is the BIDS subject across its two sessions."""
    root = write_bids(tmp_path / "ds", realdata / "eeg" / "test_raw.set", subjects=("01", "02"), sessions=("a", "b"),
                      trial_end=trial_end)
    table, extras = BIDSSource().trials(_params(params, root, **bids), BadInput("fail"))
    assert len(extras["bids_recordings"]) == 4 and len(table) == 4 * 8
    assert sorted(table["label"].unique()) == ["rt", "square"] and (table["label"].value_counts() == 16).all()
    np.testing.assert_allclose(table["eeg_duration"].astype(float), 2.0, atol=1e-6)
    assert set(table["subject"]) == {"sub-01", "sub-02"}
    events = _events(root, "01", "a")
    first = table[table["eeg_path"].str.contains("sub-01_ses-a")]
    labelled = events[events["trial_type"].isin(["rt", "square"])]
    np.testing.assert_allclose(sorted(first["eeg_onset"].astype(float)), sorted(labelled["onset"]), atol=1e-6)
    assert (table["audio_path"] == "").all()


def test_a_recording_is_read_with_read_raw_bids_and_its_channel_types(tmp_path, realdata, write_bids):
    """read_eeg reads a recording inside a BIDS dataset with mne-bids: a channel that
    channels.tsv marks as EOG is no EEG channel any more."""
    root = write_bids(tmp_path / "ds", realdata / "eeg" / "test_raw.set", subjects=("01",))
    eeg = next((root / "sub-01" / "eeg").glob("*_eeg.set"))
    channels_file = next((root / "sub-01" / "eeg").glob("*_channels.tsv"))
    channels = pd.read_csv(channels_file, sep="\t", keep_default_na=False)
    first = channels["name"].iloc[0]
    channels.loc[0, "type"] = "EOG"
    channels.to_csv(channels_file, sep="\t", index=False)
    names = read_eeg(eeg, preload=False).ch_names
    assert first not in names and len(names) == len(channels) - 1


def test_labels_select_classes_and_value_stands_in_for_trial_type(tmp_path, params, realdata, write_bids):
    root = write_bids(tmp_path / "ds", realdata / "eeg" / "test_raw.set", subjects=("01",))
    table, _ = BIDSSource().trials(_params(params, root, labels=["rt"]), BadInput("fail"))
    assert set(table["label"]) == {"rt"} and len(table) == 4
    events_file = next((root / "sub-01" / "eeg").glob("*_events.tsv"))
    events = pd.read_csv(events_file, sep="\t", keep_default_na=False)
    events.drop(columns="trial_type").assign(value=events["trial_type"]).to_csv(events_file, sep="\t", index=False)
    table, _ = BIDSSource().trials(_params(params, root), BadInput("fail"))
    assert sorted(set(table["label"])) == ["rt", "square"] and len(table) == 8


def test_bad_input_is_named_and_skipped_or_fatal_under_on_error(tmp_path, params, realdata, write_bids):
    """An event whose window runs past the recording's end, a missing label column and no
    matching recordings: each named, with the file; `skip` records the trial and goes on."""
    root = write_bids(tmp_path / "ds", realdata / "eeg" / "test_raw.set", subjects=("01", "02"))
    events_file = next((root / "sub-01" / "eeg").glob("*_events.tsv"))
    events = pd.read_csv(events_file, sep="\t", keep_default_na=False)
    events.loc[0, "onset"] = 237.0  # the recording lasts 238.3 s: 237 + 2 is past it
    events.to_csv(events_file, sep="\t", index=False)
    p = _params(params, root)
    with pytest.raises(PipelineError, match=r"sub-01_task-emo_events.tsv event at 237.0 s .*past the recording's end"):
        BIDSSource().trials(p, BadInput("fail"))
    skip = BadInput("skip")
    table, _ = BIDSSource().trials(p, skip)
    assert len(table) == 15 and [d["kind"] for d in skip.dropped] == ["out_of_range"]

    other = next((root / "sub-02" / "eeg").glob("*_events.tsv"))
    pd.read_csv(other, sep="\t").drop(columns=["trial_type", "value"]).to_csv(other, sep="\t", index=False)
    skip = BadInput("skip")
    table, _ = BIDSSource().trials(p, skip)
    assert set(table["subject"]) == {"sub-01"} and [d["kind"] for d in skip.dropped] == ["out_of_range", "bad_label"]
    assert skip.dropped[1]["where"].endswith("sub-02_task-emo_events.tsv")
    assert skip.dropped[1]["reason"].startswith("no onset or no label column 'trial_type' (data.bids.label_column)")
    events.astype({"onset": str}).assign(onset=["n/a", *events["onset"].astype(str)[1:]]).to_csv(
        events_file, sep="\t", index=False)  # no number: a bad time, not a window over the whole recording
    skip = BadInput("skip")
    BIDSSource().trials(p, skip)
    assert [d["kind"] for d in skip.dropped] == ["bad_time", "bad_label"]
    with pytest.raises(PipelineError, match="no eeg recordings match data.bids .task rest"):
        BIDSSource().trials(_params(params, root, task="rest"), BadInput("fail"))
    with pytest.raises(PipelineError, match="not a BIDS dataset"):
        BIDSSource().trials(_params(params, tmp_path), BadInput("fail"))


@pytest.mark.parametrize("bids,words", [
    ({"trial_end": "until"}, "duration, fixed or next:<value>"),
    ({"trial_end": "next:"}, "duration, fixed or next:<value>"),
    ({"trial_end": "fixed"}, "data.bids.trial_seconds"),
    ({"trial_seconds": -1.0}, "null or > 0"),
])
def test_bad_bids_params_name_the_key(params, bids, words):
    with pytest.raises(ParamsError, match="params: data.bids.") as info:
        _params(params, ".", **bids)
    assert words in str(info.value)


def test_audio_comes_from_stim_file_or_the_bep047_beh_folder(tmp_path, params, realdata, write_bids):
    """A trial's audio: the events' stim_file under stimuli/ (read from its start), else the
    recording's beh/<entities>_audio.wav (aligned with the EEG: the trial's own onset)."""
    import soundfile as sf

    root = write_bids(tmp_path / "ds", realdata / "eeg" / "test_raw.set", subjects=("01", "02"))
    tone = np.zeros(16000, np.float32)
    (root / "stimuli").mkdir()
    sf.write(root / "stimuli" / "voice.wav", tone, 16000)
    events_file = next((root / "sub-01" / "eeg").glob("*_events.tsv"))
    pd.read_csv(events_file, sep="\t").assign(stim_file="voice.wav").to_csv(events_file, sep="\t", index=False)
    (root / "sub-02" / "beh").mkdir()
    sf.write(root / "sub-02" / "beh" / "sub-02_task-emo_audio.wav", tone, 16000)
    table, _ = BIDSSource().trials(_params(params, root), BadInput("fail"))
    first, second = table[table["subject"] == "sub-01"], table[table["subject"] == "sub-02"]
    assert first["audio_path"].str.endswith("stimuli/voice.wav").all() and (first["audio_onset"] == 0.0).all()
    assert second["audio_path"].str.endswith("sub-02/beh/sub-02_task-emo_audio.wav").all()
    np.testing.assert_allclose(second["audio_onset"].astype(float), second["eeg_onset"].astype(float))
