"""pipeline/explain.py and pipeline/attribution.py: Haufe patterns, Integrated Gradients and their
reductions, on inputs whose answer is known by construction."""
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.attribution import (channel_attribution, feature_importance, integrated_gradients, task_log_probs,
                                  view_sums)
from pipeline.explain import class_means, explained_rows, finite_or_none, haufe_patterns, nan_mean, top_features, view_shares
from pipeline.stages.explain import agreement, fusion_section


def distractor_data(n=600, seed=0):
    """Haufe et al.'s example: feature 0 = signal + distractor, feature 1 = the distractor alone,
    feature 2 = independent noise. A good classifier weights feature 1 strongly (to cancel the
    distractor) though it carries no signal; its pattern there is much smaller."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    distractor = 3.0 * rng.normal(size=n)
    x = np.stack([(2 * y - 1) + distractor + 0.3 * rng.normal(size=n), distractor, rng.normal(size=n)], axis=1)
    return x, y, {"train": np.arange(0, 400), "val": np.arange(400, 500), "test": np.arange(500, n)}


def test_haufe_patterns_are_not_the_weights():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y, index = distractor_data()
    patterns, classes, val_acc = haufe_patterns(x, y, index, [1.0])
    assert patterns.shape == (2, 3) and list(classes) == [0, 1] and val_acc > 0.9
    np.testing.assert_array_equal(patterns[0], -patterns[1])  # two classes: one weight vector
    z = StandardScaler().fit_transform(x[index["train"]])
    weights = LogisticRegression(C=1.0, max_iter=5000).fit(z, y[index["train"]]).coef_[0]
    np.testing.assert_allclose(patterns[1], np.cov(z.T) @ weights, rtol=1e-6)  # Haufe: cov(X) w, in standardised units
    assert abs(weights[1]) > 0.75 * abs(weights[0])          # the weights lean on the distractor ...
    assert abs(patterns[1, 1]) < 0.6 * abs(patterns[1, 0])   # ... the pattern much less
    assert patterns[1, 0] > 0 and abs(patterns[1, 2]) < 0.2 * patterns[1, 0]


def test_haufe_patterns_one_row_per_class_beyond_two():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 100)
    x = rng.normal(size=(300, 4))
    x[:, 2] += 2.0 * y  # class signal on feature 2 alone
    index = {"train": np.arange(0, 300, 2), "val": np.arange(1, 300, 2), "test": np.arange(0)}
    patterns, classes, _ = haufe_patterns(x, y, index, [0.1, 1.0])
    assert patterns.shape == (3, 4) and list(classes) == [0, 1, 2]
    assert patterns[0, 2] < -1.0 and patterns[2, 2] > 1.0  # the outer classes' patterns sit on feature 2
    assert np.abs(np.delete(patterns[[0, 2]], 2, axis=1)).max() < 0.2


def test_haufe_patterns_with_more_features_than_train_trials_are_in_feature_space():
    """The baselines fit in the span of the train rows there (baselines.TrainRowSpace); the
    patterns come back in the features' coordinates: cov(X) w of the same model, one per feature."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 60))
    x[:, 3] += 1.5 * y
    index = {"train": np.arange(0, 80, 2), "val": np.arange(1, 80, 2), "test": np.arange(0)}
    patterns, _, _ = haufe_patterns(x, y, index, [0.1])
    assert patterns.shape == (2, 60) and np.argmax(patterns[1]) == 3
    z = StandardScaler().fit_transform(x[index["train"]])
    weights = LogisticRegression(C=0.1, tol=1e-10, max_iter=100_000).fit(z, y[index["train"]]).coef_[0]
    np.testing.assert_allclose(patterns[1], np.cov(z.T) @ weights, atol=1e-4)


class TwoViews(nn.Module):
    """Logits from view a alone (view b is read and ignored), three classes."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(5, 3)

    def forward(self, inputs):
        return self.a(inputs["a"]) + 0.0 * self.b(inputs["b"])


def test_integrated_gradients_complete_and_blind_to_an_ignored_view():
    torch.manual_seed(0)
    model = TwoViews().eval()
    x = {"a": torch.randn(6, 4), "b": torch.randn(6, 5)}
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    forward = task_log_probs(model, [3], 0)
    attributions = integrated_gradients(forward, x, target, steps=64)
    assert attributions["a"].shape == (6, 4) and torch.equal(attributions["b"], torch.zeros(6, 5))
    change = (forward(x) - forward({m: torch.zeros_like(v) for m, v in x.items()}))[torch.arange(6), target]
    np.testing.assert_allclose(view_sums(attributions).sum(axis=1), change.detach().numpy(), atol=2e-3)
    shares = view_shares(view_sums(attributions))
    np.testing.assert_array_equal(shares[:, 1], 0.0)
    np.testing.assert_allclose(shares[:, 0], 1.0)


def test_log_probs_read_the_task_columns():
    """Tasks of 5, 3 and 3 classes: the second task is columns 5 to 7."""
    out = task_log_probs(lambda inputs: inputs["x"], [5, 3, 3], 1)({"x": torch.arange(22.0).reshape(2, 11)})
    np.testing.assert_allclose(out.exp().sum(dim=1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out.numpy(), torch.log_softmax(torch.arange(22.0).reshape(2, 11)[:, 5:8], 1).numpy())
    cooled = task_log_probs(lambda inputs: inputs["x"], [5, 3, 3], 1, 2.0)({"x": torch.arange(22.0).reshape(2, 11)})
    np.testing.assert_allclose(cooled.numpy(), torch.log_softmax(torch.arange(22.0).reshape(2, 11)[:, 5:8] / 2, 1).numpy())


def test_view_shares_sum_to_one_and_a_silent_trial_splits_evenly():
    shares = view_shares(np.array([[2.0, -2.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 3.0]]))
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(shares[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(shares[1], 1 / 3)
    np.testing.assert_allclose(shares[2], [0.25, 0.0, 0.75])


def test_signed_means_let_noise_cancel():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(2000, 3, 10))
    noise[:, 1] += 0.1  # channel 1 moves every trial's decision towards its true class a little
    channels = channel_attribution(torch.from_numpy(noise))
    assert channels.argmax() == 1 and abs(channels[0]) < 0.5 * channels[1]
    features = feature_importance(torch.from_numpy(noise[:, :, 0]))
    assert features.argmax() == 1


def test_class_means_and_top_features():
    means = class_means(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 2]), 3)
    np.testing.assert_array_equal(means[[0, 2], 0], [2.0, 5.0])
    assert np.isnan(means[1, 0])
    assert top_features(np.array([0.1, 0.5, 0.5, -1.0]), ["a", "b", "c", "d"], 3) == [["b", 0.5], ["c", 0.5], ["a", 0.1]]


def test_explained_rows_are_validation_and_test_drawn_by_seed():
    index = {"train": np.arange(0, 50), "val": np.arange(50, 70), "test": np.arange(70, 100)}
    rows = explained_rows(index, 30, (0, 1))
    assert len(rows) == 30 and rows.min() >= 50 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, explained_rows(index, 30, (0, 1)))
    assert not np.array_equal(rows, explained_rows(index, 30, (0, 2)))
    np.testing.assert_array_equal(explained_rows(index, 80, 0), np.arange(50, 100))


@pytest.mark.parametrize("n", [1, 7])
def test_integrated_gradients_batches_any_trial_count(n):
    model = TwoViews().eval()
    x = {"a": torch.randn(n, 4), "b": torch.randn(n, 5)}
    out = integrated_gradients(task_log_probs(model, [3], 0), x, torch.zeros(n, dtype=torch.long), 4, batch=3)
    assert out["a"].shape == (n, 4)


def test_nan_means_and_json_without_nan():
    np.testing.assert_array_equal(nan_mean([np.array([1.0, np.nan, np.nan]), np.array([3.0, 2.0, np.nan])])[:2], [2.0, 2.0])
    assert np.isnan(nan_mean([np.array([np.nan]), np.array([np.nan])])[0])
    assert finite_or_none({"a": [1.0, float("nan")], "b": {"c": float("inf"), "d": "x"}}) == \
        {"a": [1.0, None], "b": {"c": None, "d": "x"}}
    means = class_means(np.array([[1.0, np.nan], [3.0, np.nan], [5.0, 4.0]]), np.array([0, 0, 1]), 2)
    np.testing.assert_array_equal(means[0, 0], 2.0)
    assert np.isnan(means[0, 1]) and means[1, 1] == 4.0


def test_view_shares_skip_a_view_a_fold_did_not_fuse():
    """Run 1 fused eeg and mel, run 2 eeg and topo: topo's mean is run 2's alone, not diluted by
    run 1's absence; the agreement with the ablation ranks only views with a share."""
    from pipeline.dataset import Trials

    nan = np.nan

    def run(share):
        return {"share": {"label": {"all": np.array(share), "contribution": np.array(share),
                                    "class": np.array([share, share])}}}

    tasks = {"label": Trials(labels=np.array([0, 1]), subjects=np.array(["a", "b"]), classes=["x", "y"], folds=[])}
    fused = [run([0.6, 0.4, nan]), run([0.2, nan, 0.8])]
    views = ["eeg", "mel", "topo"]
    with mock.patch("pipeline.stages.explain.ablation_drop", return_value={"eeg": 0.1, "mel": 0.0, "topo": 0.05}):
        section = fusion_section(views, tasks, fused)
    assert section["view_share"]["label"] == pytest.approx({"eeg": 0.4, "mel": 0.4, "topo": 0.8})
    assert section["view_share_per_class"]["label"]["y"]["topo"] == pytest.approx(0.8)
    agree = agreement({"eeg": 0.5, "mel": nan, "topo": 0.2}, {"eeg": 0.1, "mel": 0.3, "topo": 0.0})
    assert agree == {"share_order": ["eeg", "topo"], "ablation_order": ["eeg", "topo"],
                     "spearman": pytest.approx(1.0), "same_top": True}
    assert agreement({"eeg": 0.5, "mel": nan}, {"eeg": 0.1, "mel": 0.3}) is None
