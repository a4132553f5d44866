"""fuse: pretrained branches + a fusion head, fine-tuned (or combined without training) for
every fold and seed -> models/fusion/ (checkpoints, probabilities, history, diagnostics, the
per-fold selection).

Per fold, on validation only: each branch is tested against chance (`drop_uninformative` leaves
the views at chance out of that fold's fusion), and with `select: safe` the fold reports the
fused model only if it beats the best branch by `select_margin`, else the best branch or the
validation-weighted ensemble of branches, whichever is better on validation.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.dataset import NO_AUDIO, available_modalities, load_features, load_trials
from pipeline.errors import warn
from pipeline.folds import fold_data
from pipeline.fusion import save_fusion
from pipeline.fusion_training import fusion_diagnostics, output_temperature, train_fusion
from pipeline.nets import load_branch
from pipeline.params import FusionParams, Params
from pipeline.selection import INFORMATIVE_ALPHA, accuracy, ensemble_of_branches, informative_test, safe_choice
from pipeline.split import fold_indices
from pipeline.training import log_curves, predict_proba, resolve_device


def fold_views(fp: FusionParams, tests: dict[str, tuple[float, float]], fold: int) -> list[str]:
    """The views fused on this fold: all, or with `drop_uninformative` those whose validation
    accuracy beats chance (all of them if none does; film keeps its conditioning view)."""
    views = list(fp.modalities)
    if not fp.drop_uninformative:
        return views
    kept = [m for m in views if tests[m][1] < INFORMATIVE_ALPHA or (fp.type == "film" and m == fp.film_condition)]
    dropped = [m for m in views if m not in kept]
    if not kept or not dropped:
        return views
    print(f"fuse: fold {fold}: leaving out {', '.join(dropped)} (validation accuracy not above chance: "
          + ", ".join(f"{m} {tests[m][0]:.2f}, p = {tests[m][1]:.2f}" for m in dropped) + ")")
    return kept


def _restricted(fp: FusionParams, views: list[str]) -> FusionParams:
    """`fp` fusing only `views` (fixed ensemble weights follow their views)."""
    weights = tuple(w for m, w in zip(fp.modalities, fp.ensemble_weights) if m in views) \
        if len(fp.ensemble_weights) == len(fp.modalities) else fp.ensemble_weights
    return fp.model_copy(update={"modalities": tuple(views), "ensemble_weights": weights})


def run(params: Params) -> None:
    params.check_modalities(available_modalities(), NO_AUDIO)
    fp, tp = params.fusion, params.train
    for message in fp.warnings():
        warn(message)
    device = resolve_device(tp.device)
    trials = load_trials()
    features = {m: load_features(m) for m in fp.modalities}
    branch_probs = {m: np.load(io.branch_dir(m) / "probabilities.npy") for m in fp.modalities}
    n_folds, n_classes = len(trials.folds), len(trials.classes)
    shape = (n_folds, len(tp.seeds), len(trials.labels), n_classes)
    probs, trained = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    histories, diagnostics, decisions = {}, {}, []
    with io.atomic_path(io.FUSION_DIR) as out:
        out.mkdir()
        bar = tqdm(total=n_folds * len(tp.seeds), desc=f"fuse {fp.type}", unit="run")
        for fold in range(n_folds):
            val = fold_indices(trials.subjects, trials.folds[fold])["val"]
            y_val = trials.labels[val]
            tests = {m: informative_test(branch_probs[m][fold][:, val], y_val, n_classes) for m in fp.modalities}
            views = fold_views(fp, tests, fold)
            if len(views) == 1:  # one informative view: it stands in for the fusion on this fold
                trained[fold] = branch_probs[views[0]][fold]
                bar.update(len(tp.seeds))
            else:
                data, fold_fp = fold_data(features, trials, fold), _restricted(fp, views)
                for i, seed in enumerate(tp.seeds):
                    run_id = f"fold{fold}_seed{seed}"
                    branches = {m: load_branch(io.branch_dir(m) / f"{run_id}.pt") for m in views}
                    model, histories[run_id] = train_fusion(
                        branches, data, fold_fp, tp, n_classes, seed, device,
                        progress=lambda h: bar.set_postfix(val_acc=f"{h['val_acc']:.2f}"))
                    temperature = output_temperature(model, fold_fp)
                    trained[fold, i] = predict_proba(model, data.inputs, device, temperature)
                    diagnostics[run_id] = fusion_diagnostics(model, data, device, temperature, seed)
                    save_fusion(out / f"{run_id}.pt", model.cpu(), fold_fp, n_classes)
                    bar.update()
            val_acc = {"fusion": accuracy(trained[fold][:, val], y_val), **{m: tests[m][0] for m in fp.modalities}}
            ensemble = ensemble_of_branches({m: branch_probs[m][fold] for m in fp.modalities}, val_acc)
            val_acc["ensemble"] = accuracy(ensemble[:, val], y_val)
            choice = "fusion"
            if fp.select == "safe":
                choice = safe_choice(val_acc["fusion"], {m: val_acc[m] for m in fp.modalities}, val_acc["ensemble"],
                                     fp.select_margin)
            if choice != "fusion":
                print(f"fuse: fold {fold}: select safe reports {choice} (validation accuracy "
                      + ", ".join(f"{k} {v:.3f}" for k, v in val_acc.items()) + ")")
            probs[fold] = {"fusion": trained[fold], "ensemble": ensemble,
                           **{m: p[fold] for m, p in branch_probs.items()}}[choice]
            decisions.append({"fold": fold, "views": views, "selected": choice, "val_acc": val_acc,
                              "informative_p": {m: tests[m][1] for m in fp.modalities}})
        bar.close()
        np.save(out / "probabilities.npy", probs)
        np.save(out / "trained_probabilities.npy", trained)
        io.write_json(out / "selection.json", decisions)
        io.write_json(out / "history.json", histories)
        io.write_json(out / "diagnostics.json", diagnostics)
    log_curves(io.live_dir("fuse"), histories)
