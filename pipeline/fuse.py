"""The fuse stage: pretrained branches + a fusion head, fine-tuned (or combined without
training) for every fold and seed."""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import entropy
from tqdm import tqdm

from pipeline import io
from pipeline.dataset import NO_AUDIO, available_modalities, fold_data, load_features, load_trials, runs
from pipeline.fusion import OGMGE, FusionModel, branch_outputs, build_fusion
from pipeline.params import Params
from pipeline.pretrain import load_branch
from pipeline.training import (ClassificationLoss, FitConfig, class_weights, fit, predict_proba,
                               log_curves, loss_and_accuracy, resolve_device, seed_everything,
                               set_dropout)


def _fusion_config(fp, model, data, device, batch_size: int) -> FitConfig:
    """Freezing, curriculum (easy-to-hard by the pretrained branches' confidence in the true
    class), post-curriculum dropout and gradient modulation for one fusion run."""
    branch_params = list(model.branches.parameters())
    if model.head.freezes_branches:
        for p in branch_params:
            p.requires_grad_(False)
        branch_params = []
    cfg = FitConfig(fp.epochs, fp.patience, batch_size, fp.freeze_epochs, branch_params)
    if fp.curriculum_epochs > 0:
        x_train, y_train = data.part("train")
        probs = branch_outputs(model, x_train, device)["probs"]
        confidence = np.mean([p[np.arange(len(y_train)), y_train.numpy()] for p in probs.values()], axis=0)
        cfg.curriculum, cfg.curriculum_epochs = np.argsort(-confidence, kind="stable"), fp.curriculum_epochs

    def on_epoch_start(epoch: int) -> None:
        if model.head.freezes_branches:
            model.branches.eval()  # frozen for good: keep BatchNorm statistics as pretrained
        after_curriculum = fp.curriculum_epochs > 0 and epoch >= fp.curriculum_epochs
        set_dropout(model.head, fp.post_curriculum_dropout if after_curriculum else fp.dropout)

    modulate = OGMGE(model, fp.ogm_alpha) if fp.grad_modulation == "ogm_ge" else None
    grad_norms: dict[str, list[float]] = {m: [] for m in model.branches}

    def after_backward(labels: torch.Tensor) -> None:
        if modulate is not None:
            modulate(labels)
        for m, branch in model.branches.items():  # the gradient each encoder actually receives
            grads = [p.grad.norm() for p in branch.encoder.parameters() if p.grad is not None]
            grad_norms[m].append(float(torch.stack(grads).norm()) if grads else 0.0)

    x_val = data.part("val")[0]

    def on_epoch_end(record: dict) -> None:
        """Per-branch diagnostics of the epoch: mean gradient norm over its batches, and on the
        validation trials the mean embedding norm and mean prediction entropy (nats)."""
        out = branch_outputs(model, x_val, device)
        for m in model.branches:
            record[f"grad_norm/{m}"] = float(np.mean(grad_norms[m])) if grad_norms[m] else 0.0
            record[f"embed_norm/{m}"] = float(out["embed_norm"][m].mean())
            record[f"entropy/{m}"] = float(entropy(out["probs"][m], axis=1).mean())
            grad_norms[m].clear()

    cfg.on_epoch_start, cfg.after_backward, cfg.on_epoch_end = on_epoch_start, after_backward, on_epoch_end
    return cfg


def modality_ablation(model: FusionModel, inputs: dict[str, torch.Tensor], labels: np.ndarray,
                      fill: dict[str, torch.Tensor], device: torch.device, temperature: float) -> dict[str, float]:
    """Accuracy drop when one modality's input is replaced by `fill[m]` (its train mean): how
    much the fused prediction relies on that modality. ~0 for a modality the model ignores."""
    def accuracy(x) -> float:
        return float((predict_proba(model, x, device, temperature).argmax(1) == labels).mean())

    full = accuracy(inputs)
    return {m: full - accuracy({**inputs, m: fill[m].expand_as(inputs[m])}) for m in model.branches}


def _ensemble_weights(fp, model, data, device) -> list[float]:
    if fp.ensemble_weighting == "fixed":
        return list(fp.ensemble_weights)
    if fp.ensemble_weighting == "equal":
        return [1.0] * len(fp.modalities)
    x_val, y_val = data.part("val")
    probs = branch_outputs(model, x_val, device)["probs"]
    return [float((probs[m].argmax(1) == y_val.numpy()).mean()) + 1e-6 for m in fp.modalities]


def run_fuse(params: Params) -> None:
    params.check_modalities(available_modalities(), NO_AUDIO)
    fp, tp = params.fusion, params.train
    device = resolve_device(tp.device)
    trials = load_trials()
    features = {m: load_features(m) for m in fp.modalities}
    n_classes = len(trials.classes)
    probs = np.zeros((len(trials.folds), len(tp.seeds), len(trials.labels), n_classes), np.float32)
    histories, diagnostics = {}, {}
    with io.atomic_path(io.FUSION_DIR) as out:
        out.mkdir()
        bar = tqdm(runs(len(trials.folds), tp.seeds), desc=f"fuse {fp.type}", unit="run")
        for fold, i, seed in bar:
            data = fold_data(features, trials, fold)
            branches = {m: load_branch(io.branch_dir(m) / f"fold{fold}_seed{seed}.pt")[0]
                        for m in fp.modalities}
            generator = seed_everything(seed)
            model = build_fusion(branches, n_classes, fp).to(device)
            train = data.part("train")
            loss = ClassificationLoss(fp.loss, fp.loss_temperature, fp.focal_gamma,
                                      class_weights(train[1].numpy(), n_classes))
            if model.head.trainable:
                optimizer = torch.optim.AdamW(
                    [{"params": model.branches.parameters(), "lr": fp.branch_lr},
                     {"params": model.head_parameters(), "lr": fp.head_lr}], weight_decay=tp.weight_decay)
                histories[f"fold{fold}_seed{seed}"] = fit(
                    model, optimizer, loss, train, data.part("val"),
                    _fusion_config(fp, model, data, device, tp.batch_size), generator, device,
                    progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
            else:  # no training: one record (epoch 0) of how the combination does
                model.head.set_weights(_ensemble_weights(fp, model, data, device))
                (train_loss, train_acc), (val_loss, val_acc) = (
                    loss_and_accuracy(model, loss, *data.part(part), device) for part in ("train", "val"))
                histories[f"fold{fold}_seed{seed}"] = [{"epoch": 0, "train_loss": train_loss, "train_acc": train_acc,
                                                        "val_loss": val_loss, "val_acc": val_acc}]
            # The ensemble outputs log-probabilities already: no temperature on top.
            temperature = fp.loss_temperature if model.head.trainable else 1.0
            probs[fold, i] = predict_proba(model, data.inputs, device, temperature)
            x_test, y_test = data.part("test")
            x_train = data.part("train")[0]
            weights = branch_outputs(model, x_test, device)["weights"]
            diagnostics[f"fold{fold}_seed{seed}"] = {
                "fusion_weights": {m: float(w.mean()) for m, w in weights.items()},
                "ablation_drop": modality_ablation(model, x_test, y_test.numpy(),
                                                   {m: x.mean(dim=0, keepdim=True) for m, x in x_train.items()},
                                                   device, temperature)}
            torch.save(model.cpu().state_dict(), out / f"fold{fold}_seed{seed}.pt")
        np.save(out / "probabilities.npy", probs)
        io.write_json(out / "history.json", histories)
        io.write_json(out / "diagnostics.json", diagnostics)
    log_curves(io.live_dir("fuse"), histories)
