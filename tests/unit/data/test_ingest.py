"""pipeline/data/ingest.py through a user manifest: every kind of bad input stops ingest with
one line naming the file or manifest row under `data.on_error: fail`, and is dropped and listed
in the report under `skip`; a broken manifest stops ingest whatever `on_error` says."""
from __future__ import annotations

import math
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.data.ingest import ingest
from pipeline.errors import PipelineError

from factories import (DURATION, ONSETS, SECONDS, SFREQ, SR, SUBJECTS, make_dataset, one_line, run_params, write_fif,
                       write_manifest, write_wav)

# ------------------------------------------------------------------ good input

def test_good_manifest_keeps_every_trial(params, dataset):
    root, df = dataset
    write_manifest(root, df)
    manifest, classes, _, report = ingest(run_params(params, root))
    assert len(manifest) == 12
    assert classes == ["a", "b"]
    assert list(manifest["subject"]) == [s for s in SUBJECTS for _ in ONSETS]
    assert list(manifest["eeg_onset"]) == list(ONSETS) * 3
    assert (manifest["eeg_duration"] == DURATION).all() and (manifest["audio_duration"] == DURATION).all()
    assert list(manifest["label"]) == ["a", "b"] * 6
    # paths are relative to the working directory when inside it
    assert list(manifest["eeg_path"].unique()) == [f"{s}_eeg.fif" for s in SUBJECTS]
    assert list(manifest["audio_path"].unique()) == [f"{s}_audio.wav" for s in SUBJECTS]
    assert report["trials_in"] == report["trials_kept"] == 12
    assert report["trials_dropped"] == report["problems"] == 0
    assert report["dropped"] == [] and report["dropped_by_kind"] == {}
    assert report["subjects_in"] == report["subjects_kept"] == 3 and report["subjects_dropped"] == []
    assert report["modalities"] == ["eeg", "mel", "topo", "acoustic"]
    assert report["source"] == "manifest" and report["on_error"] == "fail"


def test_paths_outside_cwd_are_absolute(params, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    write_manifest(data, make_dataset(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    manifest, _, _, _ = ingest(run_params(params, data))
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in manifest["eeg_path"])


def test_blank_times_mean_the_whole_file(params, dataset):
    root, df = dataset
    df = df.groupby("subject").head(1).reset_index(drop=True)  # one trial per subject, the whole file
    df["label"] = ["a", "b", "a"]
    for col in ("eeg_onset", "eeg_duration", "audio_onset", "audio_duration"):
        df[col] = ""
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root))
    assert len(manifest) == 3 and report["dropped"] == []
    assert (manifest["eeg_onset"] == 0.0).all()
    assert manifest["eeg_duration"].to_numpy() == pytest.approx([SECONDS] * 3)
    assert (manifest["audio_onset"] == 0.0).all()
    assert manifest["audio_duration"].to_numpy() == pytest.approx([SECONDS] * 3)


def test_blank_duration_runs_to_the_end(params, dataset):
    root, df = dataset
    df.loc[2, "eeg_duration"] = ""
    write_manifest(root, df)
    manifest, _, _, _ = ingest(run_params(params, root))
    assert manifest.loc[2, "eeg_onset"] == 8.0 and manifest.loc[2, "eeg_duration"] == pytest.approx(12.0)


def test_window_ending_exactly_at_the_end(params, dataset):
    root, df = dataset
    df.loc[3, ["eeg_onset", "audio_onset"]] = SECONDS - DURATION
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root))
    assert len(manifest) == 12 and report["dropped"] == []


def test_manifest_without_audio_columns(params, dataset):
    root, df = dataset
    write_manifest(root, df.drop(columns=["audio_path", "audio_onset", "audio_duration"]))
    manifest, _, _, report = ingest(run_params(params, root))
    assert len(manifest) == 12
    assert report["modalities"] == ["eeg", "topo"]
    assert (manifest["audio_path"] == "").all()
    assert manifest["audio_onset"].isna().all() and manifest["audio_duration"].isna().all()


def test_label_order_follows_data_classes(params, dataset):
    root, df = dataset
    write_manifest(root, df)
    _, classes, _, report = ingest(run_params(params, root, classes=("b", "a")))
    assert classes == ["b", "a"] and report["classes"] == ["b", "a"]


def test_numeric_subjects_and_labels_stay_text(params, dataset):
    root, df = dataset
    df["subject"] = df["subject"].map({"sub-01": "007", "sub-02": "010", "sub-03": "3"})
    df["label"] = df["label"].map({"a": "01", "b": "2"})
    write_manifest(root, df)
    manifest, classes, _, _ = ingest(run_params(params, root))
    assert sorted(manifest["subject"].unique()) == ["007", "010", "3"]
    assert classes == ["01", "2"]


# ------------------------------------------------------------------ bad trials: fail and skip

def _corrupt(root: Path, name: str) -> str:
    (root / name).write_bytes(np.random.default_rng(1).bytes(4096))
    return name


def _nan(root, df):
    # NaN at 5.5 s of sub-02's recording: inside the trial at 4-8 s (row index 5) only
    write_fif(root / "sub-02_eeg.fif", seed=1, edit=lambda x: x.__setitem__((2, int(5.5 * SFREQ)), np.nan))


def _flat(root, df):
    # Pz constant over 8-12 s of sub-03's recording: the trial of row index 10 only
    write_fif(root / "sub-03_eeg.fif", seed=2, edit=lambda x: x.__setitem__((2, slice(800, 1200)), 3e-6))


def _set(idx, **values):
    def edit(root, df):
        for col, value in values.items():
            df.loc[idx, col] = value
    return edit


def _then(*edits):
    def edit(root, df):
        for e in edits:
            e(root, df)
    return edit


# case -> (edit(root, df), bad row index, kind, substrings of the message, classes)
CASES = {
    "missing_eeg": (_set(4, eeg_path="ghost_eeg.fif"), 4, "missing_file", ["ghost_eeg.fif", "not found"], None),
    "missing_audio": (_set(5, audio_path="ghost.wav"), 5, "missing_file", ["ghost.wav", "not found"], None),
    "corrupt_fif": (_then(lambda r, d: _corrupt(r, "corrupt_raw.fif"), _set(6, eeg_path="corrupt_raw.fif")),
                    6, "unreadable", ["corrupt_raw.fif", "cannot read EEG"], None),
    "corrupt_edf": (_then(lambda r, d: _corrupt(r, "corrupt.edf"), _set(7, eeg_path="corrupt.edf")),
                    7, "unreadable", ["corrupt.edf", "cannot read EEG"], None),
    "corrupt_wav": (_then(lambda r, d: _corrupt(r, "corrupt.wav"), _set(8, audio_path="corrupt.wav")),
                    8, "unreadable", ["corrupt.wav", "cannot read audio"], None),
    "eeg_past_end": (_set(7, eeg_onset=18.0), 7, "window_past_end",
                     ["sub-02_eeg.fif", "EEG window 18.000-22.000 s", "past the end", "20.000 s"], None),
    "eeg_too_long": (_set(1, eeg_duration=100.0), 1, "window_past_end", ["sub-01_eeg.fif", "past the end"], None),
    "audio_past_end": (_set(9, audio_onset=17.5), 9, "window_past_end",
                       ["sub-03_audio.wav", "audio window 17.500-21.500 s", "past the end"], None),
    "label_not_in_classes": (_set(9, label="c"), 9, "label_not_in_classes", ["'c'", "data.classes", "a, b"],
                             ("a", "b")),
    "nan_eeg": (_nan, 5, "nan_eeg", ["sub-02_eeg.fif", "4.000-8.000 s", "NaN"], None),
    "flat_eeg": (_flat, 10, "flat_eeg", ["sub-03_eeg.fif", "8.000-12.000 s", "flat", "Pz", "eeg.channels"], None),
    "silent_audio": (_then(lambda r, d: write_wav(r / "silent.wav", silent=True), _set(3, audio_path="silent.wav")),
                     3, "empty_audio", ["silent.wav", "every sample is 0"], None),
    "zero_frame_audio": (_then(lambda r, d: sf.write(r / "empty.wav", np.zeros(0), SR),
                               _set(2, audio_path="empty.wav", audio_onset="", audio_duration="")),
                         2, "empty_audio", ["empty.wav", "no samples"], None),
    "short_audio": (_set(3, audio_duration=0.05), 3, "short_audio",
                    ["_audio.wav", "audio window", "is 50 ms", "openSMILE's 60 ms analysis window"], None),
    "bad_onset": (_set(0, eeg_onset="abc"), 0, "bad_time", ["eeg_onset", "'abc'", "not allowed"], None),
    "negative_onset": (_set(4, audio_onset=-1.0), 4, "bad_time", ["audio_onset", "-1.0", "onset >= 0"], None),
    "zero_duration": (_set(11, eeg_duration=0), 11, "bad_time", ["eeg_duration", "'0'", "duration > 0"], None),
    "blank_audio_path": (_set(6, audio_path=""), 6, "no_audio", ["blank audio_path"], None),
    "blank_label": (_set(8, label=""), 8, "blank_field", ["blank label"], None),
}


def _case(root: Path, df: pd.DataFrame, name: str):
    edit, idx, kind, needles, classes = CASES[name]
    edit(root, df)
    write_manifest(root, df)
    return idx, kind, needles, classes


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_trial_fails_with_one_line(params, dataset, name):
    root, df = dataset
    idx, kind, needles, classes = _case(root, df, name)
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, "fail", classes))
    message = one_line(info)
    assert message.startswith(f"{root / 'manifest.csv'} row {idx + 2}: "), message
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_trial_is_dropped_and_listed_under_skip(params, dataset, name):
    root, df = dataset
    subject = df.loc[CASES[name][1], "subject"]
    idx, kind, needles, classes = _case(root, df, name)
    manifest, _, _, report = ingest(run_params(params, root, "skip", classes))
    assert len(manifest) == len(df) - 1
    kept = [(s, o) for i, (s, o) in enumerate(zip(df["subject"], df["eeg_onset"])) if i != idx]
    assert list(zip(manifest["subject"], manifest["eeg_onset"].astype(float))) == [(s, float(o)) for s, o in kept]
    assert report["trials_in"] == len(df) and report["trials_kept"] == len(df) - 1
    assert report["trials_dropped"] == report["problems"] == 1
    assert report["dropped_by_kind"] == {kind: 1}
    (dropped,) = report["dropped"]
    assert dropped["where"] == f"{root / 'manifest.csv'} row {idx + 2}"
    assert dropped["kind"] == kind and dropped["subject"] == subject
    for needle in needles:
        assert needle in dropped["reason"], (needle, dropped["reason"])
    assert "\n" not in dropped["reason"]
    assert report["subjects_dropped"] == []


@pytest.mark.parametrize("col", ["eeg_onset", "eeg_duration"])
def test_nan_text_is_not_a_number_of_seconds(params, dataset, col):
    root, df = dataset
    df.loc[1, col] = "nan"
    write_manifest(root, df)
    with pytest.raises(PipelineError, match=f"row 3: {col} 'nan' is not allowed"):
        ingest(run_params(params, root, "fail"))


def test_duplicated_row(params, dataset):
    root, df = dataset
    df = pd.concat([df, df.iloc[[2]]], ignore_index=True)  # row 4 again as row 14
    write_manifest(root, df)
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, "fail"))
    message = one_line(info)
    assert message.startswith(f"{root / 'manifest.csv'} row 14: duplicates ")
    assert message.endswith(f"{root / 'manifest.csv'} row 4")

    manifest, _, _, report = ingest(run_params(params, root, "skip"))
    assert len(manifest) == 12  # the first copy is kept
    assert list(manifest["eeg_onset"]) == list(ONSETS) * 3
    assert report["dropped_by_kind"] == {"duplicate_row": 1}
    (dropped,) = report["dropped"]
    assert dropped["where"].endswith("row 14") and "duplicates" in dropped["reason"]
    assert dropped["reason"].endswith("row 4")


def test_several_bad_trials_listed_in_manifest_order(params, dataset):
    root, df = dataset
    df.loc[9, "eeg_onset"] = "abc"
    df.loc[1, "audio_path"] = "ghost.wav"
    _nan(root, df)  # row index 5
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root, "skip"))
    assert len(manifest) == 9
    assert [d["where"].rsplit(" ", 1)[1] for d in report["dropped"]] == ["3", "7", "11"]
    assert report["dropped_by_kind"] == {"missing_file": 1, "nan_eeg": 1, "bad_time": 1}


def test_a_trial_bad_in_eeg_and_audio_is_dropped_once(params, dataset):
    root, df = dataset
    df.loc[6, ["eeg_onset", "audio_onset"]] = 30.0
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root, "skip"))
    assert len(manifest) == 11 and report["trials_dropped"] == 1
    assert len(report["dropped"]) == 1 and report["dropped"][0]["kind"] == "window_past_end"


def test_unreadable_file_drops_every_trial_of_it_and_the_subject(params, dataset):
    root, df = dataset
    _corrupt(root, "sub-02_eeg.fif")
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root, "skip"))
    assert len(manifest) == 8 and "sub-02" not in set(manifest["subject"])
    assert report["dropped_by_kind"] == {"unreadable": 4}
    assert [d["where"].rsplit(" ", 1)[1] for d in report["dropped"]] == ["6", "7", "8", "9"]
    assert report["subjects_in"] == 3 and report["subjects_kept"] == 2
    assert report["subjects_dropped"] == ["sub-02"]


def test_subject_dropped_by_row_checks_is_counted(params, dataset):
    root, df = dataset
    df.loc[df["subject"] == "sub-03", "label"] = "z"
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root, "skip", classes=("a", "b")))
    assert len(manifest) == 8
    assert report["subjects_in"] == 3 and report["subjects_dropped"] == ["sub-03"]
    assert report["dropped_by_kind"] == {"label_not_in_classes": 4}


def test_every_trial_dropped_is_an_error(params, dataset):
    root, df = dataset
    df["eeg_onset"] = 50.0
    write_manifest(root, df)
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, "skip"))
    message = one_line(info)
    assert "every trial was dropped" in message and "12 problems" in message and "row 2" in message


def test_one_class_left_is_an_error(params, dataset):
    root, df = dataset
    df.loc[df["label"] == "b", "eeg_path"] = "ghost.fif"
    write_manifest(root, df)
    with pytest.raises(PipelineError, match="only one class left"):
        ingest(run_params(params, root, "skip"))


# ------------------------------------------------------------------ a broken manifest always stops

@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_header_only_manifest(params, dataset, on_error):
    root, df = dataset
    (root / "manifest.csv").write_text(",".join(df.columns) + "\n")
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, on_error))
    message = one_line(info)
    assert str(root / "manifest.csv") in message and "no rows" in message


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_zero_byte_manifest(params, dataset, on_error):
    root, _ = dataset
    (root / "manifest.csv").write_bytes(b"")
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, on_error))
    message = one_line(info)
    assert str(root / "manifest.csv") in message and "empty" in message


@pytest.mark.parametrize("on_error", ["fail", "skip"])
@pytest.mark.parametrize("column", ["label", "subject", "eeg_path"])
def test_missing_required_column(params, dataset, on_error, column):
    root, df = dataset
    write_manifest(root, df.drop(columns=[column]))
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, on_error))
    message = one_line(info)
    assert str(root / "manifest.csv") in message
    first = message.split(";")[0]
    assert "missing column" in first and column in first


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_manifest_not_found(params, dataset, on_error):
    root, _ = dataset
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, on_error))
    message = one_line(info)
    assert str(root / "manifest.csv") in message and "manifest not found" in message


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_binary_manifest(params, dataset, on_error):
    root, _ = dataset
    (root / "manifest.csv").write_bytes(b"\xff\xfe\x00\x81" + np.random.default_rng(0).bytes(512))
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, on_error))
    assert str(root / "manifest.csv") in one_line(info)


# ------------------------------------------------------------------ channel sets

def _odd_channels(root: Path) -> list[str]:
    """sub-03 has O1 where the others have Oz."""
    odd = ["Fz", "Cz", "Pz", "O1"]
    write_fif(root / "sub-03_eeg.fif", channels=odd, seed=2)
    return odd


def test_different_channel_sets_fail(params, dataset):
    root, df = dataset
    _odd_channels(root)
    write_manifest(root, df)
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, "fail"))
    message = one_line(info)
    assert message.startswith(f"{root / 'manifest.csv'} row 10: ")
    assert "sub-03_eeg.fif" in message and "sub-01_eeg.fif" in message and "eeg.channels" in message


def test_different_channel_sets_skip_drops_the_odd_file(params, dataset):
    root, df = dataset
    _odd_channels(root)
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root, "skip"))
    assert len(manifest) == 8 and "sub-03" not in set(manifest["subject"])
    assert report["dropped_by_kind"] == {"channels": 4}
    assert report["subjects_dropped"] == ["sub-03"]


def test_common_channel_subset_keeps_every_trial(params, dataset):
    root, df = dataset
    _odd_channels(root)
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root, "fail", channels=("Fz", "Cz", "Pz")))
    assert len(manifest) == 12 and report["dropped"] == []


def test_channel_missing_from_one_file(params, dataset):
    root, df = dataset
    _odd_channels(root)
    write_manifest(root, df)
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, "fail", channels=("Fz", "Oz")))
    message = one_line(info)
    assert "row 10" in message and "sub-03_eeg.fif" in message and "Oz" in message and "eeg.channels" in message
    manifest, _, _, report = ingest(run_params(params, root, "skip", channels=("Fz", "Oz")))
    assert len(manifest) == 8 and report["dropped_by_kind"] == {"channels": 4}


# ------------------------------------------------------------------ workers

def test_n_jobs_does_not_change_the_result(params, tmp_path):
    # paths stay absolute here (tmp_path is outside the working directory), so the result does
    # not depend on the working directory of joblib workers started by an earlier test
    df = make_dataset(tmp_path)
    df.loc[5, "eeg_onset"] = 30.0
    df.loc[9, "audio_path"] = "ghost.wav"
    write_manifest(tmp_path, df)
    one = ingest(run_params(params, tmp_path, "skip", n_jobs=1))
    two = ingest(run_params(params, tmp_path, "skip", n_jobs=2))
    pd.testing.assert_frame_equal(one[0], two[0])
    assert one[1] == two[1]
    assert one[2] == two[2]
    assert len(one[0]) == 10 and not any(math.isnan(v) for v in one[0]["eeg_duration"])


# ------------------------------------------------------------------ bad channels and labels as written

def _mark_bad(path: Path, bads, positions: bool) -> None:
    raw = mne.io.read_raw(path, preload=True, verbose="error")
    if positions:
        raw.set_montage("standard_1020")
    raw.info["bads"] = list(bads)
    raw.save(path, overwrite=True, verbose="error")


def test_bad_channels_are_interpolated_or_dropped_and_listed_per_recording(params, dataset):
    """sub-01's Cz is flat and marked bad, with positions: not a flat-channel problem, it is
    interpolated; with eeg.drop_channels [Cz] it is dropped from every recording. The report
    lists per recording what was done."""
    root, df = dataset
    write_fif(root / "sub-01_eeg.fif", seed=0, edit=lambda x: x.__setitem__(1, 0.0))
    _mark_bad(root / "sub-01_eeg.fif", ["Cz"], positions=True)
    write_manifest(root, df)
    manifest, _, _, report = ingest(run_params(params, root))
    assert len(manifest) == 12 and report["trials_dropped"] == 0
    assert report["channels"] == {"sub-01_eeg.fif": {"interpolated": ["Cz"], "dropped": []},
                                  "sub-02_eeg.fif": {"interpolated": [], "dropped": []},
                                  "sub-03_eeg.fif": {"interpolated": [], "dropped": []}}
    p = run_params(params, root)
    p = p.model_copy(update={"eeg": p.eeg.model_copy(update={"drop_channels": ("Cz",)})})
    _, _, _, report = ingest(p)
    assert {path: r["dropped"] for path, r in report["channels"].items()} == dict.fromkeys(report["channels"], ["Cz"])
    assert all(r["interpolated"] == [] for r in report["channels"].values())


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_bad_channel_without_positions_stops_ingest_whatever_on_error_says(params, dataset, on_error):
    root, df = dataset
    _mark_bad(root / "sub-02_eeg.fif", ["Pz"], positions=False)
    write_manifest(root, df)
    with pytest.raises(PipelineError) as info:
        ingest(run_params(params, root, on_error=on_error))
    assert one_line(info).startswith(f"{root / 'sub-02_eeg.fif'}: bad channel(s) Pz cannot be interpolated")


def test_labels_that_pandas_reads_as_missing_stay_labels_from_source_to_trials(params, dataset):
    """'NA', 'None', 'null', 'nan' and 'N/A' are class names: ingest keeps them, and what the
    stages read back (the manifest, labels and classes) keeps them as written; a blank stays bad."""
    from pipeline import io
    from pipeline.dataset import load_manifest, load_trials
    from pipeline.stages import features
    from pipeline.stages import ingest as ingest_stage
    from pipeline.stages import split as split_stage

    root, df = dataset
    names = ["NA", "None", "null", "nan", "N/A", "a"]
    df["label"] = [names[i % len(names)] for i in range(len(df))]
    write_manifest(root, df)
    p = run_params(params, root)
    ingest_stage.run(p)
    features.run(p, "eeg")  # writes the manifest the later stages read
    split_stage.run(p.model_copy(update={"split": p.split.model_copy(update={"scheme": "loso", "val_subjects": 1})}))
    trials = load_trials()
    assert trials.classes == sorted(names) == io.read_json(io.CLASSES)
    assert [trials.classes[k] for k in trials.labels] == df["label"].tolist()
    assert load_manifest()["label"].tolist() == df["label"].tolist()

    df.loc[3, "label"] = ""
    write_manifest(root, df)
    with pytest.raises(PipelineError, match=r"manifest.csv row 5: blank label"):
        ingest(p)
