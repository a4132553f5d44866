"""pipeline/features/topo.py: per-band connectivity distances and persistence images, on
synthetic coupling patterns and on a real EEGLAB recording."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from pipeline.data.readers import read_eeg
from pipeline.features.topo import band_distances, persistence_images, topo_features
from pipeline.params import TopoParams

SFREQ = 128.0
BANDS = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
P = TopoParams(source="connectivity", bands=BANDS, homology_dimensions=(0, 1), n_bins=16, sigma=0.05)


def _band_noise(rng, n_signals: int, n: int, low: float, high: float) -> np.ndarray:
    sos = signal.butter(4, [low, high], btype="bandpass", fs=SFREQ, output="sos")
    x = signal.sosfiltfilt(sos, rng.standard_normal((n_signals, n)), axis=-1)
    return x / x.std(axis=-1, keepdims=True)


def _two_groups_in_alpha(rng, n_epochs: int = 2, seconds: float = 4.0) -> np.ndarray:
    """8 channels: 0-3 share one alpha source, 4-7 another; independent elsewhere."""
    n = int(seconds * SFREQ)
    out = np.empty((n_epochs, 8, n))
    for e in range(n_epochs):
        sources = _band_noise(rng, 2, n, 8.0, 13.0)
        x = 0.3 * rng.standard_normal((8, n))  # broadband, independent per channel
        x[:4] += 3.0 * sources[0]
        x[4:] += 3.0 * sources[1]
        out[e] = x
    return out.astype(np.float32)


# ------------------------------------------------------------------ band_distances

def test_band_distances_see_shared_sources():
    epochs = _two_groups_in_alpha(np.random.default_rng(0))
    d = band_distances(epochs, SFREQ, {"alpha": (8.0, 13.0), "beta": (18.0, 30.0)})
    assert d.shape == (2, 2, 8, 8)
    assert np.isfinite(d).all() and d.min() >= 0.0 and d.max() <= 1.0
    idx = np.arange(8)
    np.testing.assert_array_equal(d[:, :, idx, idx], 0.0)
    np.testing.assert_allclose(d, np.swapaxes(d, -1, -2), atol=1e-12)

    alpha = d[:, 0]
    same = np.zeros((8, 8), bool)
    same[:4, :4] = same[4:, 4:] = True
    off_diag = ~np.eye(8, dtype=bool)
    within, across = alpha[:, same & off_diag], alpha[:, ~same]
    assert within.max() < 0.2, within.max()
    assert across.min() > 0.6, across.min()
    # in beta the channels are independent: no group structure, all far apart
    beta = d[:, 1]
    assert beta[:, off_diag].min() > 0.6


def test_band_distances_ignore_amplitude():
    epochs = _two_groups_in_alpha(np.random.default_rng(1), n_epochs=1)
    scaled = epochs * np.linspace(0.1, 10, 8)[None, :, None].astype(np.float32)
    bands = {"alpha": (8.0, 13.0)}
    np.testing.assert_allclose(band_distances(epochs, SFREQ, bands),
                               band_distances(scaled, SFREQ, bands), atol=1e-6)


# ------------------------------------------------------------------ persistence_images

def _clustered(rng, sizes: tuple[int, ...], within: float = 0.1, across: float = 0.9) -> np.ndarray:
    """A 16x16 distance matrix: channels in the same cluster close, others far (with jitter)."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    d = np.where(labels[:, None] == labels[None, :], within, across)
    d = d + rng.uniform(-0.05, 0.05, size=d.shape)
    d = np.clip((d + d.T) / 2, 0, 1)
    np.fill_diagonal(d, 0.0)
    return d


def _matrices(rng, sizes, n: int = 2) -> np.ndarray:
    return np.stack([np.stack([_clustered(rng, sizes) for _ in BANDS]) for _ in range(n)])


def test_persistence_images_shape_and_finite():
    rng = np.random.default_rng(0)
    d = np.concatenate([_matrices(rng, (16,)), _matrices(rng, (4, 4, 4, 4))])
    images = persistence_images(d, P)
    assert images.shape == (4, len(BANDS) * 2, P.n_bins, P.n_bins)
    assert images.dtype == np.float32
    assert np.isfinite(images).all()
    assert (images[:, 0::2].reshape(4, len(BANDS), -1).sum(-1) > 0).all(), "H0 images are empty"


def test_persistence_images_single_dimension():
    d = _matrices(np.random.default_rng(0), (16,), n=3)
    p = TopoParams(source="connectivity", bands=BANDS, homology_dimensions=(1,), n_bins=8, sigma=0.05)
    assert persistence_images(d, p).shape == (3, len(BANDS), 8, 8)


def test_h0_images_tell_one_cluster_from_four():
    """One cluster: all 15 H0 bars die early (within-cluster distance). Four clusters: 3 of
    the 15 die late (across-cluster distance), so the four-cluster H0 image puts about a fifth
    of its mass where the one-cluster image has none."""
    rng = np.random.default_rng(1)
    one = persistence_images(_matrices(rng, (16,), n=2), P)
    four = persistence_images(_matrices(rng, (4, 4, 4, 4), n=2), P)
    for b in range(len(BANDS)):
        h0 = 2 * b  # band-major: band0-H0, band0-H1, band1-H0, ...
        empty_for_one = one[:, h0].max(axis=0) < 1e-3 * one[:, h0].max()
        for img in four[:, h0]:
            late = img[empty_for_one].sum() / img.sum()
            assert 0.1 < late < 0.35, late
        for img in one[:, h0]:
            assert img[empty_for_one].sum() == 0.0 or img[empty_for_one].sum() / img.sum() < 1e-3
        # and the two patterns are far apart compared to their H0 size
        assert np.abs(one[0, h0] - four[0, h0]).sum() > 0.2 * one[0, h0].sum()


# ------------------------------------------------------------------ real EEG

@pytest.fixture(scope="module")
def real_windows(realdata):
    raw = read_eeg(realdata / "eeg" / "test_raw.set")
    assert raw.info["sfreq"] == 128.0 and len(raw.ch_names) == 32
    sfreq = raw.info["sfreq"]
    x = raw.get_data(units="uV")
    n = int(2 * sfreq)
    starts = [int(s * sfreq) for s in (10.0, 60.0, 120.0, 200.0)]
    return np.stack([x[:, s:s + n] for s in starts]).astype(np.float32), sfreq


def test_topo_features_on_real_eeg(real_windows, params):
    """Rips H0 of real connectivity: every birth is 0; must not raise giotto-tda's MemoryError."""
    windows, sfreq = real_windows
    out = topo_features(windows, sfreq, params.topo)
    n_maps = len(params.topo.bands) * len(params.topo.homology_dimensions)
    assert out.shape == (len(windows), n_maps, params.topo.n_bins, params.topo.n_bins)
    assert np.isfinite(out).all()
    assert (out.reshape(len(windows), n_maps, -1).max(-1) > 0).all(), "an empty persistence image"
    # different windows of real EEG have different topology
    assert not np.allclose(out[0], out[1])
