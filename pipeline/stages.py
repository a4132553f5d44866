"""Bodies of the data stages (ingest, split, features, normalize): read the inputs a stage
declares in dvc.yaml, call the pure functions, write the outputs atomically. The training
stages live in pretrain.py, fuse.py and evaluate.py.
"""
from __future__ import annotations

import numpy as np

from pipeline import io
from pipeline.dataset import load_features, load_labels, load_manifest, load_trials
from pipeline.normalize import NORM_AXES, apply_normalizer, fit_normalizer
from pipeline.params import Params
from pipeline.split import fold_indices, make_folds


def ingest(params: Params) -> None:
    from pipeline.data.sources import ingest as run_source

    trials, classes = run_source(params)
    with io.atomic_path(io.MANIFEST) as tmp:
        trials.to_csv(tmp, index=False)
    io.write_json(io.CLASSES, classes)
    print(f"ingest: {len(trials)} trials, {trials['subject'].nunique()} subjects, classes {classes}")


def split(params: Params) -> None:
    trials = load_manifest()
    folds = make_folds(trials["subject"].tolist(), params.split)
    io.write_json(io.SPLIT, {"scheme": params.split.scheme, "folds": folds})
    print(f"split: {params.split.scheme}, {len(folds)} fold(s); fold 0 "
          + ", ".join(f"{k}={len(v)} subjects" for k, v in folds[0].items()))


def features(modality: str, params: Params) -> None:
    if modality == "eeg":
        from pipeline.features.eeg import eeg_features

        x, _ = eeg_features(load_manifest(), params.eeg)
    elif modality == "mel":
        from pipeline.features.mel import mel_features

        x = mel_features(load_manifest(), params.mel)
    else:
        from pipeline.features.topo import topo_features

        from pipeline.plots import plot_persistence_examples

        x = topo_features(load_features("eeg"), params.eeg.sfreq, params.topo)
        labels, classes = load_labels()
        plot_persistence_examples(io.FIGURES / "persistence_images.png", x, labels, classes,
                                  [f"{band} H{d}" for band in params.topo.bands
                                   for d in params.topo.homology_dimensions])
    io.save_array(io.feature_path(modality), x)
    print(f"features {modality}: {x.shape}")


def normalize(modality: str, params: Params) -> None:
    """Train-only statistics per fold, plus what the normalised inputs look like in each part
    (mean, std, min, max): the first thing to check when one branch dominates."""
    x, trials = load_features(modality), load_trials()
    means, stds, summary = [], [], []
    for fold in trials.folds:
        parts = fold_indices(trials.subjects, fold)
        mean, std = fit_normalizer(x[parts["train"]], NORM_AXES[modality])
        means.append(mean)
        stds.append(std)
        summary.append({part: _describe(apply_normalizer(x[idx], mean, std)) for part, idx in parts.items()})
    io.save_npz(io.normalizer_path(modality), mean=np.stack(means), std=np.stack(stds))
    io.write_json(io.normalizer_path(modality).with_suffix(".json"), summary)


def _describe(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}
