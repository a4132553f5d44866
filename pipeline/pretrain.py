"""Branch pretraining: each modality's encoder + classifier trained alone, per fold and seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline import io
from pipeline.dataset import NO_AUDIO, FoldData, fold_data, load_features, load_trials, runs, skip_note
from pipeline.nets import BranchClassifier
from pipeline.params import Params, TrainParams
from pipeline.training import (ClassificationLoss, FitConfig, class_weights, fit, predict_proba,
                               log_curves, resolve_device, seed_everything)


def train_branch(modality: str, data: FoldData, p: TrainParams, n_classes: int, seed: int,
                 device: torch.device, progress=None) -> tuple[BranchClassifier, list[dict]]:
    """Train one branch on `data`'s train part, selected on its val part."""
    generator = seed_everything(seed)
    in_shape = tuple(data.inputs[modality].shape[1:])
    model = BranchClassifier(modality, in_shape, n_classes, p.embed_dim, p.dropout)
    train, val = data.part("train"), data.part("val")
    loss = ClassificationLoss(p.loss, p.loss_temperature, p.focal_gamma,
                              class_weights(train[1].numpy(), n_classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    history = fit(model, optimizer, loss, train, val, FitConfig(p.epochs, p.patience, p.batch_size),
                  generator, device, progress)
    return model, history


def save_branch(path: Path, model: BranchClassifier, p: TrainParams) -> None:
    """Checkpoint with what `load_branch` needs to rebuild the module."""
    torch.save({"modality": model.modality, "in_shape": model.in_shape, "n_classes": model.n_classes,
                "embed_dim": p.embed_dim, "dropout": p.dropout, "loss_temperature": p.loss_temperature,
                "state_dict": model.state_dict()}, path)


def load_branch(path: Path, map_location="cpu") -> tuple[BranchClassifier, dict]:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    model = BranchClassifier(ckpt["modality"], ckpt["in_shape"], ckpt["n_classes"],
                             ckpt["embed_dim"], ckpt["dropout"])
    model.load_state_dict(ckpt["state_dict"])
    model.temperature = ckpt["loss_temperature"]
    return model, ckpt


def run_pretrain(modality: str, params: Params) -> None:
    if skip_note("pretrain", modality):
        with io.atomic_path(io.branch_dir(modality)) as out:
            out.mkdir()
            io.write_json(out / "skipped.json", {"skipped": NO_AUDIO})
        with io.atomic_path(io.live_dir(f"pretrain_{modality}")) as live:
            (live / "plots" / "metrics").mkdir(parents=True)
            io.write_json(live / "metrics.json", {})
        return
    p = params.branch(modality)
    device = resolve_device(p.device)
    trials, x = load_trials(), load_features(modality)
    n_classes = len(trials.classes)
    probs = np.zeros((len(trials.folds), len(p.seeds), len(trials.labels), n_classes), np.float32)
    histories = {}
    with io.atomic_path(io.branch_dir(modality)) as out:
        out.mkdir()
        bar = tqdm(runs(len(trials.folds), p.seeds), desc=f"pretrain {modality}", unit="run")
        for fold, i, seed in bar:
            data = fold_data({modality: x}, trials, fold)
            model, history = train_branch(modality, data, p, n_classes, seed, device,
                                          progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
            probs[fold, i] = predict_proba(model, data.inputs, device, p.loss_temperature)
            save_branch(out / f"fold{fold}_seed{seed}.pt", model.cpu(), p)
            histories[f"fold{fold}_seed{seed}"] = history
        np.save(out / "probabilities.npy", probs)
        io.write_json(out / "history.json", histories)
    log_curves(io.live_dir(f"pretrain_{modality}"), histories)
