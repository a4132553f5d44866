"""baselines: classical models on handcrafted features of every view, per fold ->
models/baselines/probabilities.npz (name -> (n_folds, 1, n_trials, n_classes)) and
selection.json (the C kept per fold, for early fusion whether its blocks were scaled, and its
validation accuracy); with secondary tasks (data.tasks) one model per task too, in
probabilities_tasks.npz ("<baseline>:<task>" -> probabilities); and the null audit's fits of
each baseline on labels permuted within each training subject (pipeline.audit, seeded by
`audit.seed`), in permuted.npz. Each (baseline, fold, task) fit is a task on `compute.*`'s
workers (pipeline.parallel)."""
from __future__ import annotations

import numpy as np

from pipeline import io
from pipeline.audit import fold_rng, permuted_within_subjects
from pipeline.baselines import BASELINES, chosen, fit_on_fold
from pipeline.dataset import available_modalities, load_features, load_trials
from pipeline.errors import PipelineError
from pipeline.parallel import stream
from pipeline.params import Params
from pipeline.split import fold_indices

PERMUTED = "<permuted>"  # the grid's name for the null audit's fits (no task is named so: tasks are identifiers)


def run(params: Params) -> None:
    p = params.baselines
    trials = load_trials()
    views = available_modalities()
    features = {m: load_features(m) for m in views}
    names = chosen(params, views)
    folds = [fold_indices(trials.subjects, f) for f in trials.folds]
    reads = {n: {m: features[m] for m in views if m in BASELINES[n].reads} for n in names}
    inputs = {n: BASELINES[n].features(reads[n], params) for n in names}
    blocks = {n: BASELINES[n].blocks(reads[n], params) for n in names}  # early fusion's parts, scaled alike
    # one model per task (None: the primary task); a secondary task learns from its labelled trials;
    # the null audit (PERMUTED): the primary task, labels permuted within each training subject of a fold
    views_of = {None: trials, **{task: trials.for_task(task) for task in trials.tasks}, PERMUTED: trials}
    permuted = [trials.labels[permuted_within_subjects(trials.subjects, fold_rng(params.audit.seed, fold),
                                                       np.isin(np.arange(len(trials.labels)), index["train"]))]
                for fold, index in enumerate(folds)]
    labels_of = lambda task, fold: permuted[fold] if task == PERMUTED else views_of[task].labels  # noqa: E731
    grid = [(name, fold, task) for task in views_of for name in names for fold in range(len(folds))]
    tasks = ((inputs[name], labels_of(task, fold), labelled(folds[fold], labels_of(task, fold), task, fold),
              len(views_of[task].classes), p.c_grid, BASELINES[name].fitted_steps, blocks[name])
             for name, fold, task in grid)
    probs = {(n, task): np.zeros((len(trials.folds), 1, len(trials.labels), len(view.classes)), np.float32)
             for task, view in views_of.items() for n in names}
    selection = {n: [] for n in names}
    for (name, fold, task), (fold_probs, kept, val_acc) in zip(grid, stream(fit_on_fold, tasks, params.compute,
                                                                         "baselines", "fit", len(grid))):
        probs[name, task][fold, 0] = fold_probs
        if task is None:
            selection[name].append({"fold": fold, **kept, "val_acc": val_acc})
    with io.atomic_path(io.BASELINES_DIR) as out:
        out.mkdir()
        np.savez(out / "probabilities.npz", **{n: a for (n, task), a in probs.items() if task is None})
        # secondary tasks: "<baseline>:<task>" -> probabilities (empty without them)
        np.savez(out / "probabilities_tasks.npz",
                 **{f"{n}:{task}": a for (n, task), a in probs.items() if task and task != PERMUTED})
        np.savez(out / "permuted.npz", **{n: a for (n, task), a in probs.items() if task == PERMUTED})
        io.write_json(out / "selection.json", {n: {"view": BASELINES[n].view, "folds": s} for n, s in selection.items()})


def labelled(index: dict[str, np.ndarray], labels: np.ndarray, task: str | None, fold: int) -> dict[str, np.ndarray]:
    """A fold's trial indices without the trials that have no label (-1) for a secondary task;
    a task with fewer than 2 classes among a fold's train trials cannot be fitted there."""
    out = {part: idx[labels[idx] >= 0] for part, idx in index.items()}
    if task is not None and len(np.unique(labels[out["train"]])) < 2:
        raise PipelineError(f"baselines: task {task!r} of data.tasks has fewer than 2 classes among fold {fold}'s "
                            "train trials; label more trials of it or leave it out of data.tasks")
    return out
