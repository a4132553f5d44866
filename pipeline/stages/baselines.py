"""baselines: classical models on handcrafted features of every view, per fold ->
models/baselines/probabilities.npz (name -> (n_folds, 1, n_trials, n_classes)) and
selection.json (the C kept per fold, for early fusion whether its blocks were scaled, and its
validation accuracy). Each (baseline, fold) fit is
a task on `compute.*`'s workers (pipeline.parallel)."""
from __future__ import annotations

import numpy as np

from pipeline import io
from pipeline.baselines import BASELINES, chosen, fit_on_fold
from pipeline.dataset import available_modalities, load_features, load_trials
from pipeline.parallel import stream
from pipeline.params import Params
from pipeline.split import fold_indices


def run(params: Params) -> None:
    p = params.baselines
    trials = load_trials()
    views = available_modalities()
    features = {m: load_features(m) for m in views}
    names = chosen(params, views)
    n_classes = len(trials.classes)
    folds = [fold_indices(trials.subjects, f) for f in trials.folds]
    reads = {n: {m: features[m] for m in views if m in BASELINES[n].reads} for n in names}
    inputs = {n: BASELINES[n].features(reads[n], params) for n in names}
    blocks = {n: BASELINES[n].blocks(reads[n], params) for n in names}  # early fusion's parts, scaled alike
    grid = [(name, fold) for name in names for fold in range(len(folds))]
    tasks = ((inputs[name], trials.labels, folds[fold], n_classes, p.c_grid, BASELINES[name].fitted_steps,
              blocks[name]) for name, fold in grid)
    probs = {n: np.zeros((len(trials.folds), 1, len(trials.labels), n_classes), np.float32) for n in names}
    selection = {n: [] for n in names}
    for (name, fold), (fold_probs, kept, val_acc) in zip(grid, stream(fit_on_fold, tasks, params.compute, "baselines",
                                                                   "fit", len(grid))):
        probs[name][fold, 0] = fold_probs
        selection[name].append({"fold": fold, **kept, "val_acc": val_acc})
    with io.atomic_path(io.BASELINES_DIR) as out:
        out.mkdir()
        np.savez(out / "probabilities.npz", **probs)
        io.write_json(out / "selection.json", {n: {"view": BASELINES[n].view, "folds": s} for n, s in selection.items()})
