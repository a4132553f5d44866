"""Shared fixtures of the unit suite."""
from __future__ import annotations

from pipeline.numerics import pin_cpu_dispatch

pin_cpu_dispatch()  # the tests compute as the stages do, before numpy or torch load (portable numerics)

import os  # noqa: E402

# Two pytest-xdist workers and the shared project's build share 2 cores: BLAS and OpenMP pools of
# a thread per core each made the tests that fit scikit-learn models in-process 2-3x slower
# (their threads wait on each other). The stages' tasks run single-threaded anyway (pipeline/parallel.py).
for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_pool, "1")

from pathlib import Path  # noqa: E402

import numpy as np
import pandas as pd
import pytest
import scipy.io
import soundfile as sf

from pipeline.data.eav import EMOTIONS
from pipeline.data.readers import EAV_SFREQ
from pipeline.params import Params, load_params

from dvc_project import ROOT, SHARED, start_build
from factories import make_dataset


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config, items):
    """Start building the shared project, and order the tests so that no worker waits for it:
    the other slow files first (the longest work first keeps two workers busy to the end), then
    the unit tests, then the tests that read the shared project, the longest of them
    (`shared_project(longest=True)`) first: pytest-xdist hands each worker a contiguous part of
    this order, and an idle worker takes the end of another's, so the longest one starts as soon
    as the project is built and the short ones fill in beside it."""
    if any(item.get_closest_marker(SHARED) for item in items):
        start_build(config._tmp_path_factory)  # the session's tmp_path_factory

    def rank(item) -> tuple[int, bool]:
        shared = item.get_closest_marker(SHARED)
        if shared:
            return 2, not shared.kwargs.get("longest", False)
        return (0 if item.get_closest_marker("slow") else 1), False

    items.sort(key=rank)


def pytest_configure(config):
    # The unit tests train models of a few hundred parameters: torch's intra-op thread pool
    # costs far more than it gains on them (about 20x slower with 2 threads on 2 cores).
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller runs no test, and importing torch costs it 2 s before the workers start
    import torch

    torch.set_num_threads(1)
REALDATA = ROOT.parent / "shared" / "realdata"


@pytest.fixture
def dataset(tmp_path, monkeypatch) -> tuple[Path, pd.DataFrame]:
    """A manifest dataset (`factories.make_dataset`: 3 subjects, 4 trials each) in a fresh
    folder, which becomes the current one: (that folder, its rows)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path, make_dataset(tmp_path)


@pytest.fixture(scope="session")
def root() -> Path:
    """The project root (where params.yaml lives)."""
    return ROOT


@pytest.fixture(scope="session")
def params() -> Params:
    """The project's real params.yaml, typed and validated."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The shared folder of real EEG recordings (read in place, never copied)."""
    if not (REALDATA / "eeg").is_dir():
        pytest.skip(f"real EEG recordings not found at {REALDATA / 'eeg'} "
                    "(the shared realdata folder is not checked out next to the project)")
    return REALDATA


def _write_eav(root: Path, n_subjects: int = 3, n_samples: int = 1000, trials_per_class: int = 1,
              seed: int = 0) -> dict[str, np.ndarray]:
    """An EAV-shaped dataset under `root`; returns each subject's class index (0-9) per trial.

    subjectNN/EEG/subjectNN_eeg.mat        seg1: (n_samples, 30, 10 * trials_per_class), uV
    subjectNN/EEG/subjectNN_eeg_label.mat  label: one-hot (10, trials), classes shuffled
    subjectNN/Audio/NNN_Trial_TT_Speaking_<Emotion>_aud.wav, one per speaking (even) class trial
    """
    rng = np.random.default_rng(seed)
    n_trials = 10 * trials_per_class
    out = {}
    for s in range(1, n_subjects + 1):
        name = f"subject{s:02d}"
        eeg, audio = root / name / "EEG", root / name / "Audio"
        eeg.mkdir(parents=True)
        audio.mkdir(parents=True)
        classes = rng.permutation(np.repeat(np.arange(10), trials_per_class))
        seg = 10 * rng.standard_normal((n_samples, 30, n_trials))
        scipy.io.savemat(str(eeg / f"{name}_eeg.mat"), {"seg1": seg})
        label = np.zeros((10, n_trials))
        label[classes, np.arange(n_trials)] = 1
        scipy.io.savemat(str(eeg / f"{name}_eeg_label.mat"), {"label": label})
        i = 0
        for t, c in enumerate(classes):
            if c % 2 == 0:
                i += 1
                emotion = EMOTIONS[c // 2].capitalize()
                y = 0.1 * rng.standard_normal(int(n_samples / EAV_SFREQ * 16000))
                sf.write(audio / f"{i:03d}_Trial_{t + 1:02d}_Speaking_{emotion}_aud.wav", y, 16000)
        out[name] = classes
    return out


@pytest.fixture(scope="session")
def write_eav():
    """Writes a small EAV-shaped dataset (generated, never downloaded): `write_eav(root, ...)`."""
    return _write_eav


def _write_bids(root: Path, eeg_file: Path, subjects=("01", "02"), sessions=(None,), trial_end: str = "duration",
                per_label: int = 4, seconds: float = 2.0) -> Path:
    """A BIDS dataset at `root` written by mne-bids' own `write_raw_bids`: the real recording
    `eeg_file` once per subject and session (task 'emo'), its events the first `per_label` of each
    of its own event labels ('rt', 'square') that do not overlap, encoded for `trial_end`: `duration` (each event
    lasts `seconds`), `fixed` (no duration) or `next:exit` (a 'press1' event 0.5 s after each and
    an 'exit' event `seconds` after it, as OpenNeuro ds003004 marks its trials)."""
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    raw = mne.io.read_raw(eeg_file, preload=False, verbose="error")
    onsets, labels, taken = [], [], {}
    for onset, label in zip(raw.annotations.onset, raw.annotations.description):  # events `seconds` + 1 s apart
        if taken.get(label, 0) < per_label and onset + seconds < raw.times[-1] and \
                (not onsets or onset > onsets[-1] + seconds + 1.0):
            taken[label] = taken.get(label, 0) + 1
            onsets.append(float(onset))
            labels.append(str(label))
    durations = [seconds if trial_end == "duration" else 0.0] * len(onsets)
    if trial_end == "next:exit":
        onsets, labels, durations = (onsets + [o + 0.5 for o in onsets] + [o + seconds for o in onsets],
                                     labels + ["press1"] * len(labels) + ["exit"] * len(labels), durations * 3)
    raw.set_annotations(mne.Annotations(onsets, durations, labels))
    for subject in subjects:
        for session in sessions:
            write_raw_bids(raw, BIDSPath(subject=subject, session=session, task="emo", datatype="eeg", root=root),
                           overwrite=True, verbose="error")
    return root


@pytest.fixture(scope="session")
def write_bids():
    """Writes a small BIDS dataset from a real recording with mne-bids: `write_bids(root, eeg_file, ...)`."""
    return _write_bids


def positioned_recording(realdata: Path, bads=("F3",)):
    """The real EEGLAB recording with its real channel names and positions (test_chans.locs, in
    channel order) and `bads` marked bad, loaded."""
    import mne

    raw = mne.io.read_raw(realdata / "eeg" / "test_raw.set", preload=True, verbose="error")
    montage = mne.channels.read_custom_montage(realdata / "eeg" / "test_chans.locs")
    raw.rename_channels(dict(zip(raw.ch_names, montage.ch_names)))
    raw.set_montage(montage)
    raw.info["bads"] = list(bads)
    return raw


DOWNLOADED = {"happy": "rt", "sad": "square"}  # class -> the recording's own events that stand for it


def _write_downloaded_bids(root: Path, realdata: Path, per_label: int = 4, seconds: float = 2.0) -> dict:
    """A BIDS dataset shaped like one downloaded from an archive, written by mne-bids from the real
    recording (real channel names and positions, so electrodes.tsv; converted to BrainVision):
    sub-01 to sub-04 in ses-1, sub-01 with runs 1 and 2; channel F3 marked bad in channels.tsv;
    events with MNE's hierarchical tags (`emotion/happy`, `emotion/sad`: `per_label` of each a
    recording, `seconds` long), a `response/button` row after each and a `BAD_ACQ_SKIP` row; and
    copies of sub-01 under derivatives/preproc/ (its own events.tsv) and sourcedata/. Returns
    {"root", "recordings": the raw recordings' paths, "trials": their class trials}."""
    import shutil

    import mne
    from mne_bids import BIDSPath, write_raw_bids

    raw = positioned_recording(realdata)
    onsets, labels = [], []
    taken = dict.fromkeys(DOWNLOADED, 0)
    for onset, event in zip(raw.annotations.onset, raw.annotations.description):
        label = next((c for c, e in DOWNLOADED.items() if e == event), None)
        if label and taken[label] < per_label and onset + seconds < raw.times[-1] and \
                (not onsets or onset > onsets[-1] + seconds + 1.0):
            taken[label] += 1
            onsets.append(float(onset))
            labels.append(label)
    n = len(onsets)
    skip = onsets[-1] + seconds + 0.5  # a stretch marked bad after the last trial
    raw.set_annotations(mne.Annotations(onsets + [o + 0.5 for o in onsets] + [skip],
                                        [seconds] * n + [0.0] * n + [1.0],
                                        [f"emotion/{c}" for c in labels] + ["response/button"] * n + ["BAD_ACQ_SKIP"]))
    recordings = []
    for subject, run in [("01", "1"), ("01", "2"), ("02", "1"), ("03", "1"), ("04", "1")]:
        path = BIDSPath(subject=subject, session="1", task="emo", run=run, datatype="eeg", root=root)
        write_raw_bids(raw, path, format="BrainVision", allow_preload=True, overwrite=True, verbose="error")
        recordings.append(path.copy().update(suffix="eeg", extension=".vhdr").fpath)
    shutil.copytree(root / "sub-01", root / "derivatives" / "preproc" / "sub-01")
    (root / "derivatives" / "preproc" / "dataset_description.json").write_text(
        '{"Name": "preproc", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}')
    shutil.copytree(root / "sub-01", root / "sourcedata" / "sub-01")
    return {"root": root, "recordings": recordings, "trials": n * len(recordings)}


@pytest.fixture(scope="session")
def downloaded_bids(tmp_path_factory, realdata) -> dict:
    """One BIDS dataset as downloaded (`_write_downloaded_bids`), written once per session: copy
    it before changing it."""
    return _write_downloaded_bids(tmp_path_factory.mktemp("downloaded") / "ds", realdata)
