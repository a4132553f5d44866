"""Artifact cleaning of one recording as the field does it: ICA with ICLabel's component labels
(mne-icalabel), the confident non-brain components removed, and autoreject (local) over its
trials, which interpolates a trial's bad channels or drops the trial (`eeg.artifacts`).

ICA is fitted per recording on a copy high-passed at 1 Hz (and low-passed at 100 Hz where the
sampling rate allows) and average-referenced, as ICLabel was trained, and applied to the data the
EEG stage epochs. Blinks, eye movements and muscle activity often follow the class (sad trials
blink more, angry speech carries jaw EMG), so an EEG branch can learn them: cleaning takes that
away, and reports/artifacts.json says what was removed. Autoreject runs on the epochs the EEG
stage cuts from the ICA-cleaned, preprocessed recording (MNE-BIDS-Pipeline's order).
"""
from __future__ import annotations

import warnings

import mne
import numpy as np

from pipeline.data.readers import positioned
from pipeline.errors import PipelineError
from pipeline.params import ArtifactParams

ICLABEL_CLASSES = ("brain", "muscle artifact", "eye blink", "heart beat", "line noise", "channel noise", "other")


def require_positions(inst: mne.io.BaseRaw | mne.BaseEpochs, path, key: str, why: str) -> None:
    """PipelineError naming the file, the channels without a position and the keys that give
    them, unless every channel of `inst` has one."""
    unplaced = [c for c in inst.ch_names if c not in positioned(inst)]
    if unplaced:
        raise PipelineError(f"{path}: {key} needs every channel's position ({why}); "
                            f"{', '.join(unplaced[:6])}{' ...' if len(unplaced) > 6 else ''} have "
                            "none: give them with eeg.montage, or leave them out with eeg.drop_channels")


def fit_ica(raw: mne.io.BaseRaw, p: ArtifactParams, path) -> tuple[mne.preprocessing.ICA, list[dict]]:
    """ICA of `raw` (not changed) and ICLabel's verdict on each component: [{"component",
    "label" (ICLabel's most probable class), "p" (its probability), "removed" (a class of
    `p.iclabel_reject` above its threshold), "removed_as" (that class, the most probable one if
    several; None)}]. A count of components is capped at the data's rank (the average reference
    and interpolated channels lower it). Needs every channel's position (ICLabel reads
    topographies): PipelineError naming the file and the keys that give them otherwise."""
    from mne_icalabel.iclabel import iclabel_label_components

    require_positions(raw, path, "eeg.artifacts.ica", "ICLabel reads topographies")
    copy = raw.copy().filter(1.0, 100.0 if raw.info["sfreq"] / 2 > 100.0 else None, verbose="error")
    copy.set_eeg_reference("average", projection=False, verbose="error")
    n_components = p.n_components
    if isinstance(n_components, int):
        # exact dependencies sit near 1e-14 of the largest singular value, real ones above 1e-3:
        # MNE's default tolerance counted one of them as rank here
        rank = mne.compute_rank(copy, rank=None, tol=1e-6, tol_kind="relative", verbose="error")["eeg"]
        n_components = min(n_components, rank)
    ica = mne.preprocessing.ICA(n_components=n_components, method=p.ica_method, random_state=p.seed,
                                fit_params={"extended": True} if p.ica_method == "infomax" else None,
                                max_iter="auto")
    ica.fit(copy, verbose="error")
    with warnings.catch_warnings():  # below 200 Hz sampling the 100 Hz low-pass ICLabel expects cannot be applied
        warnings.filterwarnings("ignore", message=".*not filtered between 1 and 100 Hz.*")
        probs = iclabel_label_components(copy, ica)  # (n_components, 7), ICLABEL_CLASSES' order
    components = []
    for k, row in enumerate(probs):
        above = {c: row[ICLABEL_CLASSES.index(c)] for c, threshold in p.iclabel_reject.items()
                 if row[ICLABEL_CLASSES.index(c)] > threshold}
        components.append({"component": k, "label": ICLABEL_CLASSES[int(np.argmax(row))],
                           "p": round(float(row.max()), 4), "removed": bool(above),
                           "removed_as": max(above, key=above.get) if above else None})
    return ica, components


def remove_components(raw: mne.io.BaseRaw, ica: mne.preprocessing.ICA, components: list[dict]) -> None:
    """Remove the components marked removed from `raw` (in place; any filtering and sampling rate:
    the unmixing is spatial)."""
    excluded = [c["component"] for c in components if c["removed"]]
    if excluded:
        ica.apply(raw, exclude=excluded, verbose="error")


def removed_topographies(ica: mne.preprocessing.ICA, components: list[dict]) -> np.ndarray:
    """The removed components' topographies (their mixing columns), (n_channels, n_removed): what
    the figure draws."""
    return ica.get_components()[:, [c["component"] for c in components if c["removed"]]]


# autoreject's own default folds; fewer where a recording has fewer trial windows
AUTOREJECT_FOLDS = 10


def repair_epochs(epochs: mne.BaseEpochs, p: ArtifactParams, path) -> tuple[np.ndarray, list[dict]]:
    """Autoreject (local; Jas et al. 2017, autoreject's `AutoReject` with its default grid of
    interpolated-channel counts and consensus) fitted on one recording's trial windows and applied
    to them: (data (n_windows, n_channels, n_times) in uV, repaired where autoreject interpolated
    and as it was where it dropped the window; per window {"status": "kept" | "repaired" |
    "dropped", "channels": those it interpolated (repaired), those it found bad (dropped), []}). Thresholds are cross-validated over the
    windows (10 folds, or one per window below 10), seeded by `p.seed`. Needs every channel's
    position (interpolation) and 4 channels: PipelineError naming the file otherwise."""
    from autoreject import AutoReject

    require_positions(epochs, path, "eeg.artifacts.autoreject", "it interpolates bad channels")
    n_windows, n_channels = len(epochs), len(epochs.ch_names)
    if n_channels < 4 or n_windows < 2:
        raise PipelineError(f"{path}: eeg.artifacts.autoreject needs 4 or more channels and 2 or more trial windows a "
                            f"recording (it cross-validates thresholds over them); this one has {n_channels} and {n_windows}")
    ar = AutoReject(cv=min(AUTOREJECT_FOLDS, n_windows), random_state=p.seed, n_jobs=1, verbose=False)
    with warnings.catch_warnings():  # its grid's largest interpolation count leaves some folds no good channel
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)
        repaired, log = ar.fit_transform(epochs.copy(), return_log=True)
    data = epochs.get_data(units="uV")
    data[~log.bad_epochs] = repaired.get_data(units="uV")
    windows = []
    for dropped, labels in zip(log.bad_epochs, log.labels):  # labels: 0 good, 1 bad, 2 bad and interpolated
        status = "dropped" if dropped else "repaired" if (labels == 2).any() else "kept"
        marked = {"dropped": (1, 2), "repaired": (2,), "kept": ()}[status]
        windows.append({"status": status, "channels": [ch for ch, label in zip(log.ch_names, labels) if label in marked]})
    return data.astype(np.float32), windows
