"""pipeline/callbacks.py: each training control on its own, through `fit`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.callbacks import (OGMGE, AuxiliaryLosses, BranchDiagnostics, Curriculum, DropoutSchedule, FreezeModules,
                                 confidence_order)
from pipeline.fusion import build_fusion
from pipeline.training import Callback, ClassificationLoss, FitConfig, fit, seed_everything

from factories import make_branches, random_inputs

CPU = torch.device("cpu")


class BNNet(nn.Module):
    """A 'branch' with BatchNorm and dropout, and a head."""

    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 2)

    def forward(self, inputs):
        return self.head(self.branch(inputs["x"]))


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) * 3 + 2
    y = (x[:, 0] > 2).long()
    return ({"x": x[:32]}, y[:32]), ({"x": x[32:]}, y[32:])


class Spy(Callback):
    """Records, at each batch, the branch's training flag and its BatchNorm running mean."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def after_backward(self, labels):
        self.seen.append((self.model.branch.training, self.model.branch[1].running_mean.clone(),
                          self.model.branch[0].weight.grad))


def test_freeze_modules_keeps_branch_weights_statistics_and_dropout_for_its_epochs():
    train, val = _data()
    seed_everything(0)
    model = BNNet()
    before = {k: v.clone() for k, v in model.branch.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    spy = Spy(model)
    freeze = FreezeModules([model.branch], epochs=2)
    fit(model, torch.optim.AdamW(model.parameters(), lr=0.05), ClassificationLoss("ce", 1.0), train, val,
        FitConfig(epochs=2, patience=10, batch_size=8), seed_everything(0), CPU, [freeze, spy])
    for k, v in model.branch.state_dict().items():  # weights and BatchNorm statistics untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not torch.equal(model.head.weight.detach(), head_before)
    assert all(not training and grad is None for training, _, grad in spy.seen)  # eval mode, no gradient


def test_freeze_modules_releases_after_its_epochs():
    train, val = _data()
    seed_everything(0)
    model = BNNet()
    spy = Spy(model)
    fit(model, torch.optim.AdamW(model.parameters(), lr=0.05), ClassificationLoss("ce", 1.0), train, val,
        FitConfig(epochs=2, patience=10, batch_size=8), seed_everything(0), CPU, [FreezeModules([model.branch], 1), spy])
    per_epoch = len(spy.seen) // 2
    assert all(not t for t, _, _ in spy.seen[:per_epoch])
    assert all(t and g is not None for t, _, g in spy.seen[per_epoch:])  # epoch 2: training, with gradients
    assert not torch.equal(spy.seen[-1][1], spy.seen[0][1])  # BatchNorm statistics move again
    assert FreezeModules([], 4).min_epochs == 4 and FreezeModules([], None).frozen(10 ** 6)


def test_curriculum_pools_grow_from_the_easiest():
    order = np.array([5, 3, 9, 0, 1, 2, 4, 6, 7, 8])
    cur = Curriculum(order, epochs=4, batch_size=2)
    assert cur.epoch_pool(0, 10).tolist() == [5, 3, 9]       # ceil(10 * 1/4) = 3
    assert cur.epoch_pool(1, 10).tolist() == [5, 3, 9, 0, 1]  # 10 * 2/4
    assert len(cur.epoch_pool(3, 10)) == 10
    assert cur.epoch_pool(4, 10) is None and cur.min_epochs == 4
    assert Curriculum(order, epochs=10, batch_size=4).epoch_pool(0, 10).tolist() == [5, 3, 9, 0]  # >= a batch


SHAPES = {"eeg": (4, 64), "topo": (2, 8, 8)}


def _fusion(params, **changes):
    fp = params.fusion.model_copy(update=dict(type="concat", modalities=tuple(SHAPES), hidden=8, **changes))
    return build_fusion(make_branches(SHAPES, dropout=0.3), fp)


def _inputs(n=12, seed=1):
    return random_inputs(SHAPES, n, seed)


def test_confidence_order_puts_confident_trials_first(params):
    model = _fusion(params)
    x = _inputs()
    model.eval()
    with torch.no_grad():
        model(x)
    probs = {m: torch.softmax(l, 1).numpy() for m, l in model.last_branch_logits.items()}
    labels = torch.arange(12) % 3
    order = confidence_order(model, x, labels, CPU)
    confidence = np.mean([p[np.arange(12), labels.numpy()] for p in probs.values()], axis=0)
    assert sorted(order.tolist()) == list(range(12))
    assert np.all(np.diff(confidence[order]) <= 1e-7)


def test_dropout_schedule_switches_after_its_epoch(params):
    model = _fusion(params, dropout=0.3)
    schedule = DropoutSchedule(model.head, 0.3, switch_epoch=2, later=0.1)
    rates = []
    for epoch in range(4):
        schedule.on_epoch_start(epoch)
        rates.append({m.p for m in model.head.modules() if isinstance(m, nn.Dropout)})
    assert rates == [{0.3}, {0.3}, {0.1}, {0.1}]
    assert all(m.p == 0.3 for m in model.branches.modules() if isinstance(m, nn.Dropout))  # the head only
    never = DropoutSchedule(model.head, 0.2, switch_epoch=0, later=0.9)
    never.on_epoch_start(5)
    assert {m.p for m in model.head.modules() if isinstance(m, nn.Dropout)} == {0.2}


def _backward(model, x, y):
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()


def _silent_dropout(model):
    for mod in model.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0


def test_ogm_ge_coefficient_is_the_papers(params, monkeypatch):
    """k = 1 - tanh(alpha * rho) for the dominant modality (rho = its score over the other's),
    1 for the other; scores come from the concat head's own per-modality logits."""
    model = _fusion(params, dropout=0.0)
    x, y = _inputs(), torch.arange(12) % 3
    _backward(model, x, y)
    strong = torch.full((12, 3), -2.0)
    strong[torch.arange(12), y] = 2.0
    own = {"eeg": strong, "topo": torch.zeros(12, 3)}
    monkeypatch.setattr(model.head, "modality_logits", lambda emb: own)
    coeffs = OGMGE(model, alpha=0.3).coefficients(y)
    s_eeg = float(torch.softmax(strong, 1)[0, 0]) * 12
    rho = s_eeg / (12 / 3)
    assert rho > 1 and coeffs["topo"] == 1.0
    assert coeffs["eeg"] == pytest.approx(1 - np.tanh(0.3 * rho))


def test_ogm_ge_without_head_scores_uses_branch_logits(params):
    model = _fusion(params, dropout=0.0)
    model.head.modality_logits = lambda emb: None  # a head without its own per-modality view
    y = torch.arange(12) % 3
    strong = torch.full((12, 3), -2.0)
    strong[torch.arange(12), y] = 2.0
    model.last_branch_logits = {"eeg": torch.zeros(12, 3), "topo": strong}
    coeffs = OGMGE(model, alpha=0.3).coefficients(y)
    assert coeffs["eeg"] == 1.0 and coeffs["topo"] < 1.0


def test_ogm_ge_scales_weight_gradients_and_adds_noise_not_to_biases(params, monkeypatch):
    """With the noise silenced, the dominant modality's weight matrices and kernels get exactly
    coeff x their gradient; biases and norm parameters are untouched; with noise, every weight
    gradient moves (the GE part), biases still do not."""
    model = _fusion(params, dropout=0.0)
    _silent_dropout(model)
    x, y = _inputs(), torch.arange(12) % 3
    _backward(model, x, y)
    plain = {m: [p.grad.clone() for p in b.encoder.parameters()] for m, b in model.branches.items()}
    ogm = OGMGE(model, alpha=0.5)
    monkeypatch.setattr(ogm, "coefficients", lambda labels: {"eeg": 0.25, "topo": 1.0})
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    ogm.after_backward(y)
    for m, coeff in (("eeg", 0.25), ("topo", 1.0)):
        for before, p in zip(plain[m], model.branches[m].encoder.parameters()):
            torch.testing.assert_close(p.grad, before * coeff if before.dim() >= 2 else before)
    monkeypatch.undo()
    monkeypatch.setattr(ogm, "coefficients", lambda labels: {"eeg": 1.0, "topo": 1.0})
    _backward(model, x, y)
    plain = [p.grad.clone() for p in model.branches["topo"].encoder.parameters()]
    ogm.after_backward(y)
    for before, p in zip(plain, model.branches["topo"].encoder.parameters()):
        assert torch.equal(p.grad, before) == (before.dim() < 2)


def test_concat_head_splits_its_first_layer_by_modality(params):
    """The per-modality logits add up, before the ReLU, to the head's own first layer."""
    model = _fusion(params, dropout=0.0).eval()
    x = _inputs()
    with torch.no_grad():
        model(x)
        emb = model.last_prepped
        first = model.head.mlp[1]
        pre = {}
        start = 0
        for m, e in emb.items():
            pre[m] = e @ first.weight[:, start:start + e.shape[1]].T + first.bias / 2
            start += e.shape[1]
        torch.testing.assert_close(sum(pre.values()), first(torch.cat(list(emb.values()), 1)))
        own = model.head.modality_logits(emb)
        last = model.head.mlp[4]
        torch.testing.assert_close(own["eeg"], torch.relu(pre["eeg"]) @ last.weight.T + last.bias / 2)


def test_auxiliary_losses_add_the_branch_heads_losses(params):
    model = _fusion(params, dropout=0.0)
    _silent_dropout(model)
    x, y = _inputs(), torch.arange(12) % 3
    model.train()
    model(x)
    aux = AuxiliaryLosses(model, 0.4, nn.CrossEntropyLoss())
    expected = 0.4 * (nn.functional.cross_entropy(model.branch_logits["eeg"], y)
                      + nn.functional.cross_entropy(model.branch_logits["topo"], y)) / 2
    extra = aux.extra_loss(y)
    torch.testing.assert_close(extra, expected)
    extra.backward()  # the loss reaches the branch heads (which the fused loss alone leaves frozen in time)
    assert model.branches["eeg"].head[-1].weight.grad.abs().sum() > 0


def test_branch_diagnostics_add_per_branch_records(params):
    model = _fusion(params)
    x, y = _inputs(), torch.arange(12) % 3
    diag = BranchDiagnostics(model, x, CPU)
    _backward(model, x, y)
    diag.after_backward(y)
    diag.after_backward(y)
    record = {"epoch": 1}
    diag.on_epoch_end(record)
    grad = torch.stack([p.grad.norm() for p in model.branches["eeg"].encoder.parameters()]).norm()
    assert record["grad_norm/eeg"] == pytest.approx(float(grad))
    assert 0 < record["entropy/topo"] <= np.log(3) + 1e-6 and record["embed_norm/eeg"] >= 0
    assert diag.grad_norms == {"eeg": [], "topo": []}  # reset for the next epoch


def test_row_entropy_is_scipy_s_bit_for_bit():
    from scipy.stats import entropy

    from pipeline.callbacks import row_entropy

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        probs = rng.random((64, 5)).astype(dtype)
        probs[0] = [1, 0, 0, 0, 0]  # a certain row: 0 nats
        assert np.array_equal(row_entropy(probs), entropy(probs, axis=1))
