"""Artifact cleaning of one recording as the field does it: ICA with ICLabel's component labels
(mne-icalabel), the confident non-brain components removed (`eeg.artifacts`).

ICA is fitted per recording on a copy high-passed at 1 Hz (and low-passed at 100 Hz where the
sampling rate allows) and average-referenced, as ICLabel was trained, and applied to the data the
EEG stage epochs. Blinks, eye movements and muscle activity often follow the class (sad trials
blink more, angry speech carries jaw EMG), so an EEG branch can learn them: cleaning takes that
away, and reports/artifacts.json says what was removed.
"""
from __future__ import annotations

import warnings

import mne
import numpy as np

from pipeline.data.readers import positioned
from pipeline.errors import PipelineError
from pipeline.params import ArtifactParams

ICLABEL_CLASSES = ("brain", "muscle artifact", "eye blink", "heart beat", "line noise", "channel noise", "other")


def fit_ica(raw: mne.io.BaseRaw, p: ArtifactParams, path) -> tuple[mne.preprocessing.ICA, list[dict]]:
    """ICA of `raw` (not changed) and ICLabel's verdict on each component: [{"component",
    "label" (ICLabel's most probable class), "p" (its probability), "removed" (a class of
    `p.iclabel_reject` above its threshold), "removed_as" (that class, the most probable one if
    several; None)}]. A count of components is capped at the data's rank (the average reference
    and interpolated channels lower it). Needs every channel's position (ICLabel reads
    topographies): PipelineError naming the file and the keys that give them otherwise."""
    from mne_icalabel.iclabel import iclabel_label_components

    unplaced = [c for c in raw.ch_names if c not in positioned(raw)]
    if unplaced:
        raise PipelineError(f"{path}: eeg.artifacts.ica needs every channel's position (ICLabel reads "
                            f"topographies); {', '.join(unplaced[:6])}{' ...' if len(unplaced) > 6 else ''} have "
                            "none: give them with eeg.montage, or leave them out with eeg.drop_channels")
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
