"""pipeline/data/synthetic.py and pipeline/data/manifest.py: the embedded default data is written
as real FIF/WAV files plus a manifest, deterministically, and read back through the reader path.
Bad manifests are tested through ingest in test_ingest.py."""
from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import signal

from pipeline.data.manifest import COLUMNS, read_manifest_csv
from pipeline.data.readers import read_audio, read_eeg
from pipeline.data.synthetic import CHANNELS, CLASSES, generate
from pipeline.params import SyntheticParams

TINY = SyntheticParams(seed=3, n_subjects=3, trials_per_class=1, trial_seconds=2.0, gap_seconds=0.5,
                       eeg_sfreq=128.0, audio_sr=8000, arousal_strength=1.0, valence_strength=1.0,
                       coupling_strength=1.0, artifact_class_coupling=0.0)
SUBJECTS = ("sub-01", "sub-02", "sub-03")


def _other_seed(p: SyntheticParams, seed: int) -> SyntheticParams:
    return SyntheticParams(**{**p.__dict__, "seed": seed})


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    manifest = generate(out, TINY)
    assert manifest == out / "manifest.csv"
    return out


@pytest.fixture(scope="module")
def generated_again(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic_again")
    generate(out, TINY)
    return out


@pytest.fixture(scope="module")
def generated_other_seed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic_other")
    generate(out, _other_seed(TINY, 4))
    return out


def test_writes_fif_and_wav_per_subject(generated):
    names = sorted(p.name for p in generated.iterdir())
    expected = sorted([f"{s}_eeg.fif" for s in SUBJECTS] + [f"{s}_audio.wav" for s in SUBJECTS]
                      + ["manifest.csv"])
    assert names == expected
    raw = mne.io.read_raw_fif(generated / "sub-01_eeg.fif", verbose="error")
    assert raw.ch_names == list(CHANNELS) and raw.info["sfreq"] == TINY.eeg_sfreq
    info = sf.info(str(generated / "sub-01_audio.wav"))
    assert info.samplerate == TINY.audio_sr and info.channels == 1
    # 5 trials of 2 s, each followed by a 0.5 s gap, plus the leading gap
    expected_seconds = len(CLASSES) * (TINY.trial_seconds + TINY.gap_seconds) + TINY.gap_seconds
    assert raw.n_times / raw.info["sfreq"] == pytest.approx(expected_seconds)
    assert info.frames / info.samplerate == pytest.approx(expected_seconds)


def test_read_manifest_round_trip(generated):
    df = read_manifest_csv(generated / "manifest.csv")
    assert list(df.columns) == [*COLUMNS, "where"]
    assert len(df) == TINY.n_subjects * len(CLASSES) * TINY.trials_per_class
    for col in ("eeg_path", "audio_path"):
        for p in df[col]:
            assert Path(p).is_file(), p  # relative paths resolved against the CSV's folder
            assert Path(p).resolve().parent == generated.resolve()
    assert set(df["subject"]) == set(SUBJECTS)
    assert all(isinstance(s, str) for s in df["subject"])
    # every window lies inside its recordings and reads back through the common readers
    row = df.iloc[3]
    clip = read_audio(row.audio_path, float(row.audio_onset), float(row.audio_duration), TINY.audio_sr)
    assert clip.shape == (int(TINY.trial_seconds * TINY.audio_sr),)
    assert np.abs(clip).max() > 0.02  # a voice, not the background noise


def test_class_balance_per_subject(generated):
    df = pd.read_csv(generated / "manifest.csv")
    counts = df.groupby(["subject", "label"]).size().unstack(fill_value=0)
    assert sorted(counts.columns) == sorted(CLASSES)
    assert (counts.to_numpy() == TINY.trials_per_class).all()


def test_trials_do_not_overlap(generated):
    df = pd.read_csv(generated / "manifest.csv")
    for _, rows in df.groupby("subject"):
        onsets = np.sort(rows["eeg_onset"].to_numpy())
        assert (np.diff(onsets) >= TINY.trial_seconds).all()


def test_same_seed_same_bytes_and_data(generated, generated_again):
    assert (generated / "manifest.csv").read_bytes() == (generated_again / "manifest.csv").read_bytes()
    for s in SUBJECTS:
        a = read_eeg(generated / f"{s}_eeg.fif").get_data()
        b = read_eeg(generated_again / f"{s}_eeg.fif").get_data()
        np.testing.assert_array_equal(a, b)
        assert (generated / f"{s}_audio.wav").read_bytes() == (generated_again / f"{s}_audio.wav").read_bytes()


def test_other_seed_other_data(generated, generated_other_seed):
    a = read_eeg(generated / "sub-01_eeg.fif").get_data()
    b = read_eeg(generated_other_seed / "sub-01_eeg.fif").get_data()
    assert a.shape == b.shape and not np.allclose(a, b)
    assert (generated / "sub-01_audio.wav").read_bytes() != (generated_other_seed / "sub-01_audio.wav").read_bytes()
    labels_a = pd.read_csv(generated / "manifest.csv")["label"].tolist()
    labels_b = pd.read_csv(generated_other_seed / "manifest.csv")["label"].tolist()
    assert labels_a != labels_b  # the class order is drawn from the seed too


def test_fif_carries_50hz_line_noise(generated):
    raw = read_eeg(generated / "sub-02_eeg.fif")
    x = raw.get_data(units="uV")
    freqs, psd = signal.welch(x, fs=raw.info["sfreq"], nperseg=256, axis=-1)
    psd = psd.mean(axis=0)
    peak = psd[np.abs(freqs - 50.0) < 1.0].max()
    neighbours = psd[(np.abs(freqs - 50.0) > 3.0) & (np.abs(freqs - 50.0) < 12.0)]
    assert peak > 20 * np.median(neighbours)
    # the global maximum above 30 Hz is the line frequency
    high = freqs > 30
    assert abs(freqs[high][psd[high].argmax()] - 50.0) <= 0.5


def test_frontal_blinks_larger_than_occipital(generated):
    raw = read_eeg(generated / "sub-01_eeg.fif")
    x = raw.copy().filter(None, 3.0, verbose="error").get_data(units="uV")
    fp1, o1 = CHANNELS.index("Fp1"), CHANNELS.index("O1")
    assert np.abs(x[fp1]).max() > 2 * np.abs(x[o1]).max()


@pytest.mark.parametrize("clusters", [(8,), (4, 4), (2, 2, 2, 2)])
def test_average_reference_keeps_coupled_channels_as_loud_as_the_others(clusters):
    """The coupling layout is for the topology view only: after an average reference every
    channel keeps the same band power whatever its cluster (with in-phase clusters the members
    of the 8-channel cluster kept about 0.6 of the others' power, and band power saw the layout)."""
    from pipeline.data.synthetic import _coupled

    rng = np.random.default_rng(0)
    x = _coupled(rng, 256 * 60, clusters, 0.55, 4.0, 8.0, 256.0)
    corr = np.abs(np.corrcoef(x))
    np.fill_diagonal(corr, 0)
    members = corr.max(axis=1) > 0.4  # the coupling is there for the topology view: |corr| ~ strength
    assert members.sum() == 8
    power = (x - x.mean(axis=0)).var(axis=1)
    assert power[members].mean() / power[~members].mean() == pytest.approx(1.0, abs=0.12)


def test_artifact_class_coupling_adds_blinks_to_the_classes_trials_and_changes_nothing_else(generated, tmp_path):
    """data.synthetic.artifact_class_coupling 4: the only difference from the default recordings
    (coupling 0, the same seed) is on the frontal blink channels, inside the trials of the
    classes that blink (sadness most; never happiness or calmness), and it is blink-sized."""
    from pipeline.data.synthetic import BLINK_WEIGHTS, CLASS_BLINK_RATE

    coupled = tmp_path / "coupled"
    generate(coupled, SyntheticParams(**{**TINY.__dict__, "artifact_class_coupling": 4.0}))
    manifest = pd.read_csv(generated / "manifest.csv")
    frontal = [CHANNELS.index(c) for c in BLINK_WEIGHTS]
    added = {label: 0.0 for label in CLASSES}
    for subject in SUBJECTS:
        diff = read_eeg(coupled / f"{subject}_eeg.fif").get_data() - read_eeg(generated / f"{subject}_eeg.fif").get_data()
        assert np.abs(np.delete(diff, frontal, axis=0)).max() == 0.0
        inside = np.zeros(diff.shape[1], bool)
        for _, trial in manifest[manifest["subject"] == subject].iterrows():
            start = int(round(trial["eeg_onset"] * TINY.eeg_sfreq))
            window = slice(start, start + int(round(trial["eeg_duration"] * TINY.eeg_sfreq)))
            inside[window] = True
            added[trial["label"]] += np.abs(diff[:, window]).max()
        assert np.abs(diff[:, ~inside]).max() == 0.0
    assert added["happiness"] == added["calmness"] == 0.0 and CLASS_BLINK_RATE["sadness"] == max(CLASS_BLINK_RATE.values())
    assert added["sadness"] / len(SUBJECTS) > 50e-6  # blinks of 80-150 uV
