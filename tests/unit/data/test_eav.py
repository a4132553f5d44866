"""pipeline/data/eav.py through ingest: a tiny EAV-shaped dataset (subjectNN/EEG/*.mat,
subjectNN/Audio/*.wav) becomes one manifest row per trial segment, speaking trials paired with
their audio by emotion in name order; bad subject folders and unpaired trials follow
`data.on_error`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import soundfile as sf

from pipeline.data.eav import EMOTIONS
from pipeline.data.ingest import ingest
from pipeline.data.readers import read_eeg
from pipeline.errors import PipelineError
from pipeline.params import ParamsError

SFREQ = 500
SR = 16000


def eav_params(params, root: Path, task="speaking", segment_seconds=1.0, on_error="fail"):
    eav = params.data.eav.model_copy(update=dict(task=task, segment_seconds=segment_seconds))
    data = params.data.model_copy(update=dict(source="eav", root=str(root), on_error=on_error, classes=None, eav=eav))
    return params.model_copy(update=dict(data=data,
                                         eeg=params.eeg.model_copy(update=dict(channels=None, read_kwargs={})),
                                         compute=params.compute.model_copy(update=dict(n_jobs=1))))


@pytest.fixture
def eav(tmp_path, monkeypatch, write_eav) -> tuple[Path, dict[str, np.ndarray]]:
    monkeypatch.chdir(tmp_path)
    return tmp_path, write_eav(tmp_path)


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _expected_rows(labels: dict[str, np.ndarray], task: str, n_segments: int, segment: float,
                   trial_seconds: float = 2.0) -> list[tuple]:
    rows = []
    for subject, classes in labels.items():
        for k, c in enumerate(classes):
            speaking = c % 2 == 0
            if (task == "speaking" and not speaking) or (task == "listening" and speaking):
                continue
            for j in range(n_segments):
                rows.append((subject, EMOTIONS[c // 2], round(k * trial_seconds + j * segment, 9), segment))
    return rows


def _rows(manifest) -> list[tuple]:
    return [(s, label, round(float(onset), 9), float(duration)) for s, label, onset, duration
            in zip(manifest["subject"], manifest["label"], manifest["eeg_onset"], manifest["eeg_duration"])]


# ------------------------------------------------------------------ tasks and segments

def test_speaking_two_segments_per_trial(params, eav):
    root, labels = eav
    manifest, classes, _, report = ingest(eav_params(params, root, "speaking", 1.0))
    assert len(manifest) == 3 * 5 * 2  # 5 speaking trials per subject, 2 segments of 1 s each
    assert _rows(manifest) == _expected_rows(labels, "speaking", 2, 1.0)
    assert set(manifest["label"]) == set(EMOTIONS) and classes == sorted(EMOTIONS)
    assert report["modalities"] == ["eeg", "mel", "topo", "acoustic"] and report["dropped"] == []
    assert list(manifest["eeg_path"].unique()) == [f"subject{s:02d}/EEG/subject{s:02d}_eeg.mat" for s in (1, 2, 3)]
    # audio windows: segment j of a trial is [j, j + 1) s of its clip
    assert list(manifest["audio_onset"]) == [0.0, 1.0] * 15
    assert (manifest["audio_duration"] == 1.0).all()
    # both segments of a trial share its clip, whose emotion is the trial's label
    for (_, pair) in manifest.groupby(manifest.index // 2):
        assert pair["audio_path"].nunique() == 1
        emotion = Path(pair["audio_path"].iloc[0]).stem.split("_")[4].lower()
        assert emotion == pair["label"].iloc[0]


def test_segment_onsets_point_at_the_trial_data(params, eav):
    root, labels = eav
    manifest, _, _, _ = ingest(eav_params(params, root, "speaking", 1.0))
    path = root / "subject02" / "EEG" / "subject02_eeg.mat"
    seg = scipy.io.loadmat(str(path))["seg1"]
    raw = read_eeg(path)
    rows = manifest[manifest["subject"] == "subject02"]
    trials = [k for k, c in enumerate(labels["subject02"]) if c % 2 == 0]
    for n, (_, row) in enumerate(rows.iterrows()):
        k, j = trials[n // 2], n % 2
        start = int(round(row["eeg_onset"] * SFREQ))
        x = raw.get_data(start=start, stop=start + int(row["eeg_duration"] * SFREQ))
        np.testing.assert_allclose(x, seg[j * SFREQ:(j + 1) * SFREQ, :, k].T * 1e-6, rtol=1e-12)


@pytest.mark.parametrize("task, per_subject", [("listening", 5), ("both", 10)])
def test_listening_and_both_have_no_audio(params, eav, task, per_subject):
    root, labels = eav
    manifest, _, _, report = ingest(eav_params(params, root, task, 1.0))
    assert len(manifest) == 3 * per_subject * 2
    assert _rows(manifest) == _expected_rows(labels, task, 2, 1.0)
    assert report["modalities"] == ["eeg", "topo"]
    assert (manifest["audio_path"] == "").all()
    assert report["eav_pairing"] == []


def test_whole_trials_without_segment_seconds(params, eav):
    root, labels = eav
    manifest, _, _, _ = ingest(eav_params(params, root, "both", None))
    assert len(manifest) == 30
    assert _rows(manifest) == _expected_rows(labels, "both", 1, 2.0)


def test_both_conditions_give_a_condition_task(params, eav):
    """With data.eav.task both, `condition` (listening or speaking) is a label column a secondary
    task learns; the other tasks have no such column."""
    root, labels = eav
    p = eav_params(params, root, "both", None)
    p = p.model_copy(update={"data": p.data.model_copy(update={"tasks": ("label", "condition")})})
    manifest, _, tasks, _ = ingest(p)
    assert tasks == {"condition": ["listening", "speaking"]}
    expected = ["speaking" if c % 2 == 0 else "listening" for classes in labels.values() for c in classes]
    assert list(manifest["condition"]) == expected
    speaking = eav_params(params, root, "speaking", None)
    with pytest.raises(PipelineError) as info:
        ingest(speaking.model_copy(update={"data": speaking.data.model_copy(update={"tasks": ("label", "condition")})}))
    assert "data.tasks names 'condition', a column data.source 'eav' does not give" in one_line(info)


def test_segment_that_does_not_divide_the_trial(params, eav):
    root, labels = eav
    manifest, _, _, _ = ingest(eav_params(params, root, "listening", 0.75))
    assert _rows(manifest) == _expected_rows(labels, "listening", 2, 0.75)


def test_segment_longer_than_the_trial(params, eav):
    root, _ = eav
    for on_error in ("fail", "skip"):
        with pytest.raises(ParamsError) as info:
            ingest(eav_params(params, root, "speaking", 3.0, on_error))
        message = one_line(info)
        assert "data.eav.segment_seconds" in message and "subject01_eeg.mat" in message


# ------------------------------------------------------------------ audio pairing

def test_pairing_by_emotion_in_name_order(params, tmp_path, monkeypatch, write_eav):
    monkeypatch.chdir(tmp_path)
    labels = write_eav(tmp_path, n_subjects=3, trials_per_class=2, seed=1)
    manifest, _, _, report = ingest(eav_params(params, tmp_path, "speaking", None))
    assert len(manifest) == 3 * 5 * 2  # 10 speaking trials per subject, whole
    pairing = report["eav_pairing"]
    assert len(pairing) == 30
    for subject, classes in labels.items():
        mine = [p for p in pairing if p["subject"] == subject]
        speaking = [k + 1 for k, c in enumerate(classes) if c % 2 == 0]
        assert [p["eeg_trial"] for p in mine] == speaking
        for emotion in EMOTIONS:
            files = sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / subject / "Audio").glob("*.wav")
                           if f.stem.split("_")[4].lower() == emotion)
            assert [p["audio"] for p in mine if p["label"] == emotion] == files
            # the file names were written with the trial number: pairing matches it here
            for p in mine:
                if p["label"] == emotion:
                    assert f"_Trial_{p['eeg_trial']:02d}_" in p["audio"]
    # the manifest carries the paired clip of each trial
    rows = manifest[manifest["subject"] == "subject02"]
    assert list(rows["audio_path"]) == [p["audio"] for p in pairing if p["subject"] == "subject02"]


def test_pairing_follows_name_order_not_trial_number(params, tmp_path, monkeypatch, write_eav):
    monkeypatch.chdir(tmp_path)
    labels = write_eav(tmp_path, n_subjects=3, trials_per_class=2, seed=2)
    # the second anger clip of subject01 is renamed so that its name sorts first: the first
    # anger trial now gets it, whatever trial number its name carries
    audio = tmp_path / "subject01" / "Audio"
    first, second = sorted(audio.glob("*_Anger_*.wav"))
    renamed = second.rename(audio / ("000" + second.name[3:]))
    _, _, _, report = ingest(eav_params(params, tmp_path, "speaking", None))
    mine = [p for p in report["eav_pairing"] if p["subject"] == "subject01" and p["label"] == "anger"]
    trials = [k + 1 for k, c in enumerate(labels["subject01"]) if c == 4]
    assert [p["eeg_trial"] for p in mine] == trials
    assert [p["audio"] for p in mine] == [str(f.relative_to(tmp_path)) for f in (renamed, first)]


def test_natural_name_order(params, tmp_path, monkeypatch, write_eav):
    monkeypatch.chdir(tmp_path)
    write_eav(tmp_path, n_subjects=3, trials_per_class=2, seed=3)
    audio = tmp_path / "subject01" / "Audio"
    first, second = sorted(audio.glob("*_Neutral_*.wav"))
    # unpadded numbers: 9_... must come before 10_... (a plain string sort puts 10 first)
    first.rename(audio / "9_Trial_9_Speaking_Neutral_aud.wav")
    second.rename(audio / "10_Trial_10_Speaking_Neutral_aud.wav")
    _, _, _, report = ingest(eav_params(params, tmp_path, "speaking", None))
    mine = [p["audio"] for p in report["eav_pairing"] if p["subject"] == "subject01" and p["label"] == "neutral"]
    assert [Path(a).name for a in mine] == ["9_Trial_9_Speaking_Neutral_aud.wav",
                                            "10_Trial_10_Speaking_Neutral_aud.wav"]


def test_missing_audio_file(params, eav):
    root, labels = eav
    k = next(k for k, c in enumerate(labels["subject02"]) if c == 4)  # anger, speaking
    (wav,) = (root / "subject02" / "Audio").glob("*_Anger_*.wav")
    wav.unlink()
    with pytest.raises(PipelineError) as info:
        ingest(eav_params(params, root, "speaking", 1.0, "fail"))
    message = one_line(info)
    assert f"subject02_eeg.mat trial {k + 1}" in message and "anger" in message and "no audio file" in message

    manifest, _, _, report = ingest(eav_params(params, root, "speaking", 1.0, "skip"))
    assert len(manifest) == 28
    assert not ((manifest["subject"] == "subject02") & (manifest["label"] == "anger")).any()
    assert report["dropped_by_kind"] == {"unpaired": 1}
    (dropped,) = report["dropped"]
    assert dropped["subject"] == "subject02" and dropped["label"] == "anger"
    assert dropped["where"].endswith(f"subject02_eeg.mat trial {k + 1}")
    assert len(report["eav_pairing"]) == 14
    # listening needs no audio: nothing is unpaired
    manifest, _, _, report = ingest(eav_params(params, root, "listening", 1.0, "fail"))
    assert len(manifest) == 30 and report["dropped"] == []


# ------------------------------------------------------------------ bad subject folders

def test_missing_label_file(params, eav):
    root, _ = eav
    (root / "subject02" / "EEG" / "subject02_eeg_label.mat").unlink()
    with pytest.raises(PipelineError) as info:
        ingest(eav_params(params, root, "speaking", 1.0, "fail"))
    message = one_line(info)
    assert "subject02_eeg_label.mat" in message and "labels" in message

    manifest, _, _, report = ingest(eav_params(params, root, "speaking", 1.0, "skip"))
    assert len(manifest) == 20 and "subject02" not in set(manifest["subject"])
    assert report["subjects_in"] == 3 and report["subjects_dropped"] == ["subject02"]
    (dropped,) = report["dropped"]
    assert dropped["subject"] == "subject02" and dropped["where"] == str(root / "subject02")
    assert "subject02_eeg_label.mat" in dropped["reason"]
    assert report["dropped_by_kind"] == {"unreadable": 1}


def test_missing_eeg_file(params, eav):
    root, _ = eav
    (root / "subject03" / "EEG" / "subject03_eeg.mat").unlink()
    with pytest.raises(PipelineError) as info:
        ingest(eav_params(params, root, "speaking", 1.0, "fail"))
    message = one_line(info)
    assert "subject03_eeg.mat" in message and "not found" in message
    manifest, _, _, report = ingest(eav_params(params, root, "speaking", 1.0, "skip"))
    assert len(manifest) == 20 and report["subjects_dropped"] == ["subject03"]
    assert report["dropped_by_kind"] == {"missing_file": 1}


@pytest.mark.parametrize("label", [np.zeros((10, 7)), np.zeros((5, 10))])
def test_labels_that_do_not_fit(params, eav, label):
    root, _ = eav
    scipy.io.savemat(str(root / "subject01" / "EEG" / "subject01_eeg_label.mat"), {"label": label})
    with pytest.raises(PipelineError) as info:
        ingest(eav_params(params, root, "both", 1.0, "fail"))
    assert "subject01" in one_line(info)
    manifest, _, _, report = ingest(eav_params(params, root, "both", 1.0, "skip"))
    assert report["subjects_dropped"] == ["subject01"] and len(manifest) == 40


def test_eeg_without_seg_array(params, eav):
    root, _ = eav
    scipy.io.savemat(str(root / "subject01" / "EEG" / "subject01_eeg.mat"), {"data": np.zeros((10, 30, 10))})
    with pytest.raises(PipelineError) as info:
        ingest(eav_params(params, root, "both", 1.0, "fail"))
    message = one_line(info)
    assert "subject01_eeg.mat" in message and "seg1" in message


def test_seg_instead_of_seg1(params, eav):
    root, labels = eav
    path = root / "subject02" / "EEG" / "subject02_eeg.mat"
    seg = scipy.io.loadmat(str(path))["seg1"]
    scipy.io.savemat(str(path), {"seg": seg})
    manifest, _, _, report = ingest(eav_params(params, root, "speaking", 1.0, "fail"))
    assert len(manifest) == 30 and report["dropped"] == []
    assert _rows(manifest) == _expected_rows(labels, "speaking", 2, 1.0)
    np.testing.assert_allclose(read_eeg(path).get_data()[:, :1000], seg[:, :, 0].T * 1e-6, rtol=1e-12)


def test_no_subject_folders(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for on_error in ("fail", "skip"):
        with pytest.raises(PipelineError) as info:
            ingest(eav_params(params, tmp_path, "speaking", 1.0, on_error))
        message = one_line(info)
        assert str(tmp_path) in message and "subjectNN" in message


def test_helper_layout(tmp_path, write_eav):
    labels = write_eav(tmp_path, n_subjects=2, n_samples=500, trials_per_class=2, seed=5)
    assert sorted(labels) == ["subject01", "subject02"]
    for subject, classes in labels.items():
        assert sorted(classes) == sorted(list(range(10)) * 2)
        mat = scipy.io.loadmat(str(tmp_path / subject / "EEG" / f"{subject}_eeg.mat"))["seg1"]
        assert mat.shape == (500, 30, 20)
        label = scipy.io.loadmat(str(tmp_path / subject / "EEG" / f"{subject}_eeg_label.mat"))["label"]
        assert label.shape == (10, 20) and (label.argmax(axis=0) == classes).all()
        wavs = sorted((tmp_path / subject / "Audio").glob("*.wav"))
        assert len(wavs) == 10
        assert sf.info(str(wavs[0])).frames == SR  # 500 samples at 500 Hz: 1 s
