"""pretrain <modality>: each branch trained alone for every fold and seed -> models/<modality>/
(checkpoints, probabilities of every trial, per-run history) and its dvclive curves."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.dataset import NO_AUDIO, load_features, load_trials, skip_note
from pipeline.folds import fold_data, runs
from pipeline.nets import save_branch
from pipeline.params import Params
from pipeline.pretraining import train_branch
from pipeline.training import log_curves, predict_proba, resolve_device


def run(params: Params, modality: str) -> None:
    if skip_note("pretrain", modality):
        with io.atomic_path(io.branch_dir(modality)) as out:
            out.mkdir()
            io.write_json(out / "skipped.json", {"skipped": NO_AUDIO})
        with io.atomic_path(io.live_dir(f"pretrain_{modality}")) as live:
            (live / "plots" / "metrics").mkdir(parents=True)
            io.write_json(live / "metrics.json", {})
        return
    p = params.branch(modality)
    device = resolve_device(p.device)
    trials, x = load_trials(), load_features(modality)
    n_classes = len(trials.classes)
    probs = np.zeros((len(trials.folds), len(p.seeds), len(trials.labels), n_classes), np.float32)
    histories = {}
    with io.atomic_path(io.branch_dir(modality)) as out:
        out.mkdir()
        bar = tqdm(runs(len(trials.folds), p.seeds), desc=f"pretrain {modality}", unit="run")
        for fold, i, seed in bar:
            data = fold_data({modality: x}, trials, fold)
            model, history = train_branch(modality, data, p, n_classes, seed, device,
                                          progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
            probs[fold, i] = predict_proba(model, data.inputs, device, p.loss_temperature)
            save_branch(out / f"fold{fold}_seed{seed}.pt", model.cpu())
            histories[f"fold{fold}_seed{seed}"] = history
        np.save(out / "probabilities.npy", probs)
        io.write_json(out / "history.json", histories)
    log_curves(io.live_dir(f"pretrain_{modality}"), histories)
