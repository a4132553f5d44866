"""The one training loop, used by branch pretraining and by fusion fine-tuning.

Inputs are dicts keyed by modality of anything that gives a batch of rows as a tensor when
indexed: tensors, or `folds.NormalizedRows` that read and standardise only the batch's rows
from memory-mapped features. Batches are drawn with a torch Generator seeded from params, so a
seed fixes initialisation, shuffling and dropout.
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.nets import take


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("params: train.device = 'cuda' but no CUDA device is available; "
                            "allowed here: auto, cpu")
    return torch.device(name)


def run_device(name: str, k: int) -> str:
    """The device of the k-th training run: with CUDA, runs take the visible GPUs round-robin."""
    device = resolve_device(name)
    return f"cuda:{k % torch.cuda.device_count()}" if device.type == "cuda" else "cpu"


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a run touches and ask for deterministic kernels; returns the generator that
    orders batches. On CUDA, cuBLAS gets the workspace its deterministic mode needs (before the
    run's first matrix product creates its handle); a kernel with no deterministic implementation
    still runs, with a warning that `fit` records (`nondeterministic_ops`)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # What torch.use_deterministic_algorithms sets, less torch.compile's flag: setting that one
    # imports inductor, about 1 s in every process that trains, and nothing here compiles.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


NONDETERMINISTIC = " does not have a deterministic implementation"  # torch's warning under warn_only


@contextlib.contextmanager
def nondeterministic_ops():
    """Yields a set that receives, when the block ends, the kernels torch ran without a
    deterministic implementation inside it (on CPU none here; on CUDA e.g.
    adaptive_avg_pool2d_backward_cuda); other warnings pass through as they came."""
    found: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for w in caught:
        text = str(w.message)
        if NONDETERMINISTIC in text:
            found.add(text.split(NONDETERMINISTIC)[0].strip())
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights from train labels, mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


class ClassificationLoss(nn.Module):
    """Cross-entropy or focal loss on logits divided by a temperature.

    Focal loss (Lin et al. 2017) down-weights easy samples by (1 - p_t)^gamma and uses
    class weights; with gamma = 0 it is weighted cross-entropy. The temperature divides the
    logits before the softmax, as real projects do (e.g. 2000 for raw audio logits).
    """

    def __init__(self, kind: str, temperature: float, gamma: float = 0.0,
                 weights: torch.Tensor | None = None):
        super().__init__()
        self.kind, self.temperature, self.gamma = kind, temperature, gamma
        self.register_buffer("weights", weights if weights is not None else None)

    def primary(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The primary task's logits and labels (here: all of them; see MultiTaskLoss)."""
        return logits, target

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits / self.temperature, dim=1)
        if self.kind == "ce":
            return F.nll_loss(log_p, target)
        log_pt = log_p.gather(1, target[:, None]).squeeze(1)
        focal = (1 - log_pt.exp()).clamp_min(0) ** self.gamma * -log_pt
        if self.weights is not None:
            w = self.weights[target]
            return (w * focal).sum() / w.sum()
        return focal.mean()


class MultiTaskLoss(nn.Module):
    """A weighted sum of one ClassificationLoss per task, over a model's logits of every task side
    by side (n, sum of the tasks' class counts) and labels (n, n_tasks), -1 where a trial has no
    label for a task (left out of that task's loss; a batch with none adds 0).

    `weighting`: equal (weights 1), fixed (`weights`), or uncertainty: learned log-variances s_t,
    loss = sum_t L_t / (2 exp(s_t)) + s_t / 2 (Kendall et al. 2018, as LibMTL's UW); their
    parameters must go to the optimizer. The first task is the primary one: accuracy (what early
    stopping and the best epoch go by) and the callbacks see it alone (`primary`); the validation
    loss that breaks accuracy ties is this total.
    """

    def __init__(self, losses: Sequence[ClassificationLoss], sizes: Sequence[int], weighting: str,
                 weights: Sequence[float] | None = None):
        super().__init__()
        self.losses, self.sizes, self.weighting = nn.ModuleList(losses), list(sizes), weighting
        self.register_buffer("weights", torch.tensor(list(weights) if weighting == "fixed" else [1.0] * len(sizes)))
        self.log_vars = nn.Parameter(torch.zeros(len(sizes))) if weighting == "uncertainty" else None

    def primary(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits[:, :self.sizes[0]], target[:, 0]

    def task_losses(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's loss over its labelled trials (n_tasks,), and which tasks had any (bool)."""
        out, present = [], []
        for t, (loss, chunk) in enumerate(zip(self.losses, logits.split(self.sizes, dim=1))):
            known = target[:, t] >= 0
            present.append(bool(known.any()))
            out.append(loss(chunk[known], target[known, t]) if present[-1] else chunk.sum() * 0.0)
        return torch.stack(out), torch.tensor(present, device=logits.device)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses, present = self.task_losses(logits, target)
        if self.log_vars is not None:  # a task without labels in the batch adds nothing, its s_t included
            return torch.where(present, losses / (2 * self.log_vars.exp()) + self.log_vars / 2, 0.0).sum()
        return (self.weights * losses).sum()


def task_loss(kind: str, temperature: float, gamma: float, labels: np.ndarray, sizes: Sequence[int],
              weighting: str = "equal", weights: Sequence[float] | None = None) -> nn.Module:
    """The training loss of a model with one head per task: `labels` (n,) for one task (its
    ClassificationLoss, as always), (n, n_tasks) with -1 for missing labels for several (a
    MultiTaskLoss); each task's class weights come from its own train labels."""
    if labels.ndim == 1:
        return ClassificationLoss(kind, temperature, gamma, class_weights(labels, sizes[0]))
    return MultiTaskLoss([ClassificationLoss(kind, temperature, gamma, class_weights(labels[labels[:, t] >= 0, t], k))
                          for t, k in enumerate(sizes)], sizes, weighting, weights)


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    patience: int  # epochs without validation improvement before stopping
    batch_size: int


class Callback:
    """A hook into `fit`; subclasses override what they need (see pipeline/callbacks.py).

    Order within an epoch: `on_epoch_start` (after the model is put in train mode),
    `epoch_pool` (which train positions the epoch draws from), per batch `extra_loss` (a term
    added to the training loss after the forward pass) and `after_backward` (gradients are
    there, the optimizer has not stepped), then `on_epoch_end` with the epoch's record (it may
    add diagnostics to it). `min_epochs`: no early stop before that many epochs.
    """

    min_epochs = 0

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def epoch_pool(self, epoch: int, n: int) -> torch.Tensor | None:
        return None

    def extra_loss(self, labels: torch.Tensor) -> torch.Tensor | None:
        return None

    def after_backward(self, labels: torch.Tensor) -> None:
        pass

    def on_epoch_end(self, record: dict) -> None:
        pass


def set_dropout(module: nn.Module, p: float) -> None:
    """Set the drop probability of every dropout in `module` (attention dropout included)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = p


def _batches(n: int, batch_size: int, generator: torch.Generator | None, pool: torch.Tensor | None = None):
    if pool is not None:
        order = pool[torch.randperm(len(pool), generator=generator)]
    else:
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if generator is not None and len(idx) == 1:  # BatchNorm cannot train on one sample
            continue
        yield idx


def task_softmax(logits: torch.Tensor, sizes: Sequence[int] | None, temperature: float = 1.0) -> torch.Tensor:
    """Softmax of logits / temperature within each task's block of columns (`sizes`; None: one task)."""
    if sizes is None or len(sizes) == 1:
        return F.softmax(logits / temperature, dim=1)
    return torch.cat([F.softmax(chunk / temperature, dim=1) for chunk in logits.split(list(sizes), dim=1)], dim=1)


@torch.no_grad()
def predict_proba(model: nn.Module, inputs: dict[str, torch.Tensor], device: torch.device,
                  temperature: float = 1.0, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (n, n_classes) in eval mode, softmax of logits / temperature; a model
    with several task heads (`task_sizes`) gives each task's probabilities side by side."""
    model.eval()
    n = len(next(iter(inputs.values())))
    sizes = getattr(model, "task_sizes", None)
    out = [task_softmax(model(take(inputs, idx, device)), sizes, temperature).cpu()
           for idx in _batches(n, batch_size, None)]
    return torch.cat(out).numpy()


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, loss_fn: nn.Module, inputs: dict[str, torch.Tensor],
                      labels: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """Loss and (primary task) accuracy of `model` in eval mode on one part."""
    model.eval()
    logits = torch.cat([model(take(inputs, idx, device)) for idx in _batches(len(labels), 256, None)])
    labels = labels.to(device)
    primary_logits, primary_labels = loss_fn.primary(logits, labels)
    return loss_fn(logits, labels).item(), (primary_logits.argmax(1) == primary_labels).float().mean().item()


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
        train: tuple[dict[str, torch.Tensor], torch.Tensor],
        val: tuple[dict[str, torch.Tensor], torch.Tensor],
        cfg: FitConfig, generator: torch.Generator, device: torch.device,
        callbacks: Sequence[Callback] = ()) -> list[dict]:
    """Train `model` in place; keep the weights of the epoch with the best validation accuracy
    (ties: lower validation loss). Stops after `cfg.patience` epochs without improvement (not
    before every callback's `min_epochs`). Batches are drawn with `generator`.

    Returns one dict per epoch: train_loss, train_acc, val_loss, val_acc (+ what callbacks add,
    and `nondeterministic`: the kernels of the epoch that had no deterministic implementation).
    """
    model.to(device)
    loss_fn.to(device)
    (x_train, y_train), (x_val, y_val) = train, val
    min_epochs = max((cb.min_epochs for cb in callbacks), default=0)
    best, best_key, stale, history = None, None, 0, []
    for epoch in range(cfg.epochs):
        model.train()
        for cb in callbacks:
            cb.on_epoch_start(epoch)
        pool = next((p for cb in callbacks if (p := cb.epoch_pool(epoch, len(y_train))) is not None), None)
        with nondeterministic_ops() as found:
            total, correct, seen = _train_epoch(model, optimizer, loss_fn, x_train, y_train, cfg, generator, device,
                                                pool, callbacks, epoch)
            val_loss, val_acc = loss_and_accuracy(model, loss_fn, x_val, y_val, device)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1),
                        "train_acc": correct / max(seen, 1), "val_loss": val_loss, "val_acc": val_acc,
                        **({"nondeterministic": sorted(found)} if found else {})})
        for cb in callbacks:
            cb.on_epoch_end(history[-1])
        key = (val_acc, -val_loss)
        if best_key is None or key > best_key:
            best_key, best, stale = key, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience and epoch + 1 >= min_epochs:
                break
    model.load_state_dict(best)
    return history


def _train_epoch(model, optimizer, loss_fn, x_train, y_train, cfg: FitConfig, generator, device, pool,
                 callbacks, epoch: int) -> tuple[float, int, int]:
    """One pass over the train batches; returns the summed loss, the correct count and the count."""
    total, correct, seen = 0.0, 0, 0
    for idx in _batches(len(y_train), cfg.batch_size, generator, pool):
        xb, yb = take(x_train, idx, device), y_train[idx].to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        logits, yb = loss_fn.primary(logits, yb)  # accuracy and the callbacks: the primary task
        for cb in callbacks:
            extra = cb.extra_loss(yb)
            if extra is not None:
                loss = loss + extra
        if not torch.isfinite(loss):
            raise PipelineError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); "
                                "lower the learning rate or raise loss_temperature")
        loss.backward()
        for cb in callbacks:
            cb.after_backward(yb)
        optimizer.step()
        total += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
        seen += len(idx)
    return total, correct, seen
