"""Training controls of fusion fine-tuning, each a small `Callback` passed to `fit`:
freezing branches, an easy-to-hard curriculum, a dropout schedule, OGM-GE gradient modulation
and per-branch diagnostics. Each holds its own state; none knows about the others.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import entr
from torch import nn

from pipeline.fusion import FusionModel, branch_outputs
from pipeline.training import Callback, set_dropout


class FreezeModules(Callback):
    """`modules` get no updates, and run in eval mode (BatchNorm statistics kept, dropout off),
    for the first `epochs` epochs (None: for the whole of training)."""

    def __init__(self, modules: list[nn.Module], epochs: int | None):
        self.modules, self.epochs = modules, epochs
        self.min_epochs = epochs or 0

    def frozen(self, epoch: int) -> bool:
        return self.epochs is None or epoch < self.epochs

    def on_epoch_start(self, epoch: int) -> None:
        frozen = self.frozen(epoch)
        for module in self.modules:
            module.requires_grad_(not frozen)
            if frozen:
                module.eval()


class Curriculum(Callback):
    """Easy to hard: epoch e < `epochs` draws its batches from the easiest (e + 1) / `epochs`
    of the train trials (at least one batch); `order` lists train positions easiest first."""

    def __init__(self, order: np.ndarray, epochs: int, batch_size: int):
        self.order, self.epochs, self.batch_size = order, epochs, batch_size
        self.min_epochs = epochs

    def epoch_pool(self, epoch: int, n: int) -> torch.Tensor | None:
        if epoch >= self.epochs:
            return None
        keep = max(self.batch_size, int(np.ceil(n * (epoch + 1) / self.epochs)))
        return torch.as_tensor(self.order[:keep])


def confidence_order(model: FusionModel, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                     device: torch.device) -> np.ndarray:
    """Train positions ordered by the branches' mean probability of the true class, highest
    (easiest) first; ties keep their order."""
    probs = branch_outputs(model, inputs, device)["probs"]
    rows = np.arange(len(labels))
    confidence = np.mean([p[rows, labels.numpy()] for p in probs.values()], axis=0)
    return np.argsort(-confidence, kind="stable")


class DropoutSchedule(Callback):
    """Dropout of `module` is `dropout` for the first `switch_epoch` epochs, then `later`
    (switch_epoch 0: `dropout` throughout)."""

    def __init__(self, module: nn.Module, dropout: float, switch_epoch: int, later: float):
        self.module, self.dropout, self.switch_epoch, self.later = module, dropout, switch_epoch, later

    def on_epoch_start(self, epoch: int) -> None:
        switched = self.switch_epoch > 0 and epoch >= self.switch_epoch
        set_dropout(self.module, self.later if switched else self.dropout)


class OGMGE(Callback):
    """On-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022),
    as in the official code (GeWu-Lab/OGM-GE_CVPR2022, main.py).

    After each backward pass every modality is scored by the summed softmax probability of the
    true class over the batch, taken from the fusion head's own view of that modality where the
    head has one (concat: its first layer split by modality), else from the branch's head (kept
    current by `fusion.aux_loss_weight`). A modality whose score exceeds the mean of the others'
    (ratio rho > 1; with two modalities, the paper's ratio) gets the coefficient
    1 - tanh(alpha * rho), the others 1. Its encoder's weight matrices and conv kernels (not
    biases, not norms) have their gradient multiplied by the coefficient, then Gaussian noise with
    the scaled gradient's std added (the GE part). Acts fully under SGD only: Adam-type
    optimisers undo a gradient scale.
    """

    def __init__(self, model: FusionModel, alpha: float):
        self.model, self.alpha = model, alpha

    def modality_logits(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            own = self.model.head.modality_logits(self.model.last_prepped)
        return own if own is not None else self.model.last_branch_logits

    def coefficients(self, labels: torch.Tensor) -> dict[str, float]:
        scores = {m: F.softmax(l, dim=1).gather(1, labels[:, None]).sum().item()
                  for m, l in self.modality_logits().items()}
        coeffs = {}
        for m, s in scores.items():
            others = [v for k, v in scores.items() if k != m]
            ratio = s / max(sum(others) / len(others), 1e-8)
            coeffs[m] = 1.0 - float(np.tanh(self.alpha * ratio)) if ratio > 1 else 1.0
        return coeffs

    def after_backward(self, labels: torch.Tensor) -> None:
        for m, coeff in self.coefficients(labels).items():
            for param in self.model.branches[m].encoder.parameters():
                if param.grad is not None and param.grad.dim() >= 2:
                    param.grad.mul_(coeff)
                    param.grad.add_(torch.randn_like(param.grad) * (param.grad.std() + 1e-8))


class AuxiliaryLosses(Callback):
    """Unimodal auxiliary losses: `weight` x the mean over branches of each branch head's own
    loss (its logits divided by its temperature), added to the fused loss, so every branch
    stays discriminative and its head current while the fusion is fine-tuned."""

    def __init__(self, model: FusionModel, weight: float, loss: nn.Module):
        self.model, self.weight, self.loss = model, weight, loss

    def extra_loss(self, labels: torch.Tensor) -> torch.Tensor:
        losses = [self.loss(logits, labels) for logits in self.model.branch_logits.values()]
        return self.weight * torch.stack(losses).mean()


class BranchDiagnostics(Callback):
    """Per epoch and branch: the mean gradient norm its encoder received over the epoch's
    batches (after any modulation, so list this callback last), and on `inputs` (the validation
    trials) the mean embedding norm and mean prediction entropy (nats); added to the record as
    `grad_norm/<m>`, `embed_norm/<m>`, `entropy/<m>`."""

    def __init__(self, model: FusionModel, inputs: dict[str, torch.Tensor], device: torch.device):
        self.model, self.inputs, self.device = model, inputs, device
        self.grad_norms: dict[str, list[float]] = {m: [] for m in model.branches}

    def after_backward(self, labels: torch.Tensor) -> None:
        for m, branch in self.model.branches.items():
            grads = [p.grad.norm() for p in branch.encoder.parameters() if p.grad is not None]
            self.grad_norms[m].append(float(torch.stack(grads).norm()) if grads else 0.0)

    def on_epoch_end(self, record: dict) -> None:
        out = branch_outputs(self.model, self.inputs, self.device)
        for m, norms in self.grad_norms.items():
            record[f"grad_norm/{m}"] = float(np.mean(norms)) if norms else 0.0
            record[f"embed_norm/{m}"] = float(out["embed_norm"][m].mean())
            record[f"entropy/{m}"] = float(row_entropy(out["probs"][m]).mean())
            norms.clear()


def row_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of (n, n_classes) probabilities, as scipy.stats.entropy(probs,
    axis=1) computes it, bit for bit, without importing scipy.stats (0.9 s of a training
    stage's start-up)."""
    return entr(probs / probs.sum(axis=1, keepdims=True)).sum(axis=1)
