"""Stage bodies: read the inputs a stage declares in dvc.yaml, call the pure functions, write
the outputs atomically. The CLI (pipeline/cli.py) validates params and calls one of these.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline import io
from pipeline.dataset import fold_data, load_features, load_trials
from pipeline.evaluate import aggregate, classification_metrics
from pipeline.fusion import OGMGE, branch_probabilities, build_fusion
from pipeline.normalize import NORM_AXES, fit_normalizer
from pipeline.params import MODALITIES, Params
from pipeline.pretrain import load_branch, save_branch, train_branch
from pipeline.split import fold_indices, make_folds
from pipeline.training import (ClassificationLoss, FitConfig, class_weights, fit, predict_proba,
                               resolve_device, seed_everything, set_dropout)


def _read_manifest() -> pd.DataFrame:
    return pd.read_csv(io.MANIFEST, dtype={"subject": str, "label": str})


def ingest(params: Params) -> None:
    from pipeline.data.sources import ingest as run_source

    trials, classes = run_source(params)
    with io.atomic_path(io.MANIFEST) as tmp:
        trials.to_csv(tmp, index=False)
    io.write_json(io.CLASSES, classes)
    print(f"ingest: {len(trials)} trials, {trials['subject'].nunique()} subjects, classes {classes}")


def split(params: Params) -> None:
    trials = _read_manifest()
    folds = make_folds(trials["subject"].tolist(), params.split)
    io.write_json(io.SPLIT, {"scheme": params.split.scheme, "folds": folds})
    print(f"split: {params.split.scheme}, {len(folds)} fold(s); fold 0 "
          + ", ".join(f"{k}={len(v)} subjects" for k, v in folds[0].items()))


def features(modality: str, params: Params) -> None:
    if modality == "eeg":
        from pipeline.features.eeg import eeg_features

        x, _ = eeg_features(_read_manifest(), params.eeg)
    elif modality == "mel":
        from pipeline.features.mel import mel_features

        x = mel_features(_read_manifest(), params.mel)
    else:
        from pipeline.features.topo import topo_features

        x = topo_features(load_features("eeg"), params.eeg.sfreq, params.topo)
    io.save_array(io.feature_path(modality), x)
    print(f"features {modality}: {x.shape}")


def normalize(modality: str, params: Params) -> None:
    x, trials = load_features(modality), load_trials()
    stats = [fit_normalizer(x[fold_indices(trials.subjects, fold)["train"]], NORM_AXES[modality])
             for fold in trials.folds]
    io.save_npz(io.normalizer_path(modality), mean=np.stack([m for m, _ in stats]),
                std=np.stack([s for _, s in stats]))


def _runs(n_folds: int, seeds) -> list[tuple[int, int, int]]:
    """(fold, seed index, seed) of every training run."""
    return [(f, i, s) for f, (i, s) in itertools.product(range(n_folds), enumerate(seeds))]


def pretrain(modality: str, params: Params) -> None:
    p = params.branch(modality)
    device = resolve_device(p.device)
    trials, x = load_trials(), load_features(modality)
    n_classes = len(trials.classes)
    probs = np.zeros((len(trials.folds), len(p.seeds), len(trials.labels), n_classes), np.float32)
    histories = {}
    with io.atomic_path(io.branch_dir(modality)) as out:
        out.mkdir()
        bar = tqdm(_runs(len(trials.folds), p.seeds), desc=f"pretrain {modality}", unit="run")
        for fold, i, seed in bar:
            data = fold_data({modality: x}, trials, fold)
            model, history = train_branch(modality, data, p, n_classes, seed, device,
                                          progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
            probs[fold, i] = predict_proba(model, data.inputs, device, p.loss_temperature)
            save_branch(out / f"fold{fold}_seed{seed}.pt", model.cpu(), p)
            histories[f"fold{fold}_seed{seed}"] = history
        np.save(out / "probabilities.npy", probs)
        io.write_json(out / "history.json", histories)


def _fusion_config(fp, model, data, device, batch_size: int) -> FitConfig:
    """Freezing, curriculum (easy-to-hard by the pretrained branches' confidence in the true
    class), post-curriculum dropout and gradient modulation for one fusion run."""
    branch_params = list(model.branches.parameters())
    if model.head.freezes_branches:
        for p in branch_params:
            p.requires_grad_(False)
        branch_params = []
    cfg = FitConfig(fp.epochs, fp.patience, batch_size, fp.freeze_epochs, branch_params)
    if fp.curriculum_epochs > 0:
        x_train, y_train = data.part("train")
        probs = branch_probabilities(model, x_train, device)
        confidence = np.mean([p[np.arange(len(y_train)), y_train.numpy()] for p in probs.values()], axis=0)
        cfg.curriculum, cfg.curriculum_epochs = np.argsort(-confidence, kind="stable"), fp.curriculum_epochs

    def on_epoch_start(epoch: int) -> None:
        if model.head.freezes_branches:
            model.branches.eval()  # frozen for good: keep BatchNorm statistics as pretrained
        set_dropout(model.head, fp.dropout if epoch < fp.curriculum_epochs else fp.post_curriculum_dropout)

    cfg.on_epoch_start = on_epoch_start
    if fp.grad_modulation == "ogm_ge":
        cfg.after_backward = OGMGE(model, fp.ogm_alpha)
    return cfg


def _ensemble_weights(fp, model, data, device) -> list[float]:
    if fp.ensemble_weighting == "fixed":
        return list(fp.ensemble_weights)
    if fp.ensemble_weighting == "equal":
        return [1.0] * len(fp.modalities)
    x_val, y_val = data.part("val")
    probs = branch_probabilities(model, x_val, device)
    return [float((probs[m].argmax(1) == y_val.numpy()).mean()) + 1e-6 for m in fp.modalities]


def fuse(params: Params) -> None:
    fp, tp = params.fusion, params.train
    device = resolve_device(tp.device)
    trials = load_trials()
    features = {m: load_features(m) for m in fp.modalities}
    n_classes = len(trials.classes)
    probs = np.zeros((len(trials.folds), len(tp.seeds), len(trials.labels), n_classes), np.float32)
    histories = {}
    with io.atomic_path(io.FUSION_DIR) as out:
        out.mkdir()
        bar = tqdm(_runs(len(trials.folds), tp.seeds), desc=f"fuse {fp.type}", unit="run")
        for fold, i, seed in bar:
            data = fold_data(features, trials, fold)
            branches = {m: load_branch(io.branch_dir(m) / f"fold{fold}_seed{seed}.pt")[0]
                        for m in fp.modalities}
            generator = seed_everything(seed)
            model = build_fusion(branches, n_classes, fp).to(device)
            if model.head.trainable:
                optimizer = torch.optim.AdamW(
                    [{"params": model.branches.parameters(), "lr": fp.branch_lr},
                     {"params": model.head_parameters(), "lr": fp.head_lr}], weight_decay=tp.weight_decay)
                train = data.part("train")
                loss = ClassificationLoss(fp.loss, fp.loss_temperature, fp.focal_gamma,
                                          class_weights(train[1].numpy(), n_classes))
                histories[f"fold{fold}_seed{seed}"] = fit(
                    model, optimizer, loss, train, data.part("val"),
                    _fusion_config(fp, model, data, device, tp.batch_size), generator, device,
                    progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
            else:
                model.head.set_weights(_ensemble_weights(fp, model, data, device))
            # The ensemble outputs log-probabilities already: no temperature on top.
            temperature = fp.loss_temperature if model.head.trainable else 1.0
            probs[fold, i] = predict_proba(model, data.inputs, device, temperature)
            torch.save(model.cpu().state_dict(), out / f"fold{fold}_seed{seed}.pt")
        np.save(out / "probabilities.npy", probs)
        io.write_json(out / "history.json", histories)


def _scores(probs: np.ndarray, trials, part: str) -> list[dict[str, float]]:
    """Metrics of every (fold, seed) run on one part of its fold."""
    runs = []
    for fold, by_seed in enumerate(probs):
        idx = fold_indices(trials.subjects, trials.folds[fold])[part]
        runs += [classification_metrics(trials.labels[idx], p[idx]) for p in by_seed]
    return runs


def evaluate(params: Params) -> None:
    trials = load_trials()
    branches, val_acc = {}, {}
    for m in MODALITIES:
        probs = np.load(io.branch_dir(m) / "probabilities.npy")
        branches[m] = {"test": aggregate(_scores(probs, trials, "test"))}
        val_acc[m] = aggregate(_scores(probs, trials, "val"))["acc"]
    fusion_probs = np.load(io.FUSION_DIR / "probabilities.npy")
    fusion_test = aggregate(_scores(fusion_probs, trials, "test"))
    best = max(params.fusion.modalities, key=val_acc.get)  # chosen on validation, never on test
    metrics = {
        "fusion": {"type": params.fusion.type, "test": fusion_test,
                   "gain_over_best_branch": fusion_test["acc"] - branches[best]["test"]["acc"],
                   "best_branch_on_val": best},
        "branches": branches,
        "n_seeds": len(params.train.seeds),
        "n_folds": len(trials.folds),
    }
    io.write_json(io.REPORTS / "metrics.json", metrics)
    print(f"evaluate: fusion {params.fusion.type} test acc {fusion_test['acc']:.3f} "
          f"+- {fusion_test['acc_std']:.3f}; " + ", ".join(
              f"{m} {b['test']['acc']:.3f}" for m, b in branches.items())
          + f"; gain over {best} (best on val) {metrics['fusion']['gain_over_best_branch']:+.3f}")
