"""pipeline/pretraining.py: one branch run on one fold."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import training
from pipeline.folds import FoldData
from pipeline.pretraining import train_branch
from pipeline.training import predict_proba

from factories import fold_data, split_index


def _fold(n: int = 36) -> FoldData:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2] * (n // 6))
    x = torch.randn(n, 2, 8, 8, generator=g) + labels[:, None, None, None]
    return fold_data({"topo": x}, labels, split_index(24, 6, 6))


def test_train_branch_is_a_function_of_its_seed(params):
    p = params.train.model_copy(update={"epochs": 2, "batch_size": 8, "embed_dim": 6, "loss_temperature": 3.0})
    runs = [train_branch("topo", _fold(), p, 3, seed, torch.device("cpu")) for seed in (4, 4, 5)]
    (m1, h1), (m2, h2), (m3, h3) = runs
    assert h1 == h2 and h1 != h3
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert m1.embed_dim == 6 and m1.temperature == 3.0 and len(h1) == 2


def test_class_weights_come_from_the_train_labels_only(params, monkeypatch):
    seen = []
    real = training.class_weights
    monkeypatch.setattr(training, "class_weights", lambda labels, n: seen.append(labels.copy()) or real(labels, n))
    data = _fold()
    train_branch("topo", data, params.train.model_copy(update={"epochs": 1, "batch_size": 8}), 3, 0, torch.device("cpu"))
    (labels,) = seen
    np.testing.assert_array_equal(labels, data.labels[data.index["train"]].numpy())


def _two_task_fold(n: int = 60) -> FoldData:
    """Primary labels carried by channel 0, a secondary task (2 classes) by channel 1 alone;
    every fifth trial has no secondary label (-1)."""
    g = torch.Generator().manual_seed(1)
    primary = torch.tensor([0, 1, 2] * (n // 3))
    secondary = torch.tensor([0, 0, 1, 1, 1] * (n // 5))
    x = torch.randn(n, 2, 8, 8, generator=g) * 0.3
    x[:, 0] += primary[:, None, None]
    x[:, 1] += 2.0 * secondary[:, None, None]
    secondary[::5] = -1
    return fold_data({"topo": x}, torch.stack([primary, secondary], 1), split_index(40, 10, 10))


def test_a_secondary_task_gets_its_own_head_and_learns_its_labels(params):
    data = _two_task_fold()
    p = params.train.model_copy(update={"epochs": 30, "patience": 30, "batch_size": 8, "lr": 0.01})
    model, _ = train_branch("topo", data, p, 3, 0, torch.device("cpu"), {"sex": ["f", "m"]})
    assert model.task_sizes == [3, 2] and model.config()["tasks"] == {"sex": ["f", "m"]}
    probs = predict_proba(model, data.inputs, torch.device("cpu"))
    assert probs.shape == (60, 5)
    np.testing.assert_allclose(probs[:, :3].sum(1), 1, rtol=1e-5)  # a softmax per task
    np.testing.assert_allclose(probs[:, 3:].sum(1), 1, rtol=1e-5)
    test = data.index["test"]
    labelled = test[data.labels[test, 1].numpy() >= 0]
    assert (probs[labelled, 3:].argmax(1) == data.labels[labelled, 1].numpy()).mean() >= 0.8
    assert (probs[test, :3].argmax(1) == data.labels[test, 0].numpy()).mean() >= 0.8


def test_uncertainty_weighting_learns_a_log_variance_per_task(params):
    data = _two_task_fold()
    p = params.train.model_copy(update={"epochs": 3, "batch_size": 8, "task_weighting": "uncertainty"})
    seen = {}
    real = training.MultiTaskLoss.forward

    def spy(self, logits, target):
        seen["log_vars"] = self.log_vars
        return real(self, logits, target)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.MultiTaskLoss, "forward", spy)
        train_branch("topo", data, p, 3, 0, torch.device("cpu"), {"sex": ["f", "m"]})
    assert seen["log_vars"].shape == (2,) and not torch.equal(seen["log_vars"].detach(), torch.zeros(2))
