"""pipeline/baselines.py: handcrafted features by hand, train-only fitting, C chosen on validation."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from pipeline.baselines import (BASELINES, chosen, fit_on_fold, log_band_power, mel_statistics, pooled_images,
                                scale_blocks)


def test_log_band_power_finds_the_band_of_a_sine():
    sfreq = 128.0
    t = np.arange(256) / sfreq
    eeg = np.stack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 20 * t)])[None]  # alpha, beta
    bands = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
    power = log_band_power(eeg, sfreq, bands).reshape(2, 3)  # channel-major
    assert power[0].argmax() == 1 and power[1].argmax() == 2
    assert power[0, 1] - power[0, 0] > 5  # orders of magnitude, in log units


def test_mel_statistics_by_hand():
    mel = np.array([[1.0, 3.0], [2.0, 2.0]])[None, None]  # 1 trial, 2 bins, 2 frames
    assert mel_statistics(mel).tolist() == [[2.0, 2.0, 1.0, 0.0]]


def test_pooled_images_average_blocks():
    images = np.arange(16, dtype=float).reshape(1, 1, 4, 4)
    pooled = pooled_images(images, bins=2)
    assert pooled.tolist() == [[np.mean([0, 1, 4, 5]), np.mean([2, 3, 6, 7]), np.mean([8, 9, 12, 13]),
                                np.mean([10, 11, 14, 15])]]
    assert pooled_images(np.zeros((3, 6, 32, 32))).shape == (3, 6 * 8 * 8)


def _problem(n=90, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = rng.standard_normal((n, 5))
    x[:, 0] += labels  # one informative feature
    index = {"train": np.arange(0, 60), "val": np.arange(60, 75), "test": np.arange(75, 90)}
    return x, labels, index


def test_fit_on_fold_picks_c_on_validation_and_ignores_test():
    x, labels, index = _problem()
    probs, c, val_acc = fit_on_fold(x, labels, index, 3, c_grid=(1e-4, 1.0))
    assert c == {"C": 1.0} and val_acc > 0.5  # C = 1e-4 shrinks every weight to ~0: chance on validation
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # test trials changed beyond recognition change nothing of the fit, only their own predictions
    x2 = x.copy()
    x2[index["test"]] = 100.0
    probs2, c2, val_acc2 = fit_on_fold(x2, labels, index, 3, c_grid=(1e-4, 1.0))
    assert (c2, val_acc2) == (c, val_acc)
    np.testing.assert_allclose(probs2[index["val"]], probs[index["val"]])


def test_fit_on_fold_keeps_the_most_regularised_c_on_ties():
    """Every C of the grid separates this problem perfectly on validation: the smallest C (the
    most regularised) is kept, whatever the order of the grid."""
    x, labels, index = _problem()
    x[:, 0] = labels * 10.0  # far apart classes
    for c in (1.0, 10.0, 100.0):
        assert fit_on_fold(x, labels, index, 3, c_grid=(c,))[2] == 1.0  # the premise: a tie
    _, c, val_acc = fit_on_fold(x, labels, index, 3, c_grid=(100.0, 1.0, 10.0))
    assert (c, val_acc) == ({"C": 1.0}, 1.0)


def test_fit_on_fold_standardises_on_train_only():
    """Making one validation trial an outlier leaves every train prediction as it was: the scaler
    and the classifier see train trials only (a scaler fitted on every trial would shift)."""
    x, labels, index = _problem()
    probs, _, _ = fit_on_fold(x, labels, index, 3, c_grid=(1.0,))
    x2 = x.copy()
    x2[index["val"][0]] *= 50
    probs2, _, _ = fit_on_fold(x2, labels, index, 3, c_grid=(1.0,))
    np.testing.assert_allclose(probs2[index["train"]], probs[index["train"]])


def test_a_class_missing_from_train_gets_probability_zero():
    x, labels, index = _problem()
    labels = labels.copy()
    labels[index["train"]] = np.where(labels[index["train"]] == 2, 0, labels[index["train"]])
    probs, _, _ = fit_on_fold(x, labels, index, 3, c_grid=(1.0,))
    assert probs.shape == (90, 3) and np.all(probs[:, 2] == 0)


def test_tangent_space_baseline_fits_on_eeg():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    eeg = rng.standard_normal((60, 4, 128))
    eeg[labels == 1, 0] *= 3  # class 1: channel 0 louder
    index = {"train": np.arange(40), "val": np.arange(40, 50), "test": np.arange(50, 60)}
    baseline = BASELINES["eeg_tangent_space"]
    probs, _, val_acc = fit_on_fold(baseline.features({"eeg": eeg}, None), labels, index, 2, (1.0,),
                                    baseline.fitted_steps)
    assert val_acc == 1.0 and (probs[index["test"]].argmax(1) == labels[index["test"]]).all()


def test_chosen_follows_the_views_and_params(params):
    assert chosen(params, ["eeg", "mel", "topo", "acoustic"]) == [
        "eeg_band_power", "eeg_tangent_space", "mel_stats", "topo_images", "speech_egemaps", "speech_compare",
        "early_fusion"]
    assert chosen(params, ["eeg", "topo"]) == ["eeg_band_power", "eeg_tangent_space", "topo_images", "early_fusion"]
    no_ts = params.model_copy(update={"baselines": params.baselines.model_copy(update={"tangent_space": False})})
    assert "eeg_tangent_space" not in chosen(no_ts, ["eeg", "topo"])
    compare_only = params.model_copy(update={"acoustic": params.acoustic.model_copy(
        update={"feature_sets": ("ComParE_2016",)})})
    assert [n for n in chosen(compare_only, ["eeg", "acoustic"]) if n.startswith("speech")] == ["speech_compare"]


def test_speech_baselines_read_their_own_set_columns(params):
    """eGeMAPS and ComParE sit side by side in the acoustic array in feature_sets order; each
    baseline must read its own columns, whichever order the sets are listed in."""
    x = np.arange(2 * 6461, dtype=np.float32).reshape(2, 6461)
    np.testing.assert_array_equal(BASELINES["speech_egemaps"].features({"acoustic": x}, params), x[:, :88])
    np.testing.assert_array_equal(BASELINES["speech_compare"].features({"acoustic": x}, params), x[:, 88:])
    swapped = params.model_copy(update={"acoustic": params.acoustic.model_copy(
        update={"feature_sets": ("ComParE_2016", "eGeMAPSv02")})})
    np.testing.assert_array_equal(BASELINES["speech_egemaps"].features({"acoustic": x}, swapped), x[:, 6373:])


@pytest.mark.parametrize("views", [("eeg", "mel", "topo", "acoustic"), ("eeg", "mel", "topo"), ("eeg", "topo")])
def test_early_fusion_concatenates_the_fixed_features_of_the_views_there(params, views):
    rng = np.random.default_rng(0)
    x = {"eeg": rng.standard_normal((2, 3, 128)), "mel": rng.standard_normal((2, 1, 4, 6)),
         "topo": rng.standard_normal((2, 2, 16, 16)), "acoustic": rng.standard_normal((2, 6461))}
    x = {m: x[m] for m in views}
    p = params.model_copy(update={"baselines": params.baselines.model_copy(update={"bands": {"alpha": (8.0, 13.0)}}),
                                  "eeg": params.eeg.model_copy(update={"sfreq": 128.0})})
    width = BASELINES["early_fusion"].features(x, p).shape[1]
    assert width == 3 + (8 if "mel" in views else 0) + 2 * 64 + (6461 if "acoustic" in views else 0)


def test_early_fusion_blocks_get_equal_total_variance_after_standardisation(params):
    """A wide part of early fusion (ComParE's thousands of columns) would outweigh a narrow one in
    the penalty; after scaling each part has total variance 1 on the train trials, and the
    blocks match the parts' widths."""
    rng = np.random.default_rng(0)
    x = {"eeg": rng.standard_normal((40, 3, 128)), "topo": rng.standard_normal((40, 2, 16, 16))}
    p = params.model_copy(update={"baselines": params.baselines.model_copy(update={"bands": {"alpha": (8.0, 13.0)}}),
                                  "eeg": params.eeg.model_copy(update={"sfreq": 128.0})})
    blocks = BASELINES["early_fusion"].blocks(x, p)
    assert blocks == (3, 2 * 64)
    z = StandardScaler().fit_transform(BASELINES["early_fusion"].features(x, p))
    scaled = scale_blocks(z, blocks)
    assert [scaled[:, :3].var(axis=0).sum(), scaled[:, 3:].var(axis=0).sum()] == pytest.approx([1.0, 1.0])
    assert BASELINES["eeg_band_power"].blocks(x, p) == ()  # a single view is not rescaled


def test_block_scaling_is_chosen_on_validation_where_it_helps():
    """Five informative columns beside 2,000 of noise: plain standardisation spends the penalty
    on the noise, block scaling weighs the two parts alike and finds the signal; validation
    picks it there, and not where the wide part holds the signal."""
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 60)
    signal = labels[:, None] * 1.0 + rng.standard_normal((120, 5))
    x = np.concatenate([signal, rng.standard_normal((120, 2000))], axis=1)
    index = {"train": np.arange(0, 120, 2), "val": np.arange(1, 120, 4), "test": np.arange(3, 120, 4)}
    accuracy, kept = {}, {}
    for name, blocks in (("plain", ()), ("blocks", (5, 2000))):
        probs, kept[name], _ = fit_on_fold(x, labels, index, 2, (0.001, 0.01, 0.1, 1.0), blocks=blocks)
        accuracy[name] = (probs[index["test"]].argmax(1) == labels[index["test"]]).mean()
    assert accuracy["blocks"] >= accuracy["plain"] + 0.1, accuracy
    assert kept["blocks"]["block_scaled"] is True and "block_scaled" not in kept["plain"]  # validation chose it
    # where the wide part carries the signal alone, validation keeps the parts unscaled
    wide = np.concatenate([rng.standard_normal((120, 5)), labels[:, None] * 0.3 + rng.standard_normal((120, 2000))],
                          axis=1)
    assert fit_on_fold(wide, labels, index, 2, (0.001, 0.01, 0.1, 1.0), blocks=(5, 2000))[1]["block_scaled"] is False


def test_train_standard_scaler_follows_the_same_rule():
    """The baselines' scaler: StandardScaler on ordinary features, 0 on train-constant ones."""
    from sklearn.preprocessing import StandardScaler

    from pipeline.baselines import TrainStandardScaler

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    x[:30, 0], x[30:, 0] = 0.0, 5.0
    x[:30, 1], x[30:, 1] = 0.9979 + rng.normal(scale=1e-9, size=30), 0.42
    z = TrainStandardScaler().fit(x[:30]).transform(x)
    np.testing.assert_array_equal(z[:, :2], 0.0)
    np.testing.assert_array_equal(z[:, 2], StandardScaler().fit(x[:30]).transform(x)[:, 2])
    assert np.abs(StandardScaler().fit(x[:30]).transform(x)[30:, :2]).min() >= 5.0  # what it replaces
    incremental = TrainStandardScaler().partial_fit(x[:15]).partial_fit(x[15:30])
    np.testing.assert_array_equal(incremental.transform(x)[:, :2], 0.0)


def test_train_row_space_fits_the_same_logistic_regression():
    """More columns than train rows: the fit in the train rows' span is the same model (to a tight
    tolerance, both fits converged), in as many coordinates as the rows' rank; fewer columns:
    the identity."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.baselines import TrainRowSpace

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 400)), rng.integers(0, 3, 60)
    x[:, 0] += y  # one informative column
    train, held_out = slice(0, 40), slice(40, 60)
    space = TrainRowSpace().fit(x[train])
    assert space.basis_.shape == (400, 40)
    full = LogisticRegression(C=0.5, tol=1e-10, max_iter=100_000).fit(x[train], y[train])
    small = LogisticRegression(C=0.5, tol=1e-10, max_iter=100_000).fit(space.transform(x[train]), y[train])
    np.testing.assert_allclose(small.predict_proba(space.transform(x[held_out])), full.predict_proba(x[held_out]),
                               atol=1e-6)
    narrow = rng.normal(size=(40, 10))
    assert TrainRowSpace().fit(narrow).transform(narrow) is narrow
