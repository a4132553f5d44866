"""Topology view: persistence images of per-band EEG connectivity, with giotto-tda.

For each band the channels form a weighted graph with distance 1 - |correlation|; its
Vietoris-Rips persistence (H0: how clusters of channels merge, H1: loops of coupling) is
rasterised into persistence images.

The image grid is fixed from the known range of the filtration ([0, 1] for both birth and
persistence) rather than fitted on the data: this uses no statistics of any split, and it
avoids giotto-tda's failure on Rips H0, whose births are all 0 (a fitted grid would have zero
width on the birth axis and PersistenceImage tries to allocate petabytes). H0 therefore lands
in the first columns of its image as a profile of death times.
"""
from __future__ import annotations

import mne
import numpy as np
import pandas as pd
from gtda.diagrams import PersistenceImage
from gtda.homology import VietorisRipsPersistence

from pipeline import io
from pipeline.dataset import load_features, load_labels, load_manifest
from pipeline.parallel import LOCAL, stream
from pipeline.params import ComputeParams, Params, TopoParams
from pipeline.plots import plot_persistence_examples


def band_distances(epochs: np.ndarray, sfreq: float, bands: dict[str, tuple[float, float]]) -> np.ndarray:
    """1 - |Pearson correlation| between channels, per band.

    epochs: (n, n_channels, n_times) -> (n, n_bands, n_channels, n_channels), in [0, 1].
    """
    n, n_ch, _ = epochs.shape
    out = np.empty((n, len(bands), n_ch, n_ch), dtype=np.float64)
    for b, (low, high) in enumerate(bands.values()):
        x = mne.filter.filter_data(epochs.astype(np.float64), sfreq, low, high, verbose="error")
        x = x - x.mean(axis=-1, keepdims=True)
        x /= np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12
        corr = np.einsum("nct,ndt->ncd", x, x)
        out[:, b] = 1.0 - np.clip(np.abs(corr), 0.0, 1.0)
    idx = np.arange(n_ch)
    out[:, :, idx, idx] = 0.0
    return out


def persistence_images(distances: np.ndarray, p: TopoParams) -> np.ndarray:
    """Persistence images of Rips filtrations of distance matrices.

    distances: (n, n_bands, c, c) -> (n, n_bands * len(homology_dimensions), n_bins, n_bins),
    channels ordered band-major (band0-H0, band0-H1, band1-H0, ...).
    """
    n, n_bands, c, _ = distances.shape
    dims = tuple(p.homology_dimensions)
    diagrams = VietorisRipsPersistence(metric="precomputed", homology_dimensions=dims,
                                       n_jobs=1).fit_transform(distances.reshape(n * n_bands, c, c))
    # The grid's range: births and persistences both in [0, 1].
    grid = np.array([[[0.0, 1.0, d], [1.0, 1.0, d]] for d in dims]).reshape(1, -1, 3)
    images = PersistenceImage(sigma=p.sigma, n_bins=p.n_bins).fit(grid).transform(diagrams)
    return images.reshape(n, n_bands * len(dims), p.n_bins, p.n_bins).astype(np.float32)


def topo_features(eeg: np.ndarray, sfreq: float, p: TopoParams, chunks: list[np.ndarray] | None = None,
                  compute: ComputeParams = LOCAL) -> np.ndarray:
    """Persistence images from preprocessed EEG epochs (n, n_channels, n_times).

    `chunks` (trial indices, e.g. one subject each) are processed as `compute` says (pipeline.parallel)
    and streamed into the output, so `eeg` may be a memory-mapped array.
    """
    chunks = chunks if chunks is not None else [np.arange(len(eeg))]
    tasks = ((np.asarray(eeg[idx]), sfreq, p) for idx in chunks)  # drawn lazily: one chunk in memory at a time
    out = np.empty((len(eeg), len(p.bands) * len(p.homology_dimensions), p.n_bins, p.n_bins), np.float32)
    for idx, images in zip(chunks, stream(_chunk_images, tasks, compute, "topo features", "subject", len(chunks))):
        out[idx] = images
    return out


def _chunk_images(eeg: np.ndarray, sfreq: float, p: TopoParams) -> np.ndarray:
    return persistence_images(band_distances(eeg, sfreq, p.bands), p)


def features(trials: pd.DataFrame, params: Params, eeg: np.ndarray) -> np.ndarray:
    """The view's feature function (the stage's and predict's): persistence images of the
    trials' EEG features `eeg` (n_trials, n_channels, n_times; may be memory-mapped), one
    subject per task, (n_trials, n_bands * n_dims, n_bins, n_bins)."""
    subjects = trials["subject"].to_numpy()
    chunks = [np.flatnonzero(subjects == s) for s in dict.fromkeys(subjects)]
    return topo_features(eeg, params.eeg.sfreq, params.topo, chunks, params.compute)


def compute(params: Params) -> np.ndarray:
    """The features_topo stage: `features` of the EEG features (memory-mapped), and one example
    image per class (reports/figures/persistence_images.png)."""
    x = features(load_manifest(), params, load_features("eeg", mmap=True))
    labels, classes = load_labels()
    plot_persistence_examples(io.FIGURES / "persistence_images.png", x, labels, classes,
                              [f"{band} H{d}" for band in params.topo.bands for d in params.topo.homology_dimensions])
    return x
