"""pretrain <modality>: each branch trained alone for every fold and seed -> models/<modality>/
(checkpoints, probabilities of every trial, per-run history) and its dvclive curves. The runs
are independent tasks on `compute.*`'s workers (pipeline.parallel); results do not depend on
where they run."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.dataset import NO_AUDIO, load_trials, save_task_probabilities, skip_note, task_sizes
from pipeline.parallel import stream
from pipeline.params import Params
from pipeline.split import runs


def run(params: Params, modality: str) -> None:
    if skip_note("pretrain", modality):
        with io.atomic_path(io.branch_dir(modality)) as out:
            out.mkdir()
            io.write_json(out / "skipped.json", {"skipped": NO_AUDIO})
        io.log_curves(io.live_dir(f"pretrain_{modality}"), {})
        return
    p = params.branch(modality)
    trials = load_trials()
    grid = runs(len(trials.folds), p.seeds)
    root = str(Path.cwd())
    tasks = [(modality, fold, seed, p, trials, root, k) for k, (fold, _, seed) in enumerate(grid)]
    probs = np.zeros((len(trials.folds), len(p.seeds), len(trials.labels), sum(task_sizes(trials))), np.float32)
    histories = {}
    with io.atomic_path(io.branch_dir(modality)) as out:
        out.mkdir()
        results = stream("pipeline.pretraining:branch_run", tasks, params.compute, f"pretrain {modality}", "run")
        for (fold, i, seed), (run_probs, history, checkpoint) in zip(grid, results):
            probs[fold, i] = run_probs
            (out / f"fold{fold}_seed{seed}.pt").write_bytes(checkpoint)
            histories[f"fold{fold}_seed{seed}"] = history
        save_task_probabilities(out, probs, trials)
        io.write_json(out / "history.json", histories)
    io.log_curves(io.live_dir(f"pretrain_{modality}"), histories)
