"""evaluate: test metrics of every branch and the fusion across folds and seeds ->
reports/metrics.json, summary.md, per-fold and per-subject tables, diagnostics and figures."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import io, plots
from pipeline.dataset import NO_AUDIO, available_modalities, load_task_probabilities, load_trials
from pipeline.errors import warn
from pipeline.evaluate import (accuracy_summary, audit_metrics, baseline_flags, baseline_metrics, model_metrics,
                               no_harm, nondeterministic_kernels, prediction_table, robustness_summary, score_model,
                               selection_metrics, score_task, student_metrics, summarize_test)
from pipeline.params import Params
from pipeline.report import (audit_message, below_baseline_message, below_best_message, gain_sentence,
                             reproducibility_note, summary_markdown)
from pipeline.stats import CONFIDENCE, MIN_SUBJECTS_INTERVAL, MIN_SUBJECTS_WILCOXON, N_RESAMPLES

STUDENT = "student_"  # a student's model name: student_<view>
INGEST_COUNTS = ("trials_kept", "trials_dropped", "problems", "subjects_kept", "subjects_dropped")
UNCERTAINTY = {
    "unit": "test subject: each metric is first averaged over the seeds (and folds) that tested the subject",
    "ci": f"{CONFIDENCE:.0%} interval over test subjects, on each side the wider of Student's t and the studentised "
          f"bootstrap ({N_RESAMPLES} resamples, seeded by split.seed), clipped to the score's range; null below "
          f"{MIN_SUBJECTS_INTERVAL} test subjects, where no interval covers (docs/statistics.md)",
    "std": "sample standard deviation (ddof=1) over test subjects; acc_seed_std: over seeds",
    "gain_p": f"Wilcoxon signed-rank over test subjects (gain_test wilcoxon); null below "
              f"{MIN_SUBJECTS_WILCOXON} test subjects, where no test over subjects can reach 0.05 (gain_test none)",
}


def secondary_task_probabilities(modalities: list[str], students: tuple[str, ...],
                                 trials) -> dict[str, dict[str, np.ndarray]]:
    """task -> model (each branch, "fusion", each "student_<view>") -> its probabilities of that
    secondary task."""
    out: dict[str, dict[str, np.ndarray]] = {task: {} for task in trials.tasks}
    folders = {**{m: io.branch_dir(m) for m in modalities}, "fusion": io.FUSION_DIR,
               **{STUDENT + v: io.student_dir(v) for v in students}}
    for name, folder in folders.items():
        for task, p in load_task_probabilities(folder).items():
            out[task][name] = p
    return out


def baseline_task_probabilities(trials) -> dict[str, dict[str, np.ndarray]]:
    """task -> baseline -> its probabilities of that secondary task (the baselines stage's
    "<baseline>:<task>" keys)."""
    out: dict[str, dict[str, np.ndarray]] = {task: {} for task in trials.tasks}
    for key, p in load_task_probabilities(io.BASELINES_DIR).items():
        name, task = key.split(":")
        out[task][name] = p
    return out


def run(params: Params) -> None:
    modalities = available_modalities()
    params.check_modalities(modalities, NO_AUDIO)
    trials = load_trials()
    seeds = params.train.seeds
    probs = {m: np.load(io.branch_dir(m) / "probabilities.npy") for m in modalities}
    probs |= {"fusion": np.load(io.FUSION_DIR / "probabilities.npy"),
              "fusion_trained": np.load(io.FUSION_DIR / "trained_probabilities.npy")}
    scored = {name: score_model(name, p, trials, seeds) for name, p in probs.items() if name != "fusion_trained"}
    students = params.distill.students
    student_probs = {STUDENT + v: np.load(io.student_dir(v) / "probabilities.npy") for v in students}
    scored_students = {name: score_model(name, p, trials, seeds) for name, p in student_probs.items()}
    baseline_probs = dict(np.load(io.BASELINES_DIR / "probabilities.npz"))
    baseline_views = {n: v["view"] for n, v in io.read_json(io.BASELINES_DIR / "selection.json").items()}
    # deterministic fits, one per fold: scored under the first seed
    scored_baselines = {n: score_model(n, p, trials, seeds[:1]) for n, p in baseline_probs.items()}
    for name, s in (scored | scored_students).items():
        for r in s["test"]:
            if r["collapsed"]:
                warn(f"{name} (fold {r['fold']}, seed {r['seed']}) collapsed: it predicts "
                     f"'{r['top_class']}' for {r['top_share']:.0%} of the test trials")

    fused = params.fusion.modalities
    decisions = io.read_json(io.FUSION_DIR / "selection.json")
    seed = params.split.seed
    metrics = model_metrics(scored, params.fusion.type, fused, trials.classes, seed)
    selected, informative = selection_metrics(decisions, fused)
    for m, flags in informative.items():
        metrics["branches"][m].update(flags)
    metrics["baselines"] = baseline_metrics(scored_baselines, baseline_views, trials.classes, seed)
    permuted_probs = dict(np.load(io.BASELINES_DIR / "permuted.npz"))
    metrics["audit"] = audit_metrics({n: score_model(n, p, trials, seeds[:1]) for n, p in permuted_probs.items()},
                                     trials, seed, params.audit.permute_labels)
    if message := audit_message(metrics["audit"]):
        warn(message)
    models = {**metrics["branches"], "fusion": metrics["fusion"]}
    for m, flags in baseline_flags(models, metrics["baselines"]).items():
        models[m].update(flags)
        message = below_baseline_message(m, models[m])
        if message:
            warn(message)
    trained_folds = [d["fold"] for d in decisions if d["trained"]]
    trained = score_model("fusion_trained", probs["fusion_trained"], trials, seeds, trained_folds)
    runs = io.read_json(io.FUSION_DIR / "diagnostics.json")
    robust = robustness_summary(runs, fused)
    metrics["fusion"] |= {"selected": selected, "trained": {
        "test": accuracy_summary(trained, trials.classes, seed) if trained_folds else None,
        "folds": len(trained_folds),
        "no_harm": no_harm(trained, scored[metrics["fusion"]["best_branch_on_val"]]) if trained_folds else None,
        **({"stand_in": {str(d["fold"]): d["selected"] for d in decisions if not d["trained"]}}
           if len(trained_folds) < len(decisions) else {})}}
    if students:
        metrics["students"] = student_metrics({v: scored_students[STUDENT + v] for v in students}, scored,
                                              trained if trained_folds else None, trials.classes, seed)
    if robust:
        metrics["fusion"]["robust"] = {k: robust[k] for k in ("runs", "clean", "missing")}
    message = below_best_message(metrics["fusion"], params.fusion.select)
    if message:
        warn(message)
    # secondary tasks: tasks.<task>.test of every branch, the fusion and every baseline
    task_probs = secondary_task_probabilities(modalities, students, trials)
    baseline_task_probs = baseline_task_probabilities(trials)
    task_scored = {task: score_task(task_probs[task], trials, task, seeds) for task in trials.tasks}
    for task in trials.tasks:
        for name, s in [*task_scored[task].items(), *score_task(baseline_task_probs[task], trials, task, seeds[:1]).items()]:
            entry = (metrics["fusion"] if name == "fusion" else metrics["students"][name[len(STUDENT):]]
                     if name.startswith(STUDENT) else metrics["branches"].get(name) or metrics["baselines"][name])
            entry.setdefault("tasks", {})[task] = {"test": summarize_test(s, trials.tasks[task].classes, seed)}
    for row in scored["fusion"]["test"] + scored["fusion"]["val"]:
        row["selected"] = decisions[row["fold"]]["selected"]
    histories = {m: io.read_json(io.branch_dir(m) / "history.json") for m in modalities}
    histories["fusion"] = io.read_json(io.FUSION_DIR / "history.json")
    histories |= {STUDENT + v: io.read_json(io.student_dir(v) / "history.json") for v in students}
    kernels = nondeterministic_kernels(histories)
    metrics = {
        **metrics,
        "bit_reproducible": not kernels,
        **({"nondeterministic_kernels": kernels} if kernels else {}),
        "n_subjects_test": len({s for f in trials.folds for s in f["test"]}),
        "n_seeds": len(seeds),
        "n_folds": len(trials.folds),
        "uncertainty": UNCERTAINTY,
        "data": {k: (len(v) if isinstance(v, list) else v) for k, v in io.read_json(io.INGEST_REPORT).items()
                 if k in INGEST_COUNTS},
    }

    per_run = {k: {m: [r[k][m] for r in runs.values() if m in r[k]] for m in fused if any(m in r[k] for r in runs.values())}
               for k in ("ablation_drop", "fusion_weights")}
    diagnostics = {
        "inputs": {m: io.read_json(io.normalizer_path(m).with_suffix(".json")) for m in modalities},
        "fusion_runs": runs,
        **per_run,
    }
    if not_reproducible := reproducibility_note(metrics):
        warn(not_reproducible)

    io.write_json(io.REPORTS / "diagnostics.json", diagnostics)
    io.write_json(io.REPORTS / "robustness.json", robust)
    plots.plot_robustness(io.FIGURES / "robustness.png", robust)
    all_scored = scored | scored_students | scored_baselines
    with io.atomic_path(io.PREDICTIONS) as tmp:
        pd.concat([prediction_table(name, p, trials, seeds, trained_folds if name == "fusion_trained" else None)
                   for name, p in (probs | student_probs).items()]
                  + [prediction_table(n, p, trials, seeds[:1]) for n, p in baseline_probs.items()]
                  + [prediction_table(f"{name}:{task}", p, trials.for_task(task), seeds)
                     for task, by_model in task_probs.items() for name, p in by_model.items()]
                  + [prediction_table(f"{name}:{task}", p, trials.for_task(task), seeds[:1])
                     for task, by_model in baseline_task_probs.items() for name, p in by_model.items()]
                  ).to_csv(tmp, index=False)
    with io.atomic_path(io.REPORTS / "per_fold.csv") as tmp:
        pd.DataFrame([r for s in all_scored.values() for r in s["test"] + s["val"]]).to_csv(tmp, index=False)
    with io.atomic_path(io.REPORTS / "per_subject.csv") as tmp:
        pd.DataFrame([r for s in all_scored.values() for r in s["subjects"]]).to_csv(tmp, index=False)
    with io.atomic_path(io.REPORTS / "confusion") as tmp:  # one file a model, for `dvc plots`
        tmp.mkdir()
        for name, s in [*scored.items(), *scored_students.items(),
                        *((f"{m}_{task}", s) for task, by in task_scored.items() for m, s in by.items())]:
            pd.DataFrame(s["pairs"], columns=["actual", "predicted"]).to_csv(tmp / f"{name}.csv", index=False)
    plots.plot_confusions(io.FIGURES / "confusion_matrices.png",
                          {name: s["confusion"] for name, s in scored.items()}, trials.classes)
    plots.plot_curves(io.FIGURES / "training_curves.png", histories)
    plots.plot_contributions(io.FIGURES / "modality_contributions.png", per_run["ablation_drop"],
                             per_run["fusion_weights"])
    plots.plot_fusion_dynamics(io.FIGURES / "fusion_dynamics.png", histories["fusion"], list(params.fusion.modalities))
    with io.atomic_path(io.REPORTS / "summary.md") as tmp:
        tmp.write_text(summary_markdown(metrics, params, per_run, io.read_json(io.ARTIFACTS_REPORT)))
    io.write_json(io.REPORTS / "metrics.json", metrics)
    fusion = metrics["fusion"]
    print(f"evaluate: {metrics['n_subjects_test']} test subjects; fusion {params.fusion.type} test acc "
          f"{fusion['test']['acc']:.3f}; " + ", ".join(f"{m} {b['test']['acc']:.3f}" for m, b in metrics["branches"].items())
          + f"; {gain_sentence(fusion)}")
