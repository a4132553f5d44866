"""The fuse stage: pretrained branches + a fusion head, fine-tuned (or combined without
training) for every fold and seed."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from pipeline import io
from pipeline.dataset import fold_data, load_features, load_trials, runs
from pipeline.fusion import OGMGE, branch_probabilities, build_fusion
from pipeline.params import Params
from pipeline.pretrain import load_branch
from pipeline.training import (ClassificationLoss, FitConfig, class_weights, fit, predict_proba,
                               resolve_device, seed_everything, set_dropout)


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
        probs = branch_probabilities(model, x_train, device)
        confidence = np.mean([p[np.arange(len(y_train)), y_train.numpy()] for p in probs.values()], axis=0)
        cfg.curriculum, cfg.curriculum_epochs = np.argsort(-confidence, kind="stable"), fp.curriculum_epochs

    def on_epoch_start(epoch: int) -> None:
        if model.head.freezes_branches:
            model.branches.eval()  # frozen for good: keep BatchNorm statistics as pretrained
        after_curriculum = fp.curriculum_epochs > 0 and epoch >= fp.curriculum_epochs
        set_dropout(model.head, fp.post_curriculum_dropout if after_curriculum else fp.dropout)

    cfg.on_epoch_start = on_epoch_start
    if fp.grad_modulation == "ogm_ge":
        cfg.after_backward = OGMGE(model, fp.ogm_alpha)
    return cfg


def _ensemble_weights(fp, model, data, device) -> list[float]:
    if fp.ensemble_weighting == "fixed":
        return list(fp.ensemble_weights)
    if fp.ensemble_weighting == "equal":
        return [1.0] * len(fp.modalities)
    x_val, y_val = data.part("val")
    probs = branch_probabilities(model, x_val, device)
    return [float((probs[m].argmax(1) == y_val.numpy()).mean()) + 1e-6 for m in fp.modalities]


def run_fuse(params: Params) -> None:
    fp, tp = params.fusion, params.train
    device = resolve_device(tp.device)
    trials = load_trials()
    features = {m: load_features(m) for m in fp.modalities}
    n_classes = len(trials.classes)
    probs = np.zeros((len(trials.folds), len(tp.seeds), len(trials.labels), n_classes), np.float32)
    histories = {}
    with io.atomic_path(io.FUSION_DIR) as out:
        out.mkdir()
        bar = tqdm(runs(len(trials.folds), tp.seeds), desc=f"fuse {fp.type}", unit="run")
        for fold, i, seed in bar:
            data = fold_data(features, trials, fold)
            branches = {m: load_branch(io.branch_dir(m) / f"fold{fold}_seed{seed}.pt")[0]
                        for m in fp.modalities}
            generator = seed_everything(seed)
            model = build_fusion(branches, n_classes, fp).to(device)
            if model.head.trainable:
                optimizer = torch.optim.AdamW(
                    [{"params": model.branches.parameters(), "lr": fp.branch_lr},
                     {"params": model.head_parameters(), "lr": fp.head_lr}], weight_decay=tp.weight_decay)
                train = data.part("train")
                loss = ClassificationLoss(fp.loss, fp.loss_temperature, fp.focal_gamma,
                                          class_weights(train[1].numpy(), n_classes))
                histories[f"fold{fold}_seed{seed}"] = fit(
                    model, optimizer, loss, train, data.part("val"),
                    _fusion_config(fp, model, data, device, tp.batch_size), generator, device,
                    progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
            else:
                model.head.set_weights(_ensemble_weights(fp, model, data, device))
            # The ensemble outputs log-probabilities already: no temperature on top.
            temperature = fp.loss_temperature if model.head.trainable else 1.0
            probs[fold, i] = predict_proba(model, data.inputs, device, temperature)
            torch.save(model.cpu().state_dict(), out / f"fold{fold}_seed{seed}.pt")
        np.save(out / "probabilities.npy", probs)
        io.write_json(out / "history.json", histories)
