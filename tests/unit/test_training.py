"""pipeline/training.py: the loss, seeding, the training loop and device resolution."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.training import (Callback, ClassificationLoss, FitConfig, MultiTaskLoss, class_weights, fit, loss_and_accuracy,
                               predict_proba, resolve_device, seed_everything)


def _logits_targets(n: int = 16, c: int = 5, scale: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randint(0, c, (n,), generator=g)


# ------------------------------------------------------------------ the loss

def test_ce_equals_cross_entropy_at_temperature_one():
    logits, y = _logits_targets()
    loss = ClassificationLoss("ce", 1.0)(logits, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))


def test_ce_divides_logits_by_temperature():
    logits, y = _logits_targets()
    loss = ClassificationLoss("ce", 4.0)(logits, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits / 4.0, y))
    assert not torch.isclose(loss, F.cross_entropy(logits, y))


def test_large_temperature_on_large_logits_is_finite():
    logits, y = _logits_targets(n=32, c=5, scale=1e3)
    logits.requires_grad_(True)
    loss = ClassificationLoss("ce", 2000.0)(logits, y)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(logits.detach() / 2000.0, y))
    assert loss.item() < math.log(5) + 2.0  # the softened logits are not saturated
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    # focal with the same temperature too
    logits.grad = None
    focal = ClassificationLoss("focal", 2000.0, gamma=2.0)(logits, y)
    focal.backward()
    assert torch.isfinite(focal) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_focal_gamma_zero_uniform_weights_is_ce(temperature):
    logits, y = _logits_targets()
    focal = ClassificationLoss("focal", temperature, gamma=0.0, weights=torch.ones(5))(logits, y)
    torch.testing.assert_close(focal, F.cross_entropy(logits / temperature, y))
    unweighted = ClassificationLoss("focal", temperature, gamma=0.0)(logits, y)
    torch.testing.assert_close(unweighted, F.cross_entropy(logits / temperature, y))


def test_focal_gamma_zero_with_weights_is_weighted_ce():
    logits, y = _logits_targets()
    w = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    focal = ClassificationLoss("focal", 1.0, gamma=0.0, weights=w)(logits, y)
    torch.testing.assert_close(focal, F.cross_entropy(logits, y, weight=w))
    assert not torch.isclose(focal, F.cross_entropy(logits, y))


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[4.0, 0.0, 0.0]])  # p_t ~ 0.96
    hard = torch.tensor([[0.0, 1.0, 1.0]])  # p_t ~ 0.16
    y = torch.tensor([0])
    gamma = 2.0

    def ratio(logits):
        focal = ClassificationLoss("focal", 1.0, gamma=gamma)(logits, y)
        ce = F.cross_entropy(logits, y)
        return (focal / ce).item(), F.softmax(logits, 1)[0, 0].item()

    r_easy, pt_easy = ratio(easy)
    r_hard, pt_hard = ratio(hard)
    assert r_easy == pytest.approx((1 - pt_easy) ** gamma, rel=1e-4)
    assert r_hard == pytest.approx((1 - pt_hard) ** gamma, rel=1e-4)
    assert r_easy < 0.01 < 0.5 < r_hard


def test_class_weights_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert w.shape == (4,) and w.dtype == torch.float32
    assert w[3] == 0  # absent class
    assert w[1] > w[2] > w[0]
    torch.testing.assert_close(w[:3] * torch.tensor([3.0, 1.0, 2.0]), torch.full((3,), w[1].item()))


def test_class_weights_balance_the_samples():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    w = class_weights(labels, 3)
    # every class contributes the same total weight, and a sample weighs 1 on average
    totals = torch.tensor([6.0, 3.0, 1.0]) * w
    torch.testing.assert_close(totals, torch.full((3,), totals[0].item()))
    assert w[torch.from_numpy(labels)].mean().item() == pytest.approx(1.0)


# ------------------------------------------------------------------ seeding and fit

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(8, 2)

    def forward(self, inputs):
        return self.out(self.drop(torch.relu(self.hidden(inputs["x"]))))


def _problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    x[:, 0] += np.where(y == 1, 1.0, -1.0)  # a margin: separable
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return ({"x": xt[:60]}, yt[:60]), ({"x": xt[60:]}, yt[60:])


def _run(seed: int, epochs: int = 15, lr: float = 0.05, patience: int = 100):
    train, val = _problem()
    generator = seed_everything(seed)
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = fit(model, optimizer, ClassificationLoss("ce", 1.0), train, val,
                  FitConfig(epochs=epochs, patience=patience, batch_size=8), generator,
                  torch.device("cpu"))
    return model, history


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fit_learns_a_separable_problem():
    model, history = _run(0)
    assert len(history) == 15
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_acc"] for h in history) >= 0.95
    _, val = _problem()
    proba = predict_proba(model, val[0], torch.device("cpu"))
    # the weights kept are those of the best validation epoch
    assert (proba.argmax(1) == val[1].numpy()).mean() == pytest.approx(max(h["val_acc"] for h in history))


def test_same_seed_same_history_and_weights():
    m1, h1 = _run(3)
    m2, h2 = _run(3)
    assert h1 == h2
    w1, w2 = _weights(m1), _weights(m2)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=0)


def test_seed_everything_turns_deterministic_kernels_on():
    torch.use_deterministic_algorithms(False)
    try:
        seed_everything(0)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_other_seed_other_run():
    m1, h1 = _run(3)
    m2, h2 = _run(4)
    assert h1 != h2
    assert any(not torch.equal(a, b) for a, b in zip(_weights(m1).values(), _weights(m2).values()))


def test_fit_stops_after_patience():
    _, history = _run(0, epochs=30, lr=0.0, patience=3)  # lr 0: nothing ever improves
    assert len(history) == 4


def test_fit_restores_the_best_validation_epoch():
    """Validation labels are the train rule flipped: the more the model learns, the worse it
    does on val, so the best validation epoch is an early one and the last is far worse."""
    train, (x_val, y_val) = _problem()
    val = (x_val, 1 - y_val)
    generator = seed_everything(0)
    model = Tiny()
    history = fit(model, torch.optim.AdamW(model.parameters(), lr=0.005), ClassificationLoss("ce", 1.0), train, val,
                  FitConfig(epochs=20, patience=100, batch_size=8), generator, torch.device("cpu"))
    best = max(h["val_acc"] for h in history)
    assert history[-1]["val_acc"] < best - 0.2  # the last epoch is not the one to keep
    kept = (predict_proba(model, val[0], torch.device("cpu")).argmax(1) == val[1].numpy()).mean()
    assert kept == pytest.approx(best)


def test_fit_breaks_validation_accuracy_ties_on_the_lower_validation_loss():
    """Once validation accuracy is perfect it stays so, and the loss keeps falling: of the epochs
    tied at the best accuracy, the kept weights are those of the lowest validation loss, not the
    first (or last) epoch to reach that accuracy."""
    train, val = _problem()
    model, history = _run(0, epochs=12, lr=0.05)
    best = max(h["val_acc"] for h in history)
    tied = [h["val_loss"] for h in history if h["val_acc"] == best]
    assert len(tied) >= 3 and len(set(tied)) == len(tied)  # the premise: a tie, with losses that differ
    assert history.index(next(h for h in history if h["val_acc"] == best)) < len(history) - 1
    kept_loss, kept_acc = loss_and_accuracy(model, ClassificationLoss("ce", 1.0), *val, torch.device("cpu"))
    assert kept_acc == best and kept_loss == pytest.approx(min(tied), rel=1e-6)
    assert kept_loss < max(tied) - 1e-4


class Nondeterministic(Tiny):
    """Tiny with a kernel that has no deterministic implementation (`put_` without accumulate),
    standing in for such a CUDA kernel (adaptive_avg_pool2d_backward_cuda, say)."""

    def forward(self, inputs):
        torch.zeros(2).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
        return super().forward(inputs)


def test_fit_records_kernels_without_a_deterministic_implementation():
    train, val = _problem()
    generator = seed_everything(0)
    model = Nondeterministic()
    history = fit(model, torch.optim.AdamW(model.parameters(), lr=0.01), ClassificationLoss("ce", 1.0), train, val,
                  FitConfig(epochs=2, patience=5, batch_size=8), generator, torch.device("cpu"))
    assert [h["nondeterministic"] for h in history] == [["put_"], ["put_"]]
    _, history = _run(0, epochs=2)
    assert not any("nondeterministic" in h for h in history)  # every kernel of the branches on CPU is


class RecordBatches(Callback):
    """Keeps the labels of every batch, i.e. the batch order."""

    def __init__(self):
        self.batches = []

    def after_backward(self, labels):
        self.batches.append(labels.tolist())


def _batch_order(seed: int) -> list:
    train, val = _problem()
    recorder = RecordBatches()
    torch.manual_seed(0)
    model = Tiny()  # the same initial weights for every seed: only the batch order may differ
    fit(model, torch.optim.SGD(model.parameters(), lr=0.0), ClassificationLoss("ce", 1.0), train, val,
        FitConfig(epochs=2, patience=5, batch_size=8), seed_everything(seed), torch.device("cpu"), [recorder])
    return recorder.batches


def test_batch_order_follows_the_run_seed():
    assert _batch_order(1) == _batch_order(1)
    assert _batch_order(1) != _batch_order(2)


class Calls(Callback):
    """Logs every hook call; asks for a smaller pool and a minimum of epochs."""

    min_epochs = 3

    def __init__(self):
        self.log = []

    def on_epoch_start(self, epoch):
        self.log.append(("start", epoch))

    def epoch_pool(self, epoch, n):
        return torch.arange(16) if epoch == 0 else None

    def after_backward(self, labels):
        self.log.append(("batch", len(labels)))

    def on_epoch_end(self, record):
        record["extra"] = 1.0
        self.log.append(("end", record["epoch"]))


def test_callback_hooks_order_pool_and_min_epochs():
    train, val = _problem()
    calls = Calls()
    history = fit(Tiny(), torch.optim.SGD(Tiny().parameters(), lr=0.0), ClassificationLoss("ce", 1.0), train, val,
                  FitConfig(epochs=10, patience=1, batch_size=8), seed_everything(0), torch.device("cpu"), [calls])
    assert len(history) == 3  # patience 1 would stop after 2 epochs; min_epochs keeps 3
    assert all(h["extra"] == 1.0 for h in history)
    assert calls.log[:4] == [("start", 0), ("batch", 8), ("batch", 8), ("end", 1)]  # epoch 0: a pool of 16
    assert calls.log[4] == ("start", 1) and calls.log.count(("batch", 8)) == 2 + 2 * 7 + 2 * 0
    assert ("batch", 4) in calls.log  # 60 trials: 7 batches of 8 and one of 4 in full epochs


def test_fit_diverging_loss_is_an_error():
    train, val = _problem()
    x = {"x": train[0]["x"].clone()}
    x["x"][0, 0] = float("nan")
    generator = seed_everything(0)
    model = Tiny()
    with pytest.raises(PipelineError, match="diverged"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), ClassificationLoss("ce", 1.0),
            (x, train[1]), val, FitConfig(epochs=2, patience=5, batch_size=60), generator,
            torch.device("cpu"))


def test_predict_proba_rows_sum_to_one():
    _, val = _problem()
    seed_everything(0)
    model = Tiny()
    proba = predict_proba(model, val[0], torch.device("cpu"), temperature=2.0)
    assert proba.shape == (20, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    with torch.no_grad():
        expected = F.softmax(model(val[0]) / 2.0, 1).numpy()
    np.testing.assert_allclose(proba, expected, rtol=1e-5)  # eval mode: dropout off


# ------------------------------------------------------------------ devices

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_error():
    with pytest.raises(PipelineError) as info:
        resolve_device("cuda")
    assert "train.device" in str(info.value) and "auto" in str(info.value)


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_multi_task_loss_leaves_out_missing_labels_and_weighs_the_tasks():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)  # 3 primary classes, then 2 of a secondary task
    target = torch.tensor([[0, 1], [1, -1], [2, 0], [0, -1], [1, 1], [2, 0]])
    ce = lambda: ClassificationLoss("ce", 1.0)  # noqa: E731
    primary = F.cross_entropy(logits[:, :3], target[:, 0])
    known = target[:, 1] >= 0
    secondary = F.cross_entropy(logits[known, 3:], target[known, 1])  # the unlabelled trials left out
    equal = MultiTaskLoss([ce(), ce()], [3, 2], "equal")
    assert torch.allclose(equal(logits, target), primary + secondary)
    fixed = MultiTaskLoss([ce(), ce()], [3, 2], "fixed", [1.0, 0.25])
    assert torch.allclose(fixed(logits, target), primary + 0.25 * secondary)
    uw = MultiTaskLoss([ce(), ce()], [3, 2], "uncertainty")
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.0, 1.0]))
    expected = primary / 2 + secondary / (2 * torch.e) + 0.5
    assert torch.allclose(uw(logits, target), expected)
    none = target.clone()
    none[:, 1] = -1  # a batch with no secondary label adds nothing, and no NaN
    assert torch.allclose(equal(logits, none), primary)
    uw(logits, none).backward()  # nor does it move that task's log-variance (which would grow its weight)
    assert uw.log_vars.grad[1] == 0 and uw.log_vars.grad[0] != 0
    primary_logits, primary_target = equal.primary(logits, target)
    assert primary_logits.shape == (6, 3) and torch.equal(primary_target, target[:, 0])
