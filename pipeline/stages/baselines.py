"""baselines: classical models on handcrafted features of every view, per fold ->
models/baselines/probabilities.npz (name -> (n_folds, 1, n_trials, n_classes)) and
selection.json (the C kept per fold and its validation accuracy)."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.baselines import BASELINES, chosen, fit_on_fold
from pipeline.dataset import available_modalities, load_features, load_trials
from pipeline.params import Params
from pipeline.split import fold_indices


def run(params: Params) -> None:
    p = params.baselines
    trials = load_trials()
    views = available_modalities()
    features = {m: load_features(m) for m in views}
    names = chosen(p, views)
    n_classes = len(trials.classes)
    probs = {n: np.zeros((len(trials.folds), 1, len(trials.labels), n_classes), np.float32) for n in names}
    selection = {n: [] for n in names}
    folds = [fold_indices(trials.subjects, f) for f in trials.folds]
    with tqdm(total=len(names) * len(folds), desc="baselines", unit="fit") as bar:
        for name in names:
            baseline = BASELINES[name]
            x = baseline.features({m: features[m] for m in views if m in baseline.reads}, params.eeg.sfreq, p)
            for fold, index in enumerate(folds):
                probs[name][fold, 0], c, val_acc = fit_on_fold(x, trials.labels, index, n_classes, p.c_grid,
                                                               baseline.fitted_steps)
                selection[name].append({"fold": fold, "C": c, "val_acc": val_acc})
                bar.set_postfix(baseline=name, val_acc=f"{val_acc:.2f}")
                bar.update()
    with io.atomic_path(io.BASELINES_DIR) as out:
        out.mkdir()
        np.savez(out / "probabilities.npz", **probs)
        io.write_json(out / "selection.json", {n: {"view": BASELINES[n].view, "folds": s} for n, s in selection.items()})
