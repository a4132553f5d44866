"""pipeline/fusion_training.py: one fusion run's optimizer, callbacks, ensemble weights,
modality ablation and diagnostics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.callbacks import OGMGE, AuxiliaryLosses, BranchDiagnostics, Curriculum, DropoutSchedule, FreezeModules
from pipeline.folds import FoldData
from pipeline.fusion import build_fusion
from pipeline.fusion_training import (ensemble_weights, fusion_callbacks, fusion_optimizer, modality_robustness,
                                      run_cost, train_fusion, train_with_restarts)
from pipeline.nets import BranchClassifier
from pipeline.stages.fuse import cost_sentence

from factories import fold_data, make_branches, random_inputs, split_index

SHAPES = {"eeg": (4, 64), "topo": (2, 8, 8)}


def _fp(params, **changes):
    return params.fusion.model_copy(update={"type": "concat", "modalities": ("eeg", "topo"), "hidden": 8,
                                            "dropout": 0.0, **changes})


def _branches():
    """Untrained branches whose embeddings both vary with their inputs (the filterbank encoder:
    an untrained log_power encoder's ReLU embedding is mostly zero on noise)."""
    return make_branches(SHAPES, encoders={"eeg": "filterbank", "topo": "image_cnn"})


def _model(params, **changes):
    return build_fusion(_branches(), _fp(params, **changes))


def test_robustness_of_an_ignored_and_a_used_modality(params):
    model = _model(params)
    first = model.head.mlp[1]  # Linear over [eeg embedding (6), topo embedding (6)]
    with torch.no_grad():
        first.weight[:, 6:] = 0.0  # the head ignores topo entirely
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(40, *s, generator=g) for m, s in SHAPES.items()}
    model.eval()
    with torch.no_grad():
        labels = model(x).argmax(1).numpy()  # labels the model gets 100 % right
    fill = {m: v.mean(dim=0, keepdim=True) for m, v in x.items()}
    robust = modality_robustness(model, x, labels, fill, torch.device("cpu"), 1.0, torch.Generator().manual_seed(0))
    assert robust["clean"] == 1.0
    assert robust["missing"]["topo"] == 1.0  # ignored: missing costs nothing, noise neither
    assert set(robust["noise"]["topo"].values()) == {1.0}
    assert robust["missing"]["eeg"] < 0.8  # the modality it relies on does cost accuracy
    assert robust["noise"]["eeg"]["2"] < robust["noise"]["eeg"]["0.5"] <= 1.0  # more noise, more harm
    assert set(robust["noise"]["eeg"]) == {"0.5", "1", "2"}


def test_optimizer_gives_branches_branch_lr_and_head_head_lr(params):
    fp = _fp(params, branch_lr=1e-5, head_lr=3e-2)
    model = build_fusion(_branches(), fp)
    groups = fusion_optimizer(model, fp, 0.01).param_groups
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[1e-5] == {id(p) for p in model.branches.parameters()}
    assert by_lr[3e-2] == {id(p) for p in model.head_parameters()}
    assert all(g["weight_decay"] == 0.01 for g in groups)
    sgd = fusion_optimizer(model, fp.model_copy(update={"optimizer": "sgd", "momentum": 0.8}), 0.01)
    assert isinstance(sgd, torch.optim.SGD) and all(g["momentum"] == 0.8 for g in sgd.param_groups)
    assert [g["lr"] for g in sgd.param_groups] == [1e-5, 3e-2]


def _fold(seed: int = 0) -> FoldData:
    """30 trials of noise, 3 classes in turn: 18 train, 6 val, 6 test."""
    return fold_data(random_inputs(SHAPES, 30, seed), torch.arange(30) % 3, split_index(18, 6, 6))


def test_callbacks_follow_the_params_in_order(params):
    model = _model(params, freeze_epochs=2, curriculum_epochs=3, grad_modulation="ogm_ge")
    cbs = fusion_callbacks(model, _fp(params, freeze_epochs=2, curriculum_epochs=3, grad_modulation="ogm_ge",
                                      aux_loss_weight=0.5), _fold(), torch.device("cpu"), 4, 3)
    assert [type(cb) for cb in cbs] == [FreezeModules, Curriculum, DropoutSchedule, AuxiliaryLosses, OGMGE,
                                        BranchDiagnostics]
    assert cbs[3].weight == 0.5
    assert cbs[0].epochs == 2 and cbs[1].epochs == 3
    plain = fusion_callbacks(model, _fp(params, aux_loss_weight=0.0, freeze_epochs=0), _fold(), torch.device("cpu"),
                             4, 3)
    assert [type(cb) for cb in plain] == [FreezeModules, DropoutSchedule, BranchDiagnostics]
    assert plain[0].epochs == 0


@pytest.mark.parametrize("freeze_epochs,epochs,frozen_for", [(19, 20, 19), (20, 20, None), (30, 20, None)])
def test_freeze_epochs_from_epochs_on_means_frozen_throughout(params, freeze_epochs, epochs, frozen_for):
    """freeze_epochs >= epochs: the branches never train, and early stopping is not held back
    (a count of frozen epochs would keep training to the last epoch)."""
    fp = _fp(params, freeze_epochs=freeze_epochs, epochs=epochs)
    (freeze, *_) = fusion_callbacks(_model(params), fp, _fold(), torch.device("cpu"), 4, 3)
    assert freeze.epochs == frozen_for and freeze.min_epochs == (frozen_for or 0)


def test_late_fusion_freezes_branches_for_good(params):
    fp = _fp(params, type="late")
    model = build_fusion(_branches(), fp)
    (freeze, *_) = fusion_callbacks(model, fp, _fold(), torch.device("cpu"), 4, 3)
    assert freeze.epochs is None and freeze.frozen(1000)


def test_ensemble_val_weights_come_from_validation_accuracy(params):
    """Each branch's weight is its accuracy on the validation trials, never the test ones."""
    fp = _fp(params, type="ensemble", ensemble_weighting="val")
    model = build_fusion(_branches(), fp)
    data = _fold()
    from pipeline.fusion import branch_outputs
    probs = branch_outputs(model, data.inputs, torch.device("cpu"))["probs"]
    # make the labels agree with eeg's predictions on val and with topo's on test
    labels = data.labels.clone()
    labels[data.index["val"]] = torch.from_numpy(probs["eeg"][data.index["val"]].argmax(1))
    labels[data.index["test"]] = torch.from_numpy(probs["topo"][data.index["test"]].argmax(1))
    data = FoldData(data.inputs, labels, data.index)
    weights = ensemble_weights(fp, model, data, torch.device("cpu"))
    topo_val = float((probs["topo"][data.index["val"]].argmax(1) == labels[data.index["val"]].numpy()).mean())
    assert weights == pytest.approx([1.0, topo_val], abs=1e-5)
    assert ensemble_weights(fp.model_copy(update=dict(ensemble_weighting="equal")), model, data,
                            torch.device("cpu")) == [1.0, 1.0]


def test_train_fusion_same_seed_same_run(params):
    fp, tp = _fp(params, epochs=2), params.train.model_copy(update=dict(batch_size=4))
    outs = []
    for _ in range(2):
        model, history = train_fusion(_branches(), _fold(), fp, tp, 3, 5, torch.device("cpu"))
        outs.append((history, {k: v.clone() for k, v in model.state_dict().items()}))
    assert outs[0][0] == outs[1][0]
    for k in outs[0][1]:
        torch.testing.assert_close(outs[0][1][k], outs[1][1][k], rtol=0, atol=0)
    assert {"grad_norm/eeg", "embed_norm/topo", "entropy/eeg"} <= set(outs[0][0][0])


@pytest.mark.parametrize("changes", [{}, {"type": "late"}, {"type": "ensemble"},
                                     {"aux_loss_weight": 0.5, "curriculum_epochs": 2}],
                         ids=["concat", "late", "ensemble", "aux_and_curriculum"])
def test_frozen_branches_run_once_per_fold_and_train_the_same_head(params, changes):
    """Branches that never train: each encoder runs once over the fold's trials (and once on the
    zero input, a dropped view), not in every batch, and the head trains as over the real
    branches (modality dropout, auxiliary losses and the curriculum included); the model comes
    back with its real branches, in eval mode as training leaves it."""
    fp = _fp(params, epochs=4, freeze_epochs=4, modality_dropout=0.4, dropout=0.2, restarts=2, **changes)
    tp, cpu = params.train.model_copy(update=dict(batch_size=4)), torch.device("cpu")
    calls = []
    branches = _branches()
    for b in branches.values():
        b.encoder.register_forward_hook(lambda module, args, out: calls.append(len(out)))
    model, history = train_fusion(branches, _fold(), fp, tp, 3, 5, cpu)
    assert sorted(calls) == [1, 1, 30, 30]
    assert all(type(b) is BranchClassifier for b in model.branches.values()) and not model.training
    direct, direct_history = train_with_restarts(_branches(), _fold(), fp, tp, 3, 5, cpu)
    assert len(history) == len(direct_history) >= (1 if fp.type == "ensemble" else 2)
    for got, want in zip(history, direct_history):
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
        if "embed_norm/eeg" in want:
            assert got["embed_norm/eeg"] == pytest.approx(want["embed_norm/eeg"], rel=1e-5)
    for k, v in direct.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_restarts_keep_the_lowest_validation_log_loss_of_independent_trainings(params):
    """fusion.restarts 3: three trainings under seeds 5, 1005 and 2005, each from the branches as
    given (fine-tuned here, so a shared copy would leak one restart into the next), and the kept
    one is the restart with the lowest validation log-loss, bit for bit that seed's run alone."""
    tp, cpu = params.train.model_copy(update=dict(batch_size=4)), torch.device("cpu")
    fp = _fp(params, epochs=3, freeze_epochs=0, branch_lr=1e-2, restarts=3)
    branches = _branches()
    before = {m: {k: v.clone() for k, v in b.state_dict().items()} for m, b in branches.items()}
    model, history = train_fusion(branches, _fold(), fp, tp, 3, 5, cpu)
    for m, b in branches.items():  # the caller's branches are untouched
        assert all(torch.equal(v, before[m][k]) for k, v in b.state_dict().items())
    losses = history[-1]["restart_val_log_loss"]
    kept = history[0]["restart"]
    assert len(losses) == 3 and kept == int(np.argmin(losses)) and len(set(losses)) == 3
    assert all(record["restart"] == kept for record in history) and len(history[-1]["restart_epochs"]) == 3
    alone, alone_history = train_fusion(_branches(), _fold(), fp.model_copy(update={"restarts": 1}), tp, 3,
                                        5 + 1000 * kept, cpu)
    assert [r["val_loss"] for r in alone_history] == [r["val_loss"] for r in history]
    for k, v in alone.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    x_val, y_val = _fold().part("val")
    with torch.no_grad():
        probs = torch.softmax(model.eval()({m: x[:] for m, x in x_val.items()})[:, :3] / fp.loss_temperature, dim=1)
    assert float(-torch.log(probs[torch.arange(len(y_val)), y_val]).mean()) == pytest.approx(losses[kept], rel=1e-5)
    # what safe selection's gate reads: every restart's predicted validation classes
    predicted = history[-1]["restart_val_predicted"]
    assert len(predicted) == 3 and predicted[kept] == probs.argmax(1).tolist()


def test_ablation_fills_a_modality_with_its_train_mean(params, monkeypatch):
    """The ablated input is the mean of the train trials, not of the test trials."""
    import pipeline.fusion_training as ft
    data = _fold()
    data.inputs["topo"].x[data.index["test"]] += 50.0  # test trials far from the train mean
    fills = []
    monkeypatch.setattr(ft, "modality_robustness",
                        lambda model, x, y, fill, device, t, g: fills.append(fill) or {"clean": 1.0, "missing": {}})
    ft.fusion_diagnostics(_model(params), data, torch.device("cpu"), 1.0, 0)
    train_mean = data.inputs["topo"][data.index["train"]].mean(dim=0, keepdim=True)
    assert fills[0]["topo"].shape == train_mean.shape
    torch.testing.assert_close(fills[0]["topo"], train_mean)


def test_run_cost_counts_parameters_and_scales_times(params):
    model = _model(params)
    branch_params = sum(p.numel() for b in model.branches.values() for p in b.parameters())
    cost = run_cost(model, train_seconds=3.0, epochs=6, infer_seconds=0.02, n_trials=40)
    assert cost["params"] == branch_params + cost["head_params"] and cost["head_params"] > 0
    # concat head: Linear(12 -> hidden 8) + Linear(8 -> 3), and no prep layers at these defaults
    assert cost["head_params"] == sum(p.numel() for p in model.head_parameters()) == 12 * 8 + 8 + 8 * 3 + 3
    assert cost["train_s_per_epoch"] == 0.5 and cost["infer_ms_per_trial"] == pytest.approx(0.5)
    untrained = run_cost(_model(params, type="ensemble"), 0.0, 1, 0.01, 10)
    assert untrained["train_s_per_epoch"] is None
    line = cost_sentence({"type": "ensemble", **untrained, "runs": 2, "device": "cpu", "torch_threads": 1,
                          "workers": 2, "backend": "local"})
    assert "not trained" in line and "1.000 ms per trial" in line and "mean of 2 run(s) on cpu" in line
