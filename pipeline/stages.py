"""Bodies of the data stages (synthesize, ingest, split, features, normalize): read the inputs a
stage declares in dvc.yaml, call the pure functions, write the outputs atomically. The training
stages live in pretrain.py, fuse.py and evaluate.py.

A view the data does not have (speech, for EEG-only data) is skipped by each of its stages
with a one-line note; the stage still writes its (empty) outputs so DVC sees it as done.
"""
from __future__ import annotations

import numpy as np

from pipeline import io
from pipeline.dataset import NO_AUDIO, load_features, load_labels, load_manifest, load_trials, skip_note
from pipeline.normalize import NORM_AXES, apply_normalizer, fit_normalizer
from pipeline.params import Params
from pipeline.split import fold_indices, make_folds


def synthesize(params: Params) -> None:
    from pipeline.data.synthetic import generate

    with io.atomic_path(io.SYNTHETIC) as tmp:
        generate(tmp, params.data.synthetic)


def ingest(params: Params) -> None:
    from pipeline.data.ingest import ingest as check_source

    trials, classes, report = check_source(params)
    io.save_csv(io.MANIFEST, trials)
    io.write_json(io.CLASSES, classes)
    io.write_json(io.INGEST_REPORT, report)
    print(f"ingest: {len(trials)} trials, {trials['subject'].nunique()} subjects, classes {classes}, "
          f"views {', '.join(report['modalities'])}"
          + (f"; dropped {report['trials_dropped']} trial(s), {len(report['subjects_dropped'])} subject(s): "
             f"see {io.INGEST_REPORT}" if report["dropped"] else ""))


def split(params: Params) -> None:
    trials = load_manifest()
    folds = make_folds(trials["subject"].tolist(), params.split)
    io.write_json(io.SPLIT, {"scheme": params.split.scheme, "folds": folds})
    print(f"split: {params.split.scheme}, {len(folds)} fold(s); fold 0 "
          + ", ".join(f"{k}={len(v)} subjects" for k, v in folds[0].items()))


def features(modality: str, params: Params) -> None:
    n_jobs = params.compute.n_jobs
    if modality == "eeg":
        from pipeline.features.eeg import eeg_features

        x, _ = eeg_features(load_manifest(), params.eeg, n_jobs)
    elif modality == "mel":
        if skip_note("features", modality):
            x, counts = np.zeros(0, np.float32), {"skipped": NO_AUDIO}
        else:
            from pipeline.features.mel import mel_features

            x, counts = mel_features(load_manifest(), params.mel, n_jobs)
            print(f"features mel: clips of {params.mel.clip_seconds} s: {counts['exact']} exact, "
                  f"{counts['padded']} zero-padded, {counts['cropped']} cropped ({params.mel.crop})")
        io.write_json(io.MEL_REPORT, counts)
    else:
        from pipeline.features.topo import topo_features
        from pipeline.plots import plot_persistence_examples

        subjects = load_manifest()["subject"].to_numpy()
        chunks = [np.flatnonzero(subjects == s) for s in dict.fromkeys(subjects)]
        x = topo_features(load_features("eeg", mmap=True), params.eeg.sfreq, params.topo, chunks, n_jobs)
        labels, classes = load_labels()
        plot_persistence_examples(io.FIGURES / "persistence_images.png", x, labels, classes,
                                  [f"{band} H{d}" for band in params.topo.bands
                                   for d in params.topo.homology_dimensions])
    io.save_array(io.feature_path(modality), x)
    print(f"features {modality}: {x.shape}")


def normalize(modality: str, params: Params) -> None:
    """Train-only statistics per fold, plus what the normalised inputs look like in each part
    (mean, std, min, max): the first thing to check when one branch dominates."""
    if skip_note("normalize", modality):
        io.save_npz(io.normalizer_path(modality))
        io.write_json(io.normalizer_path(modality).with_suffix(".json"), {"skipped": NO_AUDIO})
        return
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
