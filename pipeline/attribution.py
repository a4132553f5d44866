"""Integrated Gradients of the fold's networks: the explain stage's worker side (torch, captum),
`explain_run` a task named by module (pipeline.parallel.stream), so the stage's own process
loads neither; pipeline/explain.py reduces what it returns.

- Integrated Gradients (Sundararajan et al., ICML 2017; captum) of a network's log-probability
  of the true class (its logits divided by the temperature it was trained with), from the zero
  baseline: each view's input standardised with the fold's train statistics, so zero is the
  train mean pooled over the normaliser's axes, the input a view gets when modality dropout
  removes it in training. Attributions add up to the change in that log-probability from the
  baseline to the trial (completeness, up to the quadrature's error), so a view's summed
  attribution is its part of the decision.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import io
from pipeline.dataset import Trials, load_features
from pipeline.explain import class_means, explained_rows, task_trials, view_shares
from pipeline.folds import fold_data, task_labels
from pipeline.fusion import load_fusion
from pipeline.nets import load_branch
from pipeline.params import Params


def integrated_gradients(forward, inputs: dict[str, torch.Tensor], target: torch.Tensor, steps: int,
                         batch: int = 512) -> dict[str, torch.Tensor]:
    """captum's Integrated Gradients of `forward(inputs)` (n, outputs) at column `target` (n,),
    from a zero baseline of every view, with `steps` points of captum's default Gauss-Legendre
    rule along the path, `batch` path points a pass: each view's attributions, shaped as its input."""
    from captum.attr import IntegratedGradients

    views = list(inputs)
    method = IntegratedGradients(lambda *xs: forward(dict(zip(views, xs))))
    xs = tuple(inputs[m] for m in views)
    attributions = method.attribute(xs, baselines=tuple(torch.zeros_like(x) for x in xs), target=target,
                                    n_steps=steps, method="gausslegendre",
                                    internal_batch_size=max(batch, len(target)))
    return {m: a.detach() for m, a in zip(views, attributions)}


def task_log_probs(model: torch.nn.Module, sizes: list[int], task: int, temperature: float = 1.0):
    """The forward function of task `task`: log-softmax over its block of the model's output
    (blocks of `sizes` columns, primary task first, as `training.task_softmax` splits them)
    divided by `temperature` (the model's probabilities, as predict computes them)."""
    return lambda inputs: F.log_softmax(model(inputs).split(list(sizes), dim=1)[task] / temperature, dim=1)


def channel_attribution(attributions: torch.Tensor) -> np.ndarray:
    """(n, channels, times) EEG attributions -> (channels,): each channel's attribution summed
    over time, mean over trials: how much it moves the true class's log-probability on average
    (positive: it helps decide right; noise contributes either sign and averages out, where a
    mean of |attribution| would rank it as high as signal)."""
    return attributions.sum(dim=-1).mean(dim=0).numpy().astype(np.float64)


def feature_importance(attributions: torch.Tensor) -> np.ndarray:
    """(n, features) attributions -> (features,): the mean over trials of each feature's
    attribution to the true class's log-probability (as `channel_attribution`, signed)."""
    return attributions.mean(dim=0).numpy().astype(np.float64)


def view_sums(attributions: dict[str, torch.Tensor]) -> np.ndarray:
    """Each trial's summed attribution per view, (n, views) in the dict's order: by
    completeness, the view's part of the change of the explained output from the baseline."""
    return np.stack([a.flatten(1).sum(dim=1).numpy().astype(np.float64) for a in attributions.values()], axis=1)


def explain_run(fold: int, seed: int, params: Params, trials: Trials, audio: list[str], root: str) -> dict:
    """One (fold, seed) as a worker task: Integrated Gradients of the fold's pretrained EEG,
    acoustic and mel branches and of its trained fused model (None where the fold trained none)
    on its explained trials, reduced per task: {"eeg": task -> (channels,), "acoustic": task ->
    (features,), "mel": (classes, n_mels, n_frames) of the primary task, "share": task ->
    {"all": (views,), "class": (classes, views), "contribution": (views,)} or None}; NaN where
    a task has no labelled trial here or the fold did not fuse a view."""
    base, p = Path(root), params.explain
    views = list(dict.fromkeys(["eeg", *audio, *params.fusion.modalities]))
    data = fold_data({m: load_features(m, mmap=True, root=base) for m in views}, trials, fold, base)
    rows = explained_rows(data.index, p.trials, (p.seed, fold))
    x = {m: data.inputs[m][rows] for m in views}
    labels = task_labels(trials)[rows].reshape(len(rows), -1)
    tasks = task_trials(trials)
    names, sizes = list(tasks), [len(t.classes) for t in tasks.values()]

    def attributions(model, inputs: list[str], task: int, temperature: float) -> tuple[dict | None, np.ndarray]:
        """The model's attributions over `inputs` of the task's labelled explained trials (None
        without any), and their labels."""
        y = labels[:, task]
        keep = y >= 0
        if not keep.any():
            return None, y[keep]
        forward = task_log_probs(model.eval(), sizes, task, temperature)
        return integrated_gradients(forward, {m: x[m][keep] for m in inputs}, torch.as_tensor(y[keep]), p.steps), y[keep]

    def per_task(view: str, reduce) -> dict[str, np.ndarray]:
        """`reduce` of the fold's `view` branch's attributions, per task (NaN for a task without labels here)."""
        model = load_branch(base / io.branch_dir(view) / f"fold{fold}_seed{seed}.pt")
        out = {}
        for k, task in enumerate(names):
            a, _ = attributions(model, [view], k, model.temperature)
            out[task] = reduce(a[view]) if a is not None else np.full(x[view].shape[1], np.nan)
        return out

    out = {"eeg": per_task("eeg", channel_attribution), "acoustic": None, "mel": None, "share": None}
    if "acoustic" in audio:
        out["acoustic"] = per_task("acoustic", feature_importance)
    if "mel" in audio:
        mel = load_branch(base / io.branch_dir("mel") / f"fold{fold}_seed{seed}.pt")
        a, y = attributions(mel, ["mel"], 0, mel.temperature)  # every trial has the primary task's label
        out["mel"] = class_means(a["mel"].abs().numpy()[:, 0], y, sizes[0])
    checkpoint = base / io.FUSION_DIR / f"fold{fold}_seed{seed}.pt"
    if checkpoint.is_file():  # views this fold did not fuse: NaN, left out of the means over runs
        fused, views = load_fusion(checkpoint), list(params.fusion.modalities)
        out["share"] = {}
        for k, task in enumerate(names):
            a, y = attributions(fused, list(fused.branches), k, fused.output_temperature)
            if a is None:
                out["share"][task] = {"all": np.full(len(views), np.nan), "contribution": np.full(len(views), np.nan),
                                      "class": np.full((sizes[k], len(views)), np.nan)}
                continue
            sums = view_sums(a)
            shares, sums = dict(zip(a, view_shares(sums).T)), dict(zip(a, sums.T))
            every, signed = (np.stack([by_view.get(m, np.full(len(y), np.nan)) for m in views], axis=1)
                             for by_view in (shares, sums))
            out["share"][task] = {"all": every.mean(axis=0), "class": class_means(every, y, sizes[k]),
                                  "contribution": signed.mean(axis=0)}
    return out
