"""pipeline/pretraining.py: one branch run on one fold."""
from __future__ import annotations

import numpy as np
import torch

from pipeline import pretraining
from pipeline.folds import FoldData, NormalizedRows
from pipeline.pretraining import train_branch


def _fold(n: int = 36) -> FoldData:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2] * (n // 6))
    x = torch.randn(n, 2, 8, 8, generator=g) + labels[:, None, None, None]
    index = {"train": np.arange(0, 24), "val": np.arange(24, 30), "test": np.arange(30, 36)}
    return FoldData({"topo": NormalizedRows(x.numpy(), np.float32(0), np.float32(1))}, labels, index)


def test_train_branch_is_a_function_of_its_seed(params):
    p = params.train.model_copy(update={"epochs": 2, "batch_size": 8, "embed_dim": 6, "loss_temperature": 3.0})
    runs = [train_branch("topo", _fold(), p, 3, seed, torch.device("cpu")) for seed in (4, 4, 5)]
    (m1, h1), (m2, h2), (m3, h3) = runs
    assert h1 == h2 and h1 != h3
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert m1.embed_dim == 6 and m1.temperature == 3.0 and len(h1) == 2


def test_class_weights_come_from_the_train_labels_only(params, monkeypatch):
    seen = []
    real = pretraining.class_weights
    monkeypatch.setattr(pretraining, "class_weights", lambda labels, n: seen.append(labels.copy()) or real(labels, n))
    data = _fold()
    train_branch("topo", data, params.train.model_copy(update={"epochs": 1, "batch_size": 8}), 3, 0, torch.device("cpu"))
    (labels,) = seen
    np.testing.assert_array_equal(labels, data.labels[data.index["train"]].numpy())
