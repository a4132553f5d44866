"""One branch pretraining run (one fold, one seed): a plain function over the fold's tensors."""
from __future__ import annotations

import torch

from pipeline.folds import FoldData
from pipeline.nets import BranchClassifier
from pipeline.params import TrainParams
from pipeline.training import ClassificationLoss, FitConfig, class_weights, fit, seed_everything


def train_branch(modality: str, data: FoldData, p: TrainParams, n_classes: int, seed: int,
                 device: torch.device, progress=None) -> tuple[BranchClassifier, list[dict]]:
    """Train one branch on `data`'s train part, selected on its val part."""
    generator = seed_everything(seed)
    in_shape = tuple(data.inputs[modality].shape[1:])
    model = BranchClassifier(modality, in_shape, n_classes, p.embed_dim, p.dropout, p.encoder,
                             temperature=p.loss_temperature)
    train, val = data.part("train"), data.part("val")
    loss = ClassificationLoss(p.loss, p.loss_temperature, p.focal_gamma, class_weights(train[1].numpy(), n_classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    history = fit(model, optimizer, loss, train, val, FitConfig(p.epochs, p.patience, p.batch_size),
                  generator, device, progress=progress)
    return model, history
