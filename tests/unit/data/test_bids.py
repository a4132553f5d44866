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


# ------------------------------------------------------------------ BIDS as downloaded

def _copy(downloaded, tmp_path):
    import shutil

    return shutil.copytree(downloaded["root"], tmp_path / "ds")


def test_a_downloaded_tree_gives_exactly_the_raw_recordings_class_trials(params, downloaded_bids):
    """derivatives/ and sourcedata/ copies of sub-01 add no recording and no trial; MNE's
    hierarchical tags match by tag (`emotion/happy` is a `happy` trial, the class named as the
    label); button responses and the BAD_ACQ_SKIP row are no trials; sub-01's two runs stay one
    subject."""
    table, extras = BIDSSource().trials(_params(params, downloaded_bids["root"], labels=["happy", "sad"]),
                                        BadInput("fail"))
    assert len(table) == downloaded_bids["trials"] == 40
    assert sorted(extras["bids_recordings"]) == sorted(str(p) for p in downloaded_bids["recordings"])
    assert not table["eeg_path"].str.contains("derivatives|sourcedata").any()
    assert table["label"].value_counts().to_dict() == {"happy": 20, "sad": 20}
    assert table.groupby("subject").size().to_dict() == {"sub-01": 16, "sub-02": 8, "sub-03": 8, "sub-04": 8}
    assert table["where"].str.contains(r"\(emotion/happy\)").sum() == 20


def test_without_labels_every_value_is_a_class_but_bad_and_edge_annotations(tmp_path, params, downloaded_bids):
    """labels null: every value is a class as written (`emotion/happy`, the button responses),
    never BAD_... or EDGE_... rows, whatever their case."""
    root = _copy(downloaded_bids, tmp_path)
    for events_file in root.glob("sub-*/ses-1/eeg/*_events.tsv"):
        events = pd.read_csv(events_file, sep="\t", keep_default_na=False)
        events.loc[events["trial_type"] == "response/button", "duration"] = 0.25
        extra = events.iloc[[0, 0]].assign(onset=[60.0, 62.0], trial_type=["EDGE boundary", "bad_blink"])
        pd.concat([events, extra]).to_csv(events_file, sep="\t", index=False)
    table, _ = BIDSSource().trials(_params(params, root), BadInput("fail"))
    assert table["label"].value_counts().to_dict() == {"response/button": 40, "emotion/happy": 20, "emotion/sad": 20}


def test_a_value_with_two_labels_tags_is_bad_input_naming_both(tmp_path, params, downloaded_bids):
    p = _params(params, downloaded_bids["root"], labels=["happy", "emotion"])
    with pytest.raises(PipelineError, match=r"value 'emotion/\w+' has the tags of 'happy' and 'emotion'|"
                                            r"value 'emotion/sad' has the tags of") as info:
        BIDSSource().trials(p, BadInput("fail"))
    assert "\n" not in str(info.value) and "_events.tsv event at" in str(info.value)
    skip = BadInput("skip")
    table, _ = BIDSSource().trials(p, skip)
    assert {d["kind"] for d in skip.dropped} == {"ambiguous_label"} and len(skip.dropped) == 20  # the happy ones
    assert set(table["label"]) == {"emotion"} and len(table) == 20  # sad: only the 'emotion' tag


def test_a_next_window_that_reaches_the_next_trial_and_two_trials_at_one_onset_are_bad_input(tmp_path, params,
                                                                                           write_bids, realdata):
    """The issue's events: anger@10, press1@20, joy@60, press1@70, exit@100 with next:exit: anger's
    window would hold joy's trial (its end marker is missing); and two labels at one onset."""
    root = write_bids(tmp_path / "ds", realdata / "eeg" / "test_raw.set", subjects=("01",))
    events_file = next((root / "sub-01" / "eeg").glob("*_events.tsv"))
    pd.DataFrame({"onset": [10.0, 20.0, 60.0, 70.0, 100.0], "duration": 0.0,
                  "trial_type": ["anger", "press1", "joy", "press1", "exit"]}).to_csv(events_file, sep="\t", index=False)
    p = _params(params, root, trial_end="next:exit", labels=["anger", "joy"])
    with pytest.raises(PipelineError, match=r"_events.tsv event at 10.0 s \(anger\): its window 10-100 s \(to the next "
                                            r"'exit'\) reaches the next trial's onset at 60 s"):
        BIDSSource().trials(p, BadInput("fail"))
    skip = BadInput("skip")
    table, _ = BIDSSource().trials(p, skip)
    assert table[["label", "eeg_onset", "eeg_duration"]].values.tolist() == [["joy", 60.0, 40.0]]
    assert [d["kind"] for d in skip.dropped] == ["overlapping_window"]

    pd.DataFrame({"onset": [10.0, 10.0, 30.0], "duration": 2.0,
                  "trial_type": ["anger", "joy", "joy"]}).to_csv(events_file, sep="\t", index=False)
    p = _params(params, root, labels=["anger", "joy"])
    with pytest.raises(PipelineError, match=r"event at 10.0 s \(anger\): 2 trials start at 10 s, on one EEG window"):
        BIDSSource().trials(p, BadInput("fail"))
    skip = BadInput("skip")
    table, _ = BIDSSource().trials(p, skip)
    assert table["eeg_onset"].tolist() == [30.0] and [d["kind"] for d in skip.dropped] == ["same_onset"] * 2


def test_bad_and_edge_annotations_are_no_trials_unless_a_label_names_them(params):
    from pipeline.data.bids import class_of

    p = _params(params, ".")
    assert [class_of(v, p.data.bids)[0] for v in ("BAD_ACQ_SKIP", "EDGE boundary", "bad blink", "emotion/happy")] == \
        [None, None, None, "emotion/happy"]
    labelled = _params(params, ".", labels=["bad", "good"]).data.bids
    assert [class_of(v, labelled)[0] for v in ("valence/bad", "BAD_ACQ_SKIP", "good")] == ["bad", None, "good"]
