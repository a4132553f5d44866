"""One fusion run (one fold, one seed) over pretrained branches, and what is measured on it:
plain functions over the fold's tensors, and the self-contained task the fuse stage sends to its
workers (`fusion_run`)."""
from __future__ import annotations

import copy
import io as bytes_io
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.callbacks import (OGMGE, AuxiliaryLosses, BranchDiagnostics, Curriculum, DropoutSchedule, FreezeModules,
                                 confidence_order)
from pipeline.dataset import Trials, load_features
from pipeline.folds import FoldData, fold_data, primary_labels
from pipeline.fusion import (FUSION_HEADS, FusionModel, branch_outputs, build_fusion, embeddings_of, precompute_branches,
                             save_fusion, with_branches)
from pipeline.nets import BranchClassifier, load_branch
from pipeline.params import FusionParams, TrainParams
from pipeline.pretraining import train_branch
from pipeline.training import (Callback, ClassificationLoss, FitConfig, class_weights, fit, loss_and_accuracy,
                               nondeterministic_ops, predict_proba, run_device, seed_everything, task_loss)


def fusion_optimizer(model: FusionModel, fp: FusionParams, weight_decay: float) -> torch.optim.Optimizer:
    """`fusion.optimizer` (AdamW, or SGD with `fusion.momentum` as OGM-GE's paper trains) with the
    pretrained branches at `fusion.branch_lr` and the head at `fusion.head_lr`."""
    groups = [{"params": model.branches.parameters(), "lr": fp.branch_lr},
              {"params": model.head_parameters(), "lr": fp.head_lr}]
    if fp.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=fp.momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def fusion_callbacks(model: FusionModel, fp: FusionParams, data: FoldData, device: torch.device,
                     batch_size: int, n_classes: int) -> list[Callback]:
    """The training controls `fusion.*` asks for, in the order they must act: freezing, the
    curriculum, the dropout schedule, the auxiliary losses, gradient modulation, then
    diagnostics (which must see the gradients the encoders really receive)."""
    # None: frozen throughout, early stopping as usual (a count would hold training to that epoch)
    freeze_for = None if branches_never_train(fp) else fp.freeze_epochs
    callbacks: list[Callback] = [FreezeModules([model.branches], freeze_for)]
    if fp.curriculum_epochs > 0:
        x_train, y_train = data.part("train")
        order = confidence_order(model, x_train, primary_labels(y_train), device)
        callbacks.append(Curriculum(order, fp.curriculum_epochs, batch_size))
    callbacks.append(DropoutSchedule(model.head, fp.dropout, fp.curriculum_epochs, fp.post_curriculum_dropout))
    if fp.aux_loss_weight > 0:
        weights = class_weights(primary_labels(data.part("train")[1]).numpy(), n_classes)
        callbacks.append(AuxiliaryLosses(model, fp.aux_loss_weight, ClassificationLoss(fp.loss, 1.0, fp.focal_gamma, weights)))
    if fp.grad_modulation == "ogm_ge":
        callbacks.append(OGMGE(model, fp.ogm_alpha))
    callbacks.append(BranchDiagnostics(model, data.part("val")[0], device))
    return callbacks


def ensemble_weights(fp: FusionParams, model: FusionModel, data: FoldData, device: torch.device) -> list[float]:
    """Per-modality weights of the untrained ensemble: equal, fixed from params, or each branch's
    validation accuracy (never test)."""
    if fp.ensemble_weighting == "fixed":
        return list(fp.ensemble_weights)
    if fp.ensemble_weighting == "equal":
        return [1.0] * len(fp.modalities)
    x_val, y_val = data.part("val")
    probs = branch_outputs(model, x_val, device)["probs"]
    return [float((probs[m].argmax(1) == primary_labels(y_val).numpy()).mean()) + 1e-6 for m in fp.modalities]


def branches_never_train(fp: FusionParams) -> bool:
    """The pretrained branches stay as they are: frozen throughout (`fusion.freeze_epochs` >=
    `fusion.epochs`, the default), under a head that freezes them (late) or one that trains
    nothing (ensemble)."""
    head = FUSION_HEADS[fp.type]
    return fp.frozen_throughout or head.freezes_branches or not head.trainable


RESTART_SEED_STEP = 1000  # restart k of a run with seed s trains under seed s + 1000 k


def train_fusion(branches: dict[str, BranchClassifier], data: FoldData, fp: FusionParams, tp: TrainParams,
                 n_classes: int, seed: int, device: torch.device) -> tuple[FusionModel, list[dict]]:
    """Fine-tune the fusion of pretrained `branches` on `data`'s train part, selected on val
    (`train_with_restarts`). Branches that never train run once over the fold's trials
    (`precompute_branches`, after the run's determinism settings, its kernels recorded as an
    epoch's are) and the head trains over their embeddings; the model returned has the real
    branches back."""
    if not branches_never_train(fp):
        return train_with_restarts(branches, data, fp, tp, n_classes, seed, device)
    seed_everything(seed)  # CUDA: deterministic kernels and cuBLAS's workspace before the first product
    with nondeterministic_ops() as found:
        precomputed, embeddings = precompute_branches(branches, data.inputs, device)
    model, history = train_with_restarts(precomputed, FoldData(embeddings, data.labels, data.index), fp, tp,
                                         n_classes, seed, device)
    if found:
        history[0]["nondeterministic"] = sorted(found | set(history[0].get("nondeterministic", [])))
    return with_branches(model, {m: b.branch for m, b in model.branches.items()}), history


def train_with_restarts(branches: dict[str, BranchClassifier], data: FoldData, fp: FusionParams, tp: TrainParams,
                        n_classes: int, seed: int, device: torch.device) -> tuple[FusionModel, list[dict]]:
    """The training of `train_fusion` over the branches as given; an untrained head (ensemble)
    gets its weights and one record (epoch 0) of how it does.

    With `fusion.restarts` k > 1 a trained head is trained k times, each from its own seed (its
    initialisation, batch order and modality-dropout draws) on its own copy of `branches`, and
    the run with the lowest validation log-loss is kept: on the real-speech studies one unlucky
    draw of the head put the fused model 0.15 below its best branch on a held-out voice (README).
    The kept history's records carry `restart` (which was kept); its last record also carries
    every restart's epochs, validation log-loss and predicted validation classes (the primary
    task's, in the fold's validation order: safe selection's gate reads every restart)."""
    if fp.restarts == 1 or not FUSION_HEADS[fp.type].trainable:
        return _train_fusion_once(branches, data, fp, tp, n_classes, seed, device)
    runs = [_train_fusion_once(copy.deepcopy(branches), data, fp, tp, n_classes, seed + RESTART_SEED_STEP * k, device)
            for k in range(fp.restarts)]
    x_val, y_val = data.part("val")
    y = primary_labels(y_val).numpy()
    val_probs = [predict_proba(model, x_val, device, model.output_temperature)[:, :model.task_sizes[0]]
                 for model, _ in runs]
    losses = [log_loss_of_true_class(probs, y) for probs in val_probs]
    kept = int(np.argmin(losses))
    model, history = runs[kept]
    history = [{**record, "restart": kept} for record in history]
    history[-1] |= {"restart_epochs": [len(h) for _, h in runs], "restart_val_log_loss": losses,
                    "restart_val_predicted": [probs.argmax(1).tolist() for probs in val_probs]}
    return model, history


def log_loss_of_true_class(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class: probs (n, n_classes), labels (n,)."""
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())


def _train_fusion_once(branches: dict[str, BranchClassifier], data: FoldData, fp: FusionParams, tp: TrainParams,
                       n_classes: int, seed: int, device: torch.device) -> tuple[FusionModel, list[dict]]:
    """One training of the fusion head (`train_fusion`) under `seed`."""
    generator = seed_everything(seed)
    model = build_fusion(branches, fp).to(device)
    train, val = data.part("train"), data.part("val")
    loss = task_loss(fp.loss, fp.loss_temperature, fp.focal_gamma, train[1].numpy(), model.task_sizes,
                     fp.task_weighting, fp.task_weights).to(device)  # the ensemble scores with it outside `fit`
    if model.head.trainable:
        optimizer = fusion_optimizer(model, fp, tp.weight_decay)
        if list(loss.parameters()):  # uncertainty weighting's log-variances learn beside the head, undecayed
            optimizer.add_param_group({"params": list(loss.parameters()), "lr": fp.head_lr, "weight_decay": 0.0})
        history = fit(model, optimizer, loss, train, val,
                      FitConfig(fp.epochs, fp.patience, tp.batch_size), generator, device,
                      fusion_callbacks(model, fp, data, device, tp.batch_size, n_classes))
        return model, history
    model.head.set_weights(ensemble_weights(fp, model, data, device))
    (train_loss, train_acc), (val_loss, val_acc) = (loss_and_accuracy(model, loss, *part, device) for part in (train, val))
    return model, [{"epoch": 0, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc}]


def train_fusion_afresh(data: FoldData, trials: Trials, branch_params: dict[str, TrainParams], fp: FusionParams,
                        tp: TrainParams, seed: int, device: torch.device) -> tuple[FusionModel, list[dict]]:
    """A fused model that has seen only `data`'s train trials: every view of `fp.modalities`
    pretrained there as the pretrain stage does (`branch_params`: each view's train params), then
    fused as `train_fusion` does (the final model; distillation's cross-fitted teachers)."""
    tasks = trials.task_classes
    branches = {m: train_branch(m, data, branch_params[m], len(trials.classes), seed, device, tasks, trials.classes)[0]
                for m in fp.modalities}
    return train_fusion(branches, data, fp, tp, len(trials.classes), seed, device)


NOISE_STDS = (0.5, 1.0, 2.0)  # normalised units: 1 is the size of the train spread


def modality_robustness(model: FusionModel, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                        fill: dict[str, torch.Tensor], device: torch.device, temperature: float,
                        generator: torch.Generator, stds=NOISE_STDS) -> dict:
    """Accuracy of the fused model as MultiBench reports robustness: clean; with each modality
    missing (its input replaced by `fill[m]`, the train mean); and with Gaussian noise of each
    std in `stds` added to one modality at a time. ~clean when missing: the model ignores it.
    Each encoder runs on the clean trials once and again only where its own view changes."""
    precomputed, clean = precompute_branches(dict(model.branches), inputs, device)
    over_embeddings = with_branches(model, precomputed)

    def accuracy(view: str | None = None, x: torch.Tensor | None = None) -> float:  # of the primary task; x: view's input
        embeddings = clean if view is None else {**clean, view: embeddings_of(model.branches[view], x, device)}
        probs = predict_proba(over_embeddings, embeddings, device, temperature)
        return float((probs[:, :model.task_sizes[0]].argmax(1) == labels).mean())

    def noisy(m: str, std: float) -> torch.Tensor:
        return inputs[m] + std * torch.randn(inputs[m].shape, generator=generator)

    return {"clean": accuracy(),
            "missing": {m: accuracy(m, fill[m].expand_as(inputs[m])) for m in model.branches},
            "noise": {m: {f"{std:g}": accuracy(m, noisy(m, std)) for std in stds} for m in model.branches}}


def fusion_diagnostics(model: FusionModel, data: FoldData, device: torch.device, temperature: float,
                       seed: int) -> dict:
    """On the test trials: the head's mean modality weights, the robustness to a missing or noisy
    modality (train-mean fill; noise drawn from `seed`), and the modality ablation (the accuracy
    drop when a modality is missing)."""
    test, y_test = data.part("test")
    x_test = {m: x[:] for m, x in test.items()}  # the test trials as tensors: noise is added to them
    weights = branch_outputs(model, x_test, device)["weights"]
    robust = modality_robustness(model, x_test, primary_labels(y_test).numpy(), data.train_fill(), device, temperature,
                                 torch.Generator().manual_seed(seed))
    return {"fusion_weights": {m: float(w.mean()) for m, w in weights.items()},
            "ablation_drop": {m: robust["clean"] - acc for m, acc in robust["missing"].items()},
            "robustness": robust}


def run_cost(model: FusionModel, train_seconds: float, epochs: int, infer_seconds: float, n_trials: int) -> dict:
    """What one fusion run cost: parameters (all, and the head's: what fusion adds to the
    branches), wall seconds per training epoch (None when the head is not trained; frozen
    branches' one pass over the fold, `precompute_branches`, is spread over the epochs) and
    milliseconds per trial at inference."""
    return {"params": sum(p.numel() for p in model.parameters()),
            "head_params": sum(p.numel() for p in model.head_parameters()),
            "train_s_per_epoch": train_seconds / epochs if model.head.trainable else None,
            "infer_ms_per_trial": 1000 * infer_seconds / n_trials}


def fusion_run(fold: int, seed: int, fp: FusionParams, tp: TrainParams, trials: Trials, root: str,
               run_index: int) -> tuple[np.ndarray, list[dict], dict, bytes, dict]:
    """One (fold, seed) fusion run as a worker task (pipeline.parallel): it reads its own inputs
    under `root` (the fused views' features memory-mapped, the fold's normalizers, the branches
    pretrained on this fold and seed), trains on the device of the stage's `run_index`-th run
    (`run_device`) and returns the fused model's probabilities of every trial, its history, its
    diagnostics, the checkpoint's bytes and its cost (`run_cost`, and the device's type)."""
    base, device = Path(root), torch.device(run_device(tp.device, run_index))
    features = {m: load_features(m, mmap=True, root=base) for m in fp.modalities}
    data = fold_data(features, trials, fold, base)
    branches = {m: load_branch(base / io.branch_dir(m) / f"fold{fold}_seed{seed}.pt") for m in fp.modalities}
    start = time.perf_counter()
    model, history = train_fusion(branches, data, fp, tp, len(trials.classes), seed, device)
    trained = time.perf_counter()
    temperature = model.output_temperature
    probs = predict_proba(model, data.inputs, device, temperature)
    epochs = sum(history[-1].get("restart_epochs", [len(history)]))  # every restart's epochs
    cost = {**run_cost(model, trained - start, epochs, time.perf_counter() - trained, len(probs)), "device": device.type}
    diagnostics = fusion_diagnostics(model, data, device, temperature, seed)
    checkpoint = bytes_io.BytesIO()
    save_fusion(checkpoint, model.cpu(), fp)
    return probs, history, diagnostics, checkpoint.getvalue(), cost
