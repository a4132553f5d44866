"""One branch pretraining run (one fold, one seed): a plain function over the fold's tensors,
and the self-contained task the pretrain stage sends to its workers."""
from __future__ import annotations

import io as bytes_io
from pathlib import Path

import numpy as np
import torch

from pipeline.dataset import Trials, load_features
from pipeline.folds import FoldData, fold_data
from pipeline.nets import BranchClassifier, save_branch
from pipeline.params import TrainParams
from pipeline.training import FitConfig, fit, predict_proba, run_device, seed_everything, task_loss


def train_branch(modality: str, data: FoldData, p: TrainParams, n_classes: int, seed: int,
                 device: torch.device, tasks: dict[str, list[str]] | None = None,
                 classes: list[str] | None = None) -> tuple[BranchClassifier, list[dict]]:
    """Train one branch on `data`'s train part, selected on its val part (primary task); with
    secondary `tasks` (name -> classes) it trains a head per task over one embedding."""
    generator = seed_everything(seed)
    in_shape = tuple(data.inputs[modality].shape[1:])
    model = BranchClassifier(modality, in_shape, n_classes, p.embed_dim, p.dropout, p.encoder,
                             temperature=p.loss_temperature, tasks=tasks, classes=classes)
    train, val = data.part("train"), data.part("val")
    loss = task_loss(p.loss, p.loss_temperature, p.focal_gamma, train[1].numpy(), model.task_sizes,
                     p.task_weighting, p.task_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    if list(loss.parameters()):  # uncertainty weighting's log-variances learn beside the model, undecayed
        optimizer.add_param_group({"params": list(loss.parameters()), "weight_decay": 0.0})
    history = fit(model, optimizer, loss, train, val, FitConfig(p.epochs, p.patience, p.batch_size),
                  generator, device)
    return model, history


def branch_run(modality: str, fold: int, seed: int, p: TrainParams, trials: Trials, root: str,
               run_index: int) -> tuple[np.ndarray, list[dict], bytes]:
    """One (fold, seed) run as a worker task (pipeline.parallel): it reads its own inputs under
    `root` (the features memory-mapped, the fold's normalizer), trains on the device of the
    stage's `run_index`-th run (`run_device`) and returns the probabilities of every trial
    (n_trials, n_classes; with secondary tasks each task's side by side), the per-epoch history
    and the checkpoint's bytes."""
    device = torch.device(run_device(p.device, run_index))
    data = fold_data({modality: load_features(modality, mmap=True, root=Path(root))}, trials, fold, Path(root))
    model, history = train_branch(modality, data, p, len(trials.classes), seed, device,
                                  trials.task_classes, trials.classes)
    probs = predict_proba(model, data.inputs, device, p.loss_temperature)
    checkpoint = bytes_io.BytesIO()
    save_branch(checkpoint, model.cpu())
    return probs, history, checkpoint.getvalue()
