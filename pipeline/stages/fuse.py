"""fuse: pretrained branches + a fusion head, fine-tuned (or combined without training) for
every fold and seed -> models/fusion/ (checkpoints, probabilities, history, diagnostics)."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.dataset import NO_AUDIO, available_modalities, load_features, load_trials
from pipeline.folds import fold_data, runs
from pipeline.fusion import save_fusion
from pipeline.fusion_training import fusion_diagnostics, output_temperature, train_fusion
from pipeline.nets import load_branch
from pipeline.params import Params
from pipeline.training import log_curves, predict_proba, resolve_device


def run(params: Params) -> None:
    params.check_modalities(available_modalities(), NO_AUDIO)
    fp, tp = params.fusion, params.train
    device = resolve_device(tp.device)
    trials = load_trials()
    features = {m: load_features(m) for m in fp.modalities}
    n_classes = len(trials.classes)
    probs = np.zeros((len(trials.folds), len(tp.seeds), len(trials.labels), n_classes), np.float32)
    histories, diagnostics = {}, {}
    with io.atomic_path(io.FUSION_DIR) as out:
        out.mkdir()
        bar = tqdm(runs(len(trials.folds), tp.seeds), desc=f"fuse {fp.type}", unit="run")
        for fold, i, seed in bar:
            run_id = f"fold{fold}_seed{seed}"
            data = fold_data(features, trials, fold)
            branches = {m: load_branch(io.branch_dir(m) / f"{run_id}.pt") for m in fp.modalities}
            model, histories[run_id] = train_fusion(branches, data, fp, tp, n_classes, seed, device,
                                                    progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
            temperature = output_temperature(model, fp)
            probs[fold, i] = predict_proba(model, data.inputs, device, temperature)
            diagnostics[run_id] = fusion_diagnostics(model, data, device, temperature)
            save_fusion(out / f"{run_id}.pt", model.cpu(), fp, n_classes)
        np.save(out / "probabilities.npy", probs)
        io.write_json(out / "history.json", histories)
        io.write_json(out / "diagnostics.json", diagnostics)
    log_curves(io.live_dir("fuse"), histories)
