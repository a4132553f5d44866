"""distill: for each view in `distill.students`, every fold and seed trains a single-view student
on the fold's fused model's soft labels -> models/distill/<view>/ (checkpoints, which `load_branch`
reads; probabilities of every trial; history) and models/distill/teachers.json (what labelled
each run's trials). First each (fold, seed)'s teacher targets, then the students: independent
tasks on `compute.*`'s workers (pipeline.parallel). With no students (`distill.enabled: false`,
the default, or `distill.students: []`) it writes an empty models/distill/ and reads no data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.dataset import NO_AUDIO, available_modalities, load_trials, save_task_probabilities, task_sizes
from pipeline.errors import PipelineError, warn
from pipeline.parallel import stream
from pipeline.params import Params
from pipeline.split import fold_indices, runs

def check_inner_folds(params: Params, trials) -> None:
    """Cross-fitting needs at least `distill.inner_folds` train subjects in every fold."""
    k = params.distill.inner_folds
    for fold, split in enumerate(trials.folds):
        n = len(set(trials.subjects[fold_indices(trials.subjects, split)["train"]]))
        if n < k:
            raise PipelineError(f"params: distill.inner_folds = {k} is not allowed; allowed: at most the train "
                                f"subjects of every fold (fold {fold} has {n}) with distill.teacher_targets "
                                "cross_fitted")


def run(params: Params) -> None:
    dp = params.distill
    if not dp.students:
        with io.atomic_path(io.DISTILL_DIR) as out:
            out.mkdir()
            io.write_json(out / "teachers.json", {})
        io.log_curves(io.live_dir("distill"), {})
        print("distill: no students (distill.enabled is false, or distill.students is [])")
        return
    params.check_students(available_modalities(), NO_AUDIO)
    trials = load_trials()
    if dp.teacher_targets == "cross_fitted":
        check_inner_folds(params, trials)
    seeds = params.train.seeds
    branch_params = {m: params.branch(m) for m in params.fusion.modalities}
    root = str(Path.cwd())
    pairs = runs(len(trials.folds), seeds)
    teacher_tasks = [(fold, seed, dp, branch_params, params.train, trials, root, k)
                     for k, (fold, _, seed) in enumerate(pairs)]
    targets = {(fold, seed): result for (fold, _, seed), result in
               zip(pairs, stream("pipeline.distillation:teacher_run", teacher_tasks, params.compute, "distill: teachers",
                                 "run"))}
    grid = [(view, fold, i, seed) for view in dp.students for fold, i, seed in pairs]
    tasks = [(view, fold, seed, dp, branch_params[view], trials, root, k,
              *targets[fold, seed][:2]) for k, (view, fold, _, seed) in enumerate(grid)]
    shape = (len(trials.folds), len(seeds), len(trials.labels), sum(task_sizes(trials)))
    probs = {view: np.zeros(shape, np.float32) for view in dp.students}
    histories: dict[str, dict] = {view: {} for view in dp.students}
    with io.atomic_path(io.DISTILL_DIR) as out:
        out.mkdir()
        for view in dp.students:
            (out / view).mkdir()
        for (fold, seed), (_, _, info) in targets.items():
            if info["teacher"] is None:
                warn(f"distill: fold {fold}, seed {seed}: the fold trained no fused model (one view left), so its "
                     "students learn from the labels alone")
        for (view, fold, i, seed), (run_probs, history, checkpoint) in zip(
                grid, stream("pipeline.distillation:student_run", tasks, params.compute, "distill: students",
                             "student")):
            probs[view][fold, i], histories[view][f"fold{fold}_seed{seed}"] = run_probs, history
            (out / view / f"fold{fold}_seed{seed}.pt").write_bytes(checkpoint)
        for view in dp.students:
            save_task_probabilities(out / view, probs[view], trials)
            io.write_json(out / view / "history.json", histories[view])
        io.write_json(out / "teachers.json", {f"fold{fold}_seed{seed}": info for (fold, seed), (_, _, info) in targets.items()})
    io.log_curves(io.live_dir("distill"), {f"{view}_{run}": h for view, by_run in histories.items()
                                       for run, h in by_run.items()})
