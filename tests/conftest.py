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
import pytest
import scipy.io
import soundfile as sf

from pipeline.data.eav import EMOTIONS
from pipeline.data.readers import EAV_SFREQ
from pipeline.params import Params, load_params

from dvc_project import SHARED, start_build

ROOT = Path(__file__).resolve().parents[1]


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
