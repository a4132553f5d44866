"""Cross-modal distillation: a single-view student learns from the fused model's soft labels, for
use where the other views are missing (an EEG session without a microphone, a phone without an
EEG cap). Plain functions over one fold's tensors, and the self-contained task the distill stage
sends to its workers (`student_run`).

Loss (Hinton et al. 2015; EmotionKD adds the feature term, as FitNets):
    (1 - alpha) x CE(labels) + alpha x T^2 x KL(teacher_T || student_T)
    + feature_weight x MSE(projection(student embedding), teacher's fused representation)
KL with batchmean reduction, per task block with secondary tasks (each head distilled), summed.
teacher_T is softmax(log p_teacher / T), p_teacher the teacher's own output probabilities;
student_T is softmax(logits / (loss_temperature x T)), the student's logits as its CE sees them.

Teacher targets are the teacher's log-probabilities and representation of each trial, carried in
the label tensor beside the labels (`DistillTargets`), so the one training loop (`training.fit`)
trains students too: batches, early stopping on validation accuracy, the best epoch.
"""
from __future__ import annotations

import io as bytes_io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import io
from pipeline.dataset import Trials, load_features
from pipeline.folds import FoldData, fold_data
from pipeline.fusion import FusionModel, load_fusion
from pipeline.fusion_training import train_fusion_afresh
from pipeline.nets import BranchClassifier, load_branch, save_branch, take
from pipeline.params import DistillParams, TrainParams
from pipeline.training import FitConfig, fit, predict_proba, run_device, seed_everything, task_loss


@torch.no_grad()
def teacher_outputs(model: FusionModel, inputs: dict, device: torch.device,
                    batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """The teacher's log-probabilities of every task side by side (n, sum of task sizes; each
    block log-softmaxed at its output temperature) and its fused representation (n, d): the input
    of its head's last linear layer; None for a head without one (the ensemble)."""
    model.eval().to(device)
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    captured: list[torch.Tensor] = []
    hook = linears[-1].register_forward_hook(lambda mod, args, out: captured.append(args[0].detach().cpu())) \
        if linears else None
    temperature = model.output_temperature
    n = len(next(iter(inputs.values())))
    logp, batches = [], range(0, n, batch_size)
    try:
        for start in batches:
            logits = model(take(inputs, slice(start, start + batch_size), device)) / temperature
            logp.append(torch.cat([F.log_softmax(block, dim=1) for block in logits.split(model.task_sizes, dim=1)],
                                  dim=1).cpu())
    finally:
        if hook is not None:
            hook.remove()
    once_a_batch = len(captured) == len(batches)  # a last layer used several times a forward is no representation
    return torch.cat(logp).numpy(), (torch.cat(captured).numpy() if captured and once_a_batch else None)


class Student(nn.Module):
    """A branch trained as a student. In training mode, with a feature term, its output is the
    logits followed by a linear projection of its embedding to the teacher's representation
    (what `DistillationLoss` compares); in eval mode the logits alone, as the branch's."""

    def __init__(self, branch: BranchClassifier, teacher_dim: int | None):
        super().__init__()
        self.branch = branch
        self.projection = nn.Linear(branch.embed_dim, teacher_dim) if teacher_dim else None

    @property
    def task_sizes(self) -> list[int]:
        return self.branch.task_sizes

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        embedding = self.branch.embed(inputs)
        logits = self.branch.classify(embedding)
        if self.training and self.projection is not None:
            return torch.cat([logits, self.projection(embedding)], dim=1)
        return logits


class DistillationLoss(nn.Module):
    """The student's loss over targets (n, n_label_columns + sum(sizes) [+ d]): the labels (as
    floats; -1 where a secondary task has none), the teacher's log-probabilities, and with a
    feature term its representation. A term whose weight is 0 is not computed, so alpha = 0 and
    feature_weight = 0 train exactly as `base` alone."""

    def __init__(self, base: nn.Module, sizes: list[int], n_label_columns: int, alpha: float, temperature: float,
                 student_temperature: float, feature_weight: float):
        super().__init__()
        self.base, self.sizes, self.n_label_columns = base, list(sizes), n_label_columns
        self.alpha, self.temperature, self.feature_weight = alpha, temperature, feature_weight
        self.student_temperature = student_temperature

    def _labels(self, target: torch.Tensor) -> torch.Tensor:
        labels = target[:, :self.n_label_columns].long()
        return labels[:, 0] if self.n_label_columns == 1 else labels

    def primary(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.primary(logits[:, :sum(self.sizes)], self._labels(target))

    def kd(self, logits: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
        """T^2 x KL(teacher_T || student_T), batchmean, summed over the task blocks."""
        t = self.temperature
        total = logits.new_zeros(())
        for s, q in zip((logits / self.student_temperature).split(self.sizes, dim=1), teacher_logp.split(self.sizes, dim=1)):
            total = total + F.kl_div(F.log_softmax(s / t, dim=1), F.log_softmax(q / t, dim=1), log_target=True,
                                     reduction="batchmean")
        return t * t * total

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n_out, k = sum(self.sizes), self.n_label_columns
        logits = output[:, :n_out]
        loss = self.base(logits, self._labels(target))
        if self.alpha > 0:
            loss = (1 - self.alpha) * loss + self.alpha * self.kd(logits, target[:, k:k + n_out])
        if self.feature_weight > 0 and output.shape[1] > n_out:  # training mode: the projection is there
            loss = loss + self.feature_weight * F.mse_loss(output[:, n_out:], target[:, k + n_out:])
        return loss


def distill_targets(labels: torch.Tensor, teacher_logp: np.ndarray, teacher_features: np.ndarray | None) -> torch.Tensor:
    """Labels, teacher log-probabilities and representation side by side, float32 (see DistillationLoss)."""
    parts = [labels.reshape(len(labels), -1).float(), torch.from_numpy(teacher_logp).float()]
    if teacher_features is not None:
        parts.append(torch.from_numpy(teacher_features).float())
    return torch.cat(parts, dim=1)


def train_student(branch: BranchClassifier, data: FoldData, p: TrainParams, dp: DistillParams,
                  teacher_logp: np.ndarray | None, teacher_features: np.ndarray | None, seed: int,
                  device: torch.device) -> tuple[BranchClassifier, list[dict]]:
    """Train `branch` (pretrained, or freshly initialised) as a student on `data`'s train part,
    selected on its val part by accuracy on the labels, as a branch is (`p`: that view's train
    params). Teacher targets are given for every trial (n_trials, ...); None: labels alone."""
    generator = seed_everything(seed)
    use_features = teacher_logp is not None and dp.feature_weight > 0 and teacher_features is not None
    student = Student(branch, teacher_features.shape[1] if use_features else None)
    labels = data.labels
    base = task_loss(p.loss, p.loss_temperature, p.focal_gamma, data.part("train")[1].numpy(), branch.task_sizes,
                     p.task_weighting, p.task_weights)
    if teacher_logp is None:
        loss, targets = base, labels
    else:
        loss = DistillationLoss(base, branch.task_sizes, 1 if labels.ndim == 1 else labels.shape[1], dp.alpha,
                                dp.temperature, p.loss_temperature, dp.feature_weight if use_features else 0.0)
        targets = distill_targets(labels, teacher_logp, teacher_features if use_features else None)
    optimizer = torch.optim.AdamW(student.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    if list(base.parameters()):  # uncertainty weighting's log-variances, undecayed
        optimizer.add_param_group({"params": list(base.parameters()), "weight_decay": 0.0})
    parts = {name: ({m: x.subset(idx) for m, x in data.inputs.items()}, targets[torch.as_tensor(idx)])
             for name, idx in data.index.items()}
    history = fit(student, optimizer, loss, parts["train"], parts["val"],
                  FitConfig(p.epochs, p.patience, p.batch_size), generator, device)
    return student.branch, history


def inner_groups(train_subjects: list[str], k: int) -> list[list[str]]:
    """The fold's train subjects in `k` groups (sorted, dealt round-robin: deterministic)."""
    ordered = sorted(train_subjects)
    return [ordered[g::k] for g in range(k)]


def cross_fitted_targets(data: FoldData, trials: Trials, branch_params: dict[str, TrainParams], tp: TrainParams,
                         teacher: FusionModel, k: int, seed: int,
                         device: torch.device) -> tuple[np.ndarray, np.ndarray | None, list[dict]]:
    """Teacher targets where no train trial is labelled by a teacher that trained on its subject:
    the fold's train subjects fall into `k` groups; for each, a teacher (every fused view's branch
    pretrained, then fused, as pretrain and fuse do, on the other groups' train trials; early
    stopping on the fold's validation subjects) labels that group's trials. The other trials
    (validation, test) get the fold's own teacher's targets, which never trained on them.
    Returns log-probabilities, representations (None without) and, per group, who it held out
    and who its teacher trained on."""
    logp, features = teacher_outputs(teacher, data.inputs, device)
    train = data.index["train"]
    subjects = trials.subjects[train]
    record = []
    for group in inner_groups(sorted(set(subjects)), k):
        held = np.isin(subjects, group)
        inner = FoldData(data.inputs, data.labels, {**data.index, "train": train[~held]})
        model, _ = train_fusion_afresh(inner, trials, branch_params, teacher.params, tp, seed, device)
        rows = train[held]
        group_logp, group_features = teacher_outputs(model, {m: x.subset(rows) for m, x in data.inputs.items()}, device)
        logp[rows] = group_logp
        if features is not None and group_features is not None:
            features[rows] = group_features
        record.append({"held_out": list(group), "trained_on": sorted(set(subjects[~held]))})
    return logp, features, record


def teacher_run(fold: int, seed: int, dp: DistillParams, branch_params: dict[str, TrainParams], tp: TrainParams,
                trials: Trials, root: str, run_index: int) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
    """The teacher targets of one (fold, seed), shared by its students, as a worker task on the
    device of the stage's `run_index`-th run: the log-probabilities and representation of every
    trial (`teacher_outputs`; cross-fitted on the train trials: `cross_fitted_targets`), both
    None where the fold trained no fused model (one view left), and what the teacher was."""
    base, device_ = Path(root), torch.device(run_device(tp.device, run_index))
    teacher_path = base / io.FUSION_DIR / f"fold{fold}_seed{seed}.pt"
    if not teacher_path.exists():
        return None, None, {"teacher": None, "targets": dp.teacher_targets}
    teacher = load_fusion(teacher_path)
    data = fold_data({m: load_features(m, mmap=True, root=base) for m in teacher.branches}, trials, fold, base)
    info: dict = {"teacher": teacher_path.name, "targets": dp.teacher_targets}
    if dp.teacher_targets == "cross_fitted":
        logp, features, info["groups"] = cross_fitted_targets(data, trials, branch_params, tp, teacher,
                                                              dp.inner_folds, seed, device_)
    else:
        logp, features = teacher_outputs(teacher, data.inputs, device_)
    return logp, (features if dp.feature_weight > 0 else None), info


def student_run(view: str, fold: int, seed: int, dp: DistillParams, p: TrainParams, trials: Trials, root: str,
                run_index: int, teacher_logp: np.ndarray | None,
                teacher_features: np.ndarray | None) -> tuple[np.ndarray, list[dict], bytes]:
    """One (view, fold, seed) student as a worker task (pipeline.parallel): it reads its inputs
    under `root` (the view's features, the fold's normalizer and pretrained branch), trains on the
    fold's teacher targets (`teacher_run`; None: labels alone) on the device of the stage's
    `run_index`-th run and returns its probabilities of every trial, its history and its
    checkpoint's bytes (a branch checkpoint: `load_branch`)."""
    base, device_ = Path(root), torch.device(run_device(p.device, run_index))
    data = fold_data({view: load_features(view, mmap=True, root=base)}, trials, fold, base)
    if dp.init == "pretrained":
        branch = load_branch(base / io.branch_dir(view) / f"fold{fold}_seed{seed}.pt")
    else:
        seed_everything(seed)
        branch = BranchClassifier(view, tuple(data.inputs[view].shape[1:]), len(trials.classes), p.embed_dim,
                                  p.dropout, p.encoder, p.loss_temperature,
                                  trials.task_classes, trials.classes)
    student, history = train_student(branch, data, p, dp, teacher_logp, teacher_features, seed, device_)
    probs = predict_proba(student, data.inputs, device_, p.loss_temperature)
    checkpoint = bytes_io.BytesIO()
    save_branch(checkpoint, student.cpu())
    return probs, history, checkpoint.getvalue()
