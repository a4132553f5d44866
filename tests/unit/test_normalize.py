"""pipeline/normalize.py: statistics from train rows only; standardisation per modality axes."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.modalities import MODALITIES
from pipeline.normalize import apply_normalizer, fit_normalizer, fold_normalizers

NORM_AXES = {m: spec.norm_axes for m, spec in MODALITIES.items()}

SHAPES = {"eeg": (20, 4, 50), "mel": (20, 1, 6, 10), "topo": (20, 3, 5, 5), "acoustic": (20, 7)}


def _data(modality: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = SHAPES[modality]
    # a different offset and scale on every element of the non-pooled axes
    kept = [1 if a in NORM_AXES[modality] else s for a, s in enumerate(shape)]
    offset = rng.normal(0, 10, size=kept)
    scale = rng.uniform(0.5, 5, size=kept)
    return (offset + scale * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("modality", list(NORM_AXES))
def test_fit_uses_only_the_rows_passed(modality):
    x = _data(modality)
    train, held_out = np.arange(12), np.arange(12, 20)
    mean, std = fit_normalizer(x[train], NORM_AXES[modality])

    changed = x.copy()
    changed[held_out] *= 1000.0
    changed[held_out] += 50.0
    mean2, std2 = fit_normalizer(changed[train], NORM_AXES[modality])
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(std, std2)

    # the (wrong) fit that includes the held-out rows sees the change
    leaky_mean, leaky_std = fit_normalizer(changed, NORM_AXES[modality])
    assert not np.allclose(leaky_mean, mean)
    assert not np.allclose(leaky_std, std)


@pytest.mark.parametrize("modality", list(NORM_AXES))
def test_statistics_shape_broadcasts_without_sample_axis(modality):
    x = _data(modality)
    mean, std = fit_normalizer(x, NORM_AXES[modality])
    expected = tuple(1 if a in NORM_AXES[modality] else s for a, s in enumerate(x.shape))[1:]
    assert mean.shape == std.shape == expected
    assert mean.dtype == std.dtype == np.float32


@pytest.mark.parametrize("modality", list(NORM_AXES))
def test_apply_makes_train_zero_mean_unit_std_per_channel(modality):
    x = _data(modality)
    train = np.arange(12)
    axes = NORM_AXES[modality]
    mean, std = fit_normalizer(x[train], axes)
    z = apply_normalizer(x, mean, std)
    assert z.shape == x.shape and z.dtype == np.float32
    np.testing.assert_allclose(z[train].mean(axis=axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(z[train].std(axis=axes), 1.0, atol=1e-4)
    # held-out rows are transformed with the train statistics, not re-standardised
    np.testing.assert_allclose(z[12:], (x[12:] - mean) / std, rtol=1e-5, atol=1e-5)
    # before normalising the channels were far from standard
    assert np.abs(x[train].mean(axis=axes)).max() > 1.0


def test_statistics_are_per_channel_not_global():
    x = _data("eeg")
    mean, std = fit_normalizer(x, NORM_AXES["eeg"])
    assert mean.shape == (4, 1)
    np.testing.assert_allclose(mean[:, 0], x.mean(axis=(0, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std[:, 0], x.std(axis=(0, 2)), rtol=1e-5)


def test_constant_channel_maps_to_zero_not_nan():
    x = _data("eeg")
    x[:, 2, :] = 7.5
    mean, std = fit_normalizer(x, NORM_AXES["eeg"])
    z = apply_normalizer(x, mean, std)
    assert np.isfinite(z).all()
    np.testing.assert_array_equal(z[:, 2, :], 0.0)
    assert np.isinf(std[2, 0])  # 0 on any trial, held-out ones included


def test_feature_constant_on_train_maps_to_zero_on_held_out_trials_too():
    """A feature constant on the train trials (exactly, or up to float32 rounding around 1.0)
    that moves on held-out trials carries nothing train could learn: it maps to 0 there too,
    instead of to (value - mean) / tiny std, which collapsed a fold of a real-speech study."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    x[:30, 0] = 0.0
    x[30:, 0] = 27920.0                                    # exactly constant on train
    x[:30, 1] = np.float32(0.9979) + rng.choice([0, 1], 30) * np.spacing(np.float32(0.9979))
    x[30:, 1] = 0.42                                       # constant up to one float32 step
    mean, std = fit_normalizer(x[:30], (0,))
    z = apply_normalizer(x, mean, std)
    np.testing.assert_array_equal(z[:, :2], 0.0)
    np.testing.assert_allclose(z[:30, 2].std(), 1.0, rtol=1e-5)  # a real feature is standardised
    assert np.abs(z[30:, 2]).max() < 10


def test_fold_normalizers_fit_each_fold_on_its_train_subjects_only():
    """The normalize stage's statistics: fold k's mean and std are those of fold k's train
    trials, whatever the val and test trials hold (here: wildly off)."""
    x = _data("eeg")
    subjects = np.repeat(["a", "b", "c", "d", "e"], 4)
    folds = [{"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]},
             {"train": ["c", "d", "e"], "val": ["a"], "test": ["b"]}]
    x[subjects == "e"] = x[subjects == "e"] * 100 + 40  # a test subject of fold 0
    means, stds, summary = fold_normalizers(x, subjects, folds, NORM_AXES["eeg"])
    assert means.shape == (2, 4, 1) and stds.shape == (2, 4, 1)
    for k, fold in enumerate(folds):
        train = np.isin(subjects, fold["train"])
        mean, std = fit_normalizer(x[train], NORM_AXES["eeg"])
        np.testing.assert_array_equal(means[k], mean)
        np.testing.assert_array_equal(stds[k], std)
    # fold 0's train part is standardised; its test subject, far off, is not pulled in
    assert summary[0]["train"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert summary[0]["train"]["std"] == pytest.approx(1.0, abs=1e-3)
    assert summary[0]["test"]["mean"] > 5
