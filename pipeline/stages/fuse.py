"""fuse: pretrained branches + a fusion head, fine-tuned (or combined without training) for
every fold and seed -> models/fusion/ (checkpoints, probabilities, history, diagnostics, the
per-fold selection). The runs are independent tasks on `compute.*`'s workers (pipeline.parallel).
trained_probabilities.npy holds the trained fused model's outputs, NaN on folds that trained none
(one view left: its branch is what such a fold reports, `trained: false` in selection.json).
With secondary tasks (data.tasks), their probabilities go to probabilities_tasks.npz (the
trained model's stay the primary task's); every decision below is taken on the primary task and
applies to all tasks.

Per fold, on validation only: each branch is tested against chance (`drop_uninformative` leaves
the views at chance out of that fold's fusion), and with `select: safe` the fold reports the
best on validation of the fused model, the best branch and the validation-weighted ensemble of
the branches it fused: with `select_alpha` a branch or the ensemble only where it is right on
significantly more validation trials than the fused model (McNemar's test; a lead of a few
trials of one or two subjects is not enough), with `select_alpha: null` the fused model only
where it beats both by more than `select_margin`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.dataset import (NO_AUDIO, available_modalities, load_all_probabilities, load_trials,
                              save_task_probabilities, task_sizes)
from pipeline.errors import warn
from pipeline.parallel import stream
from pipeline.params import FusionParams, Params
from pipeline.selection import (INFORMATIVE_ALPHA, accuracy, ensemble_of_branches, gate_fallback, informative_test,
                                safe_choice)
from pipeline.split import fold_indices, runs


def fold_views(fp: FusionParams, tests: dict[str, tuple[float, float]], fold: int) -> list[str]:
    """The views fused on this fold: all, or with `drop_uninformative` those whose validation
    accuracy beats chance (all of them if none does; film keeps its conditioning view beside an
    informative one)."""
    views = list(fp.modalities)
    informative = [m for m in views if tests[m][1] < INFORMATIVE_ALPHA]
    if not fp.drop_uninformative or not informative:
        return views
    kept = [m for m in views if m in informative or (fp.type == "film" and m == fp.film_condition)]
    dropped = [m for m in views if m not in kept]
    if not dropped:
        return views
    print(f"fuse: fold {fold}: leaving out {', '.join(dropped)} (validation accuracy not above chance: "
          + ", ".join(f"{m} {tests[m][0]:.2f}, p = {tests[m][1]:.2f}" for m in dropped) + ")")
    return kept


def _restricted(fp: FusionParams, views: list[str]) -> FusionParams:
    """`fp` fusing only `views` (fixed ensemble weights follow their views)."""
    weights = tuple(w for m, w in zip(fp.modalities, fp.ensemble_weights) if m in views) \
        if len(fp.ensemble_weights) == len(fp.modalities) else fp.ensemble_weights
    return fp.model_copy(update={"modalities": tuple(views), "ensemble_weights": weights})


def restarts_right(histories: list[list[dict]], kept_probs: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    """What the gate reads of the fused model: (runs, n_val) validation correctness of every
    restart of every seed's run (`restart_val_predicted` of each history's last record), or of
    the kept model where a run trained once (kept_probs: (n_seeds, n_val, n_classes)). The
    kept restart alone was chosen on these trials and looks better on them than on fresh ones
    (docs/methods/safe-selection.md)."""
    rows = []
    for history, probs in zip(histories, kept_probs):
        predicted = history[-1].get("restart_val_predicted", [probs.argmax(-1)])
        rows += [np.asarray(p) == y_val for p in predicted]
    return np.array(rows)


def run(params: Params) -> None:
    params.check_modalities(available_modalities(), NO_AUDIO)
    fp, tp = params.fusion, params.train
    for message in fp.warnings():
        warn(message)
    trials = load_trials()
    # every task's probabilities side by side; the decisions read the primary task's (:n_classes)
    branch_probs = {m: load_all_probabilities(io.branch_dir(m), trials) for m in fp.modalities}
    n_folds, n_classes = len(trials.folds), len(trials.classes)
    shape = (n_folds, len(tp.seeds), len(trials.labels), sum(task_sizes(trials)))
    probs, trained = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    vals, tests, views = [], [], []
    for fold in range(n_folds):  # on validation only: which views this fold fuses
        vals.append(fold_indices(trials.subjects, trials.folds[fold])["val"])
        tests.append({m: informative_test(branch_probs[m][fold][:, vals[fold], :n_classes], trials.labels[vals[fold]],
                                          n_classes) for m in fp.modalities})
        views.append(fold_views(fp, tests[fold], fold))
    grid = [(fold, i, seed) for fold, i, seed in runs(n_folds, tp.seeds) if len(views[fold]) > 1]
    root = str(Path.cwd())
    tasks = [(fold, seed, _restricted(fp, views[fold]), tp, trials, root, k)
             for k, (fold, _, seed) in enumerate(grid)]
    histories, diagnostics, decisions, costs = {}, {}, [], []
    with io.atomic_path(io.FUSION_DIR) as out:
        out.mkdir()
        results = stream("pipeline.fusion_training:fusion_run", tasks, params.compute, f"fuse {fp.type}", "run")
        for (fold, i, seed), (run_probs, history, run_diagnostics, checkpoint, cost) in zip(grid, results):
            run_id = f"fold{fold}_seed{seed}"
            trained[fold, i], histories[run_id], diagnostics[run_id] = run_probs, history, run_diagnostics
            costs.append(cost)
            (out / f"{run_id}.pt").write_bytes(checkpoint)
        for fold in range(n_folds):
            val, y_val = vals[fold], trials.labels[vals[fold]]
            was_trained = len(views[fold]) > 1
            val_acc = {"fusion": accuracy(trained[fold][:, val, :n_classes], y_val) if was_trained else None,
                       **{m: tests[fold][m][0] for m in fp.modalities}}
            ensemble = ensemble_of_branches({m: branch_probs[m][fold] for m in views[fold]}, val_acc)
            val_acc["ensemble"] = accuracy(ensemble[:, val, :n_classes], y_val)
            if not was_trained:  # one informative view: nothing to fuse, its branch stands in
                choice = views[fold][0]
                trained[fold] = np.nan
            elif fp.select == "safe":
                choice = safe_choice(val_acc["fusion"], {m: val_acc[m] for m in views[fold]}, val_acc["ensemble"],
                                     fp.select_margin)
            else:
                choice = "fusion"
            candidates = {"fusion": trained[fold], "ensemble": ensemble, **{m: p[fold] for m, p in branch_probs.items()}}
            fallback, fallback_p = choice, None
            if was_trained and choice != "fusion":  # a fallback: does validation show it right more often?
                fused_right = restarts_right([histories[f"fold{fold}_seed{s}"] for s in tp.seeds],
                                             trained[fold][:, val, :n_classes], y_val)
                choice, fallback_p = gate_fallback(choice, fused_right,
                                                   candidates[choice][:, val, :n_classes].argmax(-1) == y_val,
                                                   fp.select_alpha)
            if fallback_p is not None and choice == "fusion":
                print(f"fuse: fold {fold}: select safe keeps the fused model: validation does not show {fallback} "
                      f"better (McNemar p = {fallback_p:.2g} >= {fp.select_alpha}; validation accuracy fusion "
                      f"{val_acc['fusion']:.3f}, {fallback} {val_acc[fallback]:.3f})")
            if choice != "fusion":
                print(f"fuse: fold {fold}: " + ("select safe reports" if was_trained else "no fusion trained, reports")
                      + f" {choice} (validation accuracy "
                      + ", ".join(f"{k} {v:.3f}" for k, v in val_acc.items() if v is not None) + ")")
            probs[fold] = candidates[choice]
            decisions.append({"fold": fold, "views": views[fold], "trained": was_trained, "selected": choice,
                              "val_acc": val_acc, "fallback": None if fallback_p is None else fallback,
                              "fallback_p": fallback_p,
                              "informative_p": {m: tests[fold][m][1] for m in fp.modalities}})
        save_task_probabilities(out, probs, trials)
        np.save(out / "trained_probabilities.npy", trained[..., :n_classes])  # evaluate reads the primary task's
        io.write_json(out / "selection.json", decisions)
        io.write_json(out / "history.json", histories)
        io.write_json(out / "diagnostics.json", diagnostics)
    cost = cost_summary(fp.type, costs, params)
    io.write_json(io.COST, cost)
    print(cost_sentence(cost))
    io.log_curves(io.live_dir("fuse"), histories)


def cost_summary(fusion_type: str, costs: list[dict], params: Params) -> dict:
    """reports/cost.json: the runs' mean cost, and what it was measured on. Wall times, so they
    vary from run to run, between machines and with what else the machine does (measure with
    compute.n_jobs 1): a top-level metric of dvc.yaml, no stage's output, so dvc.lock stays the
    same on every machine."""
    if not costs:  # one informative view in every fold: nothing was trained
        return {"type": fusion_type, "runs": 0}

    def mean(key: str) -> float | None:  # None: the head is not trained
        return None if costs[0][key] is None else float(np.mean([c[key] for c in costs]))

    return {"type": fusion_type, "params": costs[0]["params"], "head_params": costs[0]["head_params"],
            "train_s_per_epoch": mean("train_s_per_epoch"), "infer_ms_per_trial": mean("infer_ms_per_trial"),
            "runs": len(costs), "device": costs[0]["device"],
            "torch_threads": params.compute.torch_threads, "workers": params.compute.n_jobs,
            "backend": params.compute.backend}


def cost_sentence(cost: dict) -> str:
    """What fuse prints of reports/cost.json."""
    if not cost.get("runs"):
        return "Cost: no fusion run trained (one informative view in every fold)."
    train = "not trained" if cost["train_s_per_epoch"] is None else f"{cost['train_s_per_epoch']:.2f} s per training epoch"
    return (f"Cost of `{cost['type']}` (`reports/cost.json`, mean of {cost['runs']} run(s) on {cost['device']}, "
            f"{cost['torch_threads']} torch thread(s), {cost['workers']} {cost['backend']} worker(s)): "
            f"{cost['params']:,} parameters ({cost['head_params']:,} in the fusion head), {train}, "
            f"{cost['infer_ms_per_trial']:.3f} ms per trial at inference.")
