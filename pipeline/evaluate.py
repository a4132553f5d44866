"""Evaluation: scikit-learn metrics of every branch and the fusion on each fold's test
subjects, aggregated over folds and seeds, with collapse detection, per-fold and per-subject
tables, fusion diagnostics, figures and a Markdown summary for review."""
from __future__ import annotations

import numpy as np
import pandas as pd
import yaml
from scipy.stats import entropy
from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             recall_score, roc_auc_score)

from pipeline.dataset import Trials
from pipeline.modalities import MODALITIES
from pipeline.params import Params
from pipeline.selection import INFORMATIVE_ALPHA
from pipeline.split import fold_indices
from pipeline.stats import (MIN_SUBJECTS_WILCOXON, bootstrap_ci, finite, p_text, paired_difference, sample_std,
                            signed_interval, verdict)

METRICS = ("acc", "f1_macro", "kappa", "auc")
# A model is flagged as collapsed when one class takes at least this share of its test predictions.
COLLAPSE_SHARE = 0.8


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """acc, macro F1, Cohen's kappa and one-vs-rest macro AUC of probabilities (n, n_classes).

    Macro F1 and AUC average over the classes present in `y_true` (a class a fold or subject
    never shows would otherwise count as F1 0); AUC renormalises the probabilities over them and
    is NaN with fewer than two. Kappa is NaN when it is undefined (one class, always predicted).
    """
    y_pred = proba.argmax(axis=1)
    present = np.unique(y_true)
    if len(present) >= 2:
        mass = proba[:, present].sum(axis=1, keepdims=True)
        sub = np.where(mass > 0, proba[:, present] / np.where(mass > 0, mass, 1), 1 / len(present))
        auc = float(roc_auc_score(y_true, sub if len(present) > 2 else sub[:, 1],
                                  multi_class="ovr", labels=present if len(present) > 2 else None))
    else:
        auc = float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = float(cohen_kappa_score(y_true, y_pred, labels=np.arange(proba.shape[1])))
    return {"acc": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
            "kappa": kappa, "auc": auc}


def prediction_entropy(y_pred: np.ndarray, n_classes: int) -> float:
    """Entropy of the predicted-class histogram divided by log(n_classes): 1 when every class is
    predicted equally often, 0 when only one class is ever predicted."""
    counts = np.bincount(y_pred, minlength=n_classes)
    return float(entropy(counts) / np.log(n_classes))


def collapse_share(y_pred: np.ndarray, n_classes: int) -> tuple[int, float]:
    """The most predicted class and its share of the predictions."""
    counts = np.bincount(y_pred, minlength=n_classes)
    return int(counts.argmax()), float(counts.max() / max(counts.sum(), 1))


def score_model(name: str, probs: np.ndarray, trials: Trials, seeds, folds=None) -> dict:
    """Everything evaluate reports about one model. probs: (n_folds, n_seeds, n_trials, n_classes);
    `folds`: the folds to score (default all; the trained fusion has none on some).

    Returns test and val runs (one row per fold and seed), per-subject test rows (every metric
    on each test subject's trials, per fold and seed), the summed test confusion matrix, the
    (actual, predicted) test pairs.
    """
    n_classes = probs.shape[-1]
    out = {"test": [], "val": [], "subjects": [], "pairs": [],
           "confusion": np.zeros((n_classes, n_classes), dtype=np.int64)}
    for fold in range(len(probs)) if folds is None else folds:
        parts = fold_indices(trials.subjects, trials.folds[fold])
        for seed, p in zip(seeds, probs[fold]):
            for part in ("test", "val"):
                idx = parts[part][trials.labels[parts[part]] >= 0]  # a secondary task's labelled trials
                if len(idx) == 0:  # none of them in this part: nothing to score
                    continue
                y_true, y_pred = trials.labels[idx], p[idx].argmax(1)
                row = {"model": name, "fold": fold, "seed": seed, "part": part,
                       **classification_metrics(y_true, p[idx])}
                if part == "test":
                    top, share = collapse_share(y_pred, n_classes)
                    row |= {"pred_entropy": prediction_entropy(y_pred, n_classes),
                            "collapsed": share >= COLLAPSE_SHARE, "top_class": trials.classes[top],
                            "top_share": share}
                    present = np.isin(np.arange(n_classes), y_true)
                    recall = recall_score(y_true, y_pred, labels=np.arange(n_classes), average=None, zero_division=0)
                    row |= {f"recall_{c}": float(r) if here else float("nan")
                            for c, r, here in zip(trials.classes, recall, present)}
                    out["confusion"] += confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
                    out["pairs"] += [(trials.classes[a], trials.classes[b]) for a, b in zip(y_true, y_pred)]
                    for subject in np.unique(trials.subjects[idx]):
                        mine = trials.subjects[idx] == subject
                        out["subjects"].append({"model": name, "fold": fold, "seed": seed, "subject": subject,
                                                "n_trials": int(mine.sum()),
                                                **classification_metrics(y_true[mine], p[idx][mine])})
                out[part].append(row)
    return out


def subject_scores(scored: dict, metric: str = "acc") -> dict[str, float | None]:
    """Each test subject's `metric`, mean over the seeds (and folds) that tested it (None where
    the metric is undefined for the subject, e.g. AUC on trials of one class)."""
    by_subject: dict[str, list[float]] = {}
    for row in scored["subjects"]:
        by_subject.setdefault(str(row["subject"]), []).append(row[metric])
    return {s: _mean_or_none(v) for s, v in by_subject.items()}


def _mean_or_none(values) -> float | None:
    """Mean of the finite values; None when there are none (a class no test part showed)."""
    values = finite(values)
    return float(values.mean()) if len(values) else None


def summarize_test(scored: dict, classes: list[str], seed: int) -> dict:
    """Test metrics of one model at the subject level: per metric the mean over test subjects
    (each the mean over seeds), `_ci` its 95% bootstrap interval over subjects (seeded by `seed`),
    `_std` the sample std over subjects; `acc_seed_std` the std over seeds of the subject-mean
    accuracy (how much the seed alone moves it)."""
    summary: dict = {}
    for key in METRICS:
        values = [v for v in subject_scores(scored, key).values() if v is not None]
        summary[key] = _mean_or_none(values)
        summary[f"{key}_ci"] = bootstrap_ci(values, seed)
        summary[f"{key}_std"] = sample_std(values)
    by_seed: dict = {}
    for row in scored["subjects"]:
        by_seed.setdefault(row["seed"], {}).setdefault(str(row["subject"]), []).append(row["acc"])
    summary["acc_seed_std"] = sample_std([np.mean([np.mean(v) for v in subjects.values()])
                                          for subjects in by_seed.values()])
    runs = scored["test"]
    summary["pred_entropy"] = float(np.mean([r["pred_entropy"] for r in runs]))
    summary["collapsed"] = bool(any(r["collapsed"] for r in runs))
    summary["recall"] = {c: _mean_or_none([r[f"recall_{c}"] for r in runs]) for c in classes}
    return summary


def prediction_table(name: str, probs: np.ndarray, trials: Trials, seeds, folds=None) -> pd.DataFrame:
    """One row per fold, seed and test trial of one model: its subject, trial (manifest row),
    true and predicted label and class probabilities. probs: (n_folds, n_seeds, n_trials, n_classes);
    `folds` as for `score_model`. A secondary task's model is named `<model>:<task>` (with
    `trials.for_task`): its labelled trials only, and probability columns p_<task>_<class>."""
    frames = []
    prefix = name.partition(":")[2] + "_" if ":" in name else ""  # a secondary task's own probability columns
    for fold in range(len(probs)) if folds is None else folds:
        idx = fold_indices(trials.subjects, trials.folds[fold])["test"]
        idx = idx[trials.labels[idx] >= 0]
        for seed, p in zip(seeds, probs[fold]):
            frame = pd.DataFrame({"model": name, "fold": fold, "seed": seed, "subject": trials.subjects[idx],
                                  "trial": idx, "label": np.asarray(trials.classes)[trials.labels[idx]],
                                  "predicted": np.asarray(trials.classes)[p[idx].argmax(1)]})
            frames.append(frame.join(pd.DataFrame(p[idx], columns=[f"p_{prefix}{c}" for c in trials.classes])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _fmt(test: dict, key: str) -> str:
    """`0.853 [0.74, 0.95]`: the subject mean and its 95% interval (n/a where undefined)."""
    if test[key] is None:
        return "n/a"
    ci = test[f"{key}_ci"]
    return f"{test[key]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def gain_sentence(fusion: dict) -> str:
    """The fused model against its best branch in words, with interval, p-value and verdict:
    `fusion beats mel by +0.040 [-0.02, +0.10], p = 0.31 (Wilcoxon signed-rank over 12 test
    subjects): not significant`."""
    gain, best, ci, p = (fusion[k] for k in ("gain_over_best_branch", "best_branch_on_val", "gain_ci", "gain_p"))
    verb = "beats" if gain > 0 else "trails" if gain < 0 else "ties with"
    n = fusion["gain_n_subjects"]
    interval = signed_interval(ci) or " (no interval: one test subject)"
    if p is None:
        return f"fusion {verb} {best} by {gain:+.3f}{interval}, {p_text(p, n)}"
    return f"fusion {verb} {best} by {gain:+.3f}{interval}, p = {p:.2g} (Wilcoxon signed-rank over {n} test subjects): {verdict(p)}"


def nondeterministic_kernels(histories: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Every kernel any training epoch of any model ran without a deterministic implementation
    (`training.fit` records them; none on CPU). histories: model -> run -> epochs."""
    return sorted({op for runs in histories.values() for epochs in runs.values() for epoch in epochs
                   for op in epoch.get("nondeterministic", [])})


def reproducibility_note(metrics: dict) -> str | None:
    """The warning when a run cannot be reproduced bit for bit, else None."""
    if metrics["bit_reproducible"]:
        return None
    return ("this run is not bit-reproducible: training ran kernels without a deterministic implementation "
            f"({', '.join(metrics['nondeterministic_kernels'])}; CUDA), so the same params and seed can give "
            "other last bits and other metrics; run on CPU (train.device: cpu) for bit-identical results")


def trained_sentence(trained: dict, n_folds: int) -> str:
    """What summary.md says of the trained fused model alone, and of the folds that trained none."""
    stand_in = trained.get("stand_in", {})
    others = ("; on fold(s) " + ", ".join(f"{fold} {m}" for fold, m in stand_in.items())
              + " one informative view was left, nothing was trained and that branch stood in") if stand_in else ""
    if trained["test"] is None:
        return f"No fused model was trained on any of the {n_folds} fold(s){others}."
    return (f"The trained fused model alone, on the {trained['folds']} of {n_folds} fold(s) that trained one: "
            f"{_fmt(trained['test'], 'acc')} test accuracy{others}.")


def cleaning_sentence(artifacts: dict) -> str:
    """One line of summary.md on EEG artifact cleaning (reports/artifacts.json)."""
    if not artifacts["ica"] and not artifacts["autoreject"]:
        return ("EEG artifact cleaning: off (`eeg.artifacts.ica` and `eeg.artifacts.autoreject` false): blinks and "
                "muscle activity stay in the EEG views.")
    done = []
    if artifacts["ica"]:
        removed = ", ".join(f"{n} {label}" for label, n in artifacts["removed_by_label"].items()) or "none"
        done.append(f"ICA + ICLabel on each of {len(artifacts['recordings'])} recording(s) removed {removed} "
                    "component(s) (`reports/figures/removed_components.png`)")
    if artifacts["autoreject"]:
        n = artifacts["trials_by_status"]
        done.append(f"autoreject repaired {n['repaired']} and dropped {n['dropped']} of {sum(n.values())} trial(s) "
                    "(dropped trials leave every view)")
    return f"EEG artifact cleaning: {'; '.join(done)} (`reports/artifacts.json`)."


def results_table(metrics: dict, tasks: list[str], rows: list[tuple[str, dict]] | None = None) -> list[str]:
    """The Markdown lines of summary.md's table: per model (default: every branch, the fusion,
    every student and baseline; or `rows`, (name, metrics entry)) its test metrics with their
    intervals, and a column per secondary task of `tasks`."""
    fusion = metrics["fusion"]
    if rows is None:
        rows = [(m, b) for m, b in metrics["branches"].items()] + [(f"**fusion ({fusion['type']})**", fusion)]
        rows += [(f"student: {view}", s) for view, s in metrics.get("students", {}).items()]
        rows += [(f"_baseline: {n}_", b) for n, b in metrics.get("baselines", {}).items()]
    lines = ["| model | acc | macro F1 | kappa | AUC | acc std over seeds | pred. entropy | collapsed "
             "| best baseline of its rival views (on val) |" + "".join(f" {t}: acc |" for t in tasks),
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(tasks)]
    for name, model in rows:
        test = model["test"]
        seed_std = "n/a" if test["acc_seed_std"] is None else f"{test['acc_seed_std']:.3f}"
        baseline = (f"{model['best_baseline']} {model['best_baseline_acc']:.3f}"
                    + (" (**below it**)" if model["below_baseline"] else "")) if "best_baseline" in model else ""
        lines.append(f"| {name} | {_fmt(test, 'acc')} | {_fmt(test, 'f1_macro')} | {_fmt(test, 'kappa')} | "
                     f"{_fmt(test, 'auc')} | {seed_std} | {test['pred_entropy']:.2f} | "
                     f"{'**yes**' if test['collapsed'] else 'no'} | {baseline} |"
                     + "".join(f" {_fmt(model['tasks'][t]['test'], 'acc') if t in model.get('tasks', {}) else ''} |"
                               for t in tasks))
    return lines


def gain_line(fusion: dict) -> str:
    """summary.md's line on the fused model against its best branch on validation."""
    return (f"Against the best branch on validation (`{fusion['best_branch_on_val']}`), paired over test "
            f"subjects: **{gain_sentence(fusion)}**.")


def summary_markdown(metrics: dict, params: Params, diagnostics: dict, artifacts: dict) -> str:
    """reports/summary.md: the table a reviewer reads, with the params that produced it (and
    what artifact cleaning removed: reports/artifacts.json)."""
    fusion = metrics["fusion"]
    tasks = list(params.data.secondary_tasks)  # a column each: that task's test accuracy
    warning = below_best_message(fusion, params.fusion.select)
    not_reproducible = reproducibility_note(metrics)
    lines = [f"# Results: fusion `{fusion['type']}` of {', '.join(params.fusion.modalities)}", "",
             *([f"> **Warning:** {warning}.", ""] if warning else []),
             *([f"> **Warning:** {not_reproducible}.", ""] if not_reproducible else []),
             f"Protocol: `{params.split.scheme}`, {metrics['n_folds']} fold(s) x {metrics['n_seeds']} seed(s), "
             f"subject-disjoint, **{metrics['n_subjects_test']} test subjects**. Each test metric is the mean over "
             "test subjects of the subject's score (itself the mean over seeds), with its 95% bootstrap interval "
             "over subjects in brackets; a subject is one observation, its trials are not independent."
             + (f" **With {metrics['n_subjects_test']} test subjects these intervals say little** (a bootstrap "
                "over so few subjects cannot see how much subjects vary); `split.scheme: loso` tests every subject."
                if metrics["n_subjects_test"] < MIN_SUBJECTS_WILCOXON else ""), "",
             cleaning_sentence(artifacts), "",
             *results_table(metrics, tasks), "", gain_line(fusion), ""]
    selected, trained = fusion.get("selected", {}), fusion["trained"]
    if params.fusion.select == "safe":
        alpha, margin = params.fusion.select_alpha, params.fusion.select_margin
        rule = (f"the best branch or the validation-weighted ensemble of the fused branches where it is right on "
                f"significantly more validation trials than the fused model (McNemar's test at {alpha}), the "
                "fused model otherwise" if alpha is not None else
                f"the best on validation of the fused model, the best branch and the validation-weighted ensemble "
                f"of the fused branches, the fused model only if it beats both by more than {margin}")
        lines += [f"Selection (`fusion.select: safe`): per fold, {rule}; folds reporting each: "
                  + ", ".join(f"{k} {v}" for k, v in selected.items()) + ".", ""]
    lines += [trained_sentence(trained, metrics["n_folds"]), ""]
    students = metrics.get("students", {})
    if students:
        lines += [f"Distillation (`distill`, targets {params.distill.teacher_targets}, alpha {params.distill.alpha}, "
                  f"T {params.distill.temperature}): single-view students of the trained fused model, each against "
                  "its view's branch paired over test subjects (Wilcoxon signed-rank):",
                  *(distillation_sentence(view, student) for view, student in students.items()), ""]
    uninformative = [m for m, b in metrics["branches"].items() if not b.get("informative", True)]
    if uninformative:
        lines += [f"Views at chance on validation (binomial test, p >= {INFORMATIVE_ALPHA} in most folds): "
                  f"{', '.join(uninformative)}"
                  + (" (left out of the fusion where so: `fusion.drop_uninformative`)." if params.fusion.drop_uninformative
                     else "; `fusion.drop_uninformative: true` leaves them out of the fusion."), ""]
    robust = fusion.get("robust", {})
    if robust:
        lines += [f"Robustness of the trained fused model (test accuracy, mean over the {robust['runs']} run(s) that "
                  "fused every view; `reports/robustness.json`): clean "
                  f"{robust['clean']:.3f}; with a modality missing: "
                  + ", ".join(f"{m} {a:.3f}" for m, a in robust["missing"].items()) + ".", ""]
    drops = diagnostics.get("ablation_drop", {})
    if drops:
        lines += ["Modality contribution (test accuracy drop when the modality's input is replaced by its train "
                  "mean): " + ", ".join(f"{m} {np.mean(v):+.3f}" for m, v in drops.items()) + "."]
    weights = diagnostics.get("fusion_weights", {})
    if weights:
        lines += ["", "Learned fusion weights (mean over test trials): "
                  + ", ".join(f"{m} {np.mean(v):.2f}" for m, v in weights.items()) + "."]
    lines += ["", "What the fusion cost (parameters, seconds per training epoch, ms per trial): `reports/cost.json` "
                  "(`dvc exp show`); wall times differ between machines, so it stays out of dvc.lock."]
    lines += ["", "Figures: `reports/figures/`. Per-trial predictions: `reports/predictions.csv`; per-fold and "
                  "per-subject rows: `reports/per_fold.csv`, "
                  "`reports/per_subject.csv`.", "", "<details><summary>params</summary>", "", "```yaml",
              yaml.safe_dump({k: getattr(params, k).model_dump(mode="json") for k in ("split", "train", "fusion")},
                             sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def mean_val_acc(scored: dict) -> float:
    """Validation accuracy of a scored model, mean over folds and seeds."""
    return float(np.mean([r["acc"] for r in scored["val"]]))


def model_metrics(scored: dict[str, dict], fusion_type: str, fused: tuple[str, ...], classes: list[str],
                  seed: int) -> dict:
    """The `fusion` and `branches` parts of metrics.json from scored models (`score_model`,
    keyed by modality and 'fusion'). The fusion's gain is measured against the fused branch
    that is best on validation, never on test, paired over test subjects (intervals seeded by
    `seed`)."""
    branches = {m: {"test": summarize_test(s, classes, seed)} for m, s in scored.items() if m != "fusion"}
    best = max(fused, key=lambda m: mean_val_acc(scored[m]))
    gain = paired_gain(scored[best], scored["fusion"], seed)
    return {"fusion": {"type": fusion_type, "test": summarize_test(scored["fusion"], classes, seed),
                       "gain_over_best_branch": gain["delta"], "gain_ci": gain["ci"], "gain_p": gain["p"],
                       "gain_test": gain["test"], "gain_n_subjects": gain["n_subjects"],
                       "best_branch_on_val": best, "below_best_branch": bool(gain["delta"] < 0)},
            "branches": branches}


def student_metrics(students: dict[str, dict], scored: dict[str, dict], teacher: dict | None,
                    classes: list[str], seed: int) -> dict:
    """The `students` part of metrics.json: per student view (`students`: view -> its scored
    student) its test summary, its gain over that view's branch paired over test subjects
    (`gain_over_branch`, `gain_ci`, `gain_p`, as for the fusion's gain) and `gap_to_teacher`, the
    student minus the trained fused model (its teacher), paired over the subjects both tested."""
    out = {}
    for view, s in students.items():
        gain = paired_gain(scored[view], s, seed)
        out[view] = {"test": summarize_test(s, classes, seed), "gain_over_branch": gain["delta"],
                     "gain_ci": gain["ci"], "gain_p": gain["p"], "gain_test": gain["test"],
                     "gain_n_subjects": gain["n_subjects"],
                     "gap_to_teacher": None if teacher is None else paired_gain(teacher, s, seed)["delta"]}
    return out


def distillation_sentence(view: str, student: dict) -> str:
    """What summary.md says of one student: whether distillation helped that view, in words."""
    gain, ci, p, n = (student[k] for k in ("gain_over_branch", "gain_ci", "gain_p", "gain_n_subjects"))
    if p is not None and p < 0.05:
        said = "**helped**" if gain > 0 else "**hurt**"
    else:
        said = "did not measurably help" if p is not None else "cannot be judged here"
    teacher = "" if student["gap_to_teacher"] is None else f"; {student['gap_to_teacher']:+.3f} against its teacher"
    return (f"- `{view}`: distillation {said}: student {_fmt(student['test'], 'acc')} against the {view} branch, "
            f"{gain:+.3f}{signed_interval(ci)}, {p_text(p, n)}{teacher}.")


def score_task(probs: dict[str, np.ndarray], trials: Trials, task: str, seeds) -> dict[str, dict]:
    """`score_model` of each model (name -> its probabilities of secondary task `task`) on that
    task's labelled trials, named `<model>:<task>`."""
    view = trials.for_task(task)
    return {name: score_model(f"{name}:{task}", p, view, seeds) for name, p in probs.items()}


def paired_gain(a: dict, b: dict, seed: int) -> dict:
    """Scored model `b` against scored model `a` on the same test subjects: `stats.paired_difference`
    of their per-subject accuracies."""
    return paired_difference(subject_scores(a), subject_scores(b), seed)


def baseline_metrics(scored: dict[str, dict], views: dict[str, str | None], classes: list[str], seed: int) -> dict:
    """The `baselines` part of metrics.json: per baseline its view, test summary and mean
    validation accuracy (what picks a view's best baseline)."""
    return {name: {"view": views[name], "val_acc": mean_val_acc(s), "test": summarize_test(s, classes, seed)}
            for name, s in scored.items()}


def rival_views(model: str) -> set[str | None]:
    """The views whose baselines `model` must beat: a branch its own view's, and for a speech view
    every speech view's (a log-mel branch below openSMILE's features is a weak speech model); the
    fusion the baselines of several views (view None: early fusion)."""
    if model == "fusion":
        return {None}
    speech = {m for m, spec in MODALITIES.items() if spec.needs_audio}
    return speech if model in speech else {model}


def baseline_flags(models: dict, baselines: dict) -> dict[str, dict]:
    """Per model (the branches, and "fusion") with a baseline among its rival views (rival_views):
    the best of those baselines (chosen on validation), its test accuracy and `below_baseline`
    when the model scores below it on test."""
    flags = {}
    for m, branch in models.items():
        mine = {n: b for n, b in baselines.items() if b["view"] in rival_views(m)}
        if mine:
            best = max(mine, key=lambda n: mine[n]["val_acc"])
            acc = mine[best]["test"]["acc"]
            flags[m] = {"best_baseline": best, "best_baseline_acc": acc,
                        "below_baseline": bool(branch["test"]["acc"] < acc)}
    return flags


def below_baseline_message(model: str, flagged: dict) -> str | None:
    if not flagged.get("below_baseline"):
        return None
    scores = (f"test accuracy {flagged['test']['acc']:.3f} against {flagged['best_baseline']} "
              f"{flagged['best_baseline_acc']:.3f}")
    if model == "fusion":
        return (f"fusion ({flagged['type']}) is below the classical baseline on every view's features side by side: "
                f"{scores}; the fused network does not beat logistic regression on them")
    return (f"branch {model} is below the best classical baseline of its rival views "
            f"({', '.join(sorted(rival_views(model)))}): {scores}; a fusion gain over it partly measures a weak branch")


def below_best_message(fusion: dict, select: str) -> str | None:
    """The warning when the fused model loses to the branch chosen on validation, else None;
    it suggests safe selection only where `fusion.select` is not already safe."""
    if not fusion["below_best_branch"]:
        return None
    best = fusion["best_branch_on_val"]
    return (f"fusion ({fusion['type']}) is below its best branch: test accuracy {fusion['test']['acc']:.3f} against "
            f"{best} (best on validation) {fusion['test']['acc'] - fusion['gain_over_best_branch']:.3f}, "
            f"gap {fusion['gain_over_best_branch']:+.3f}"
            + signed_interval(fusion["gain_ci"])
            + f", {p_text(fusion['gain_p'], fusion['gain_n_subjects'])} ({verdict(fusion['gain_p'])})"
            + ("; consider fusion.select: safe" if select != "safe" else
               " (safe selection's choice on validation did not hold on test)"))


def selection_metrics(decisions: list[dict], fused: tuple[str, ...]) -> tuple[dict, dict]:
    """From the fuse stage's per-fold decisions: how often each source was reported for the
    fusion (`fusion.selected`), and per branch whether it beat chance on validation
    (`informative`: in at least half of the folds, p < INFORMATIVE_ALPHA; `informative_folds`)."""
    selected = {k: sum(d["selected"] == k for d in decisions) for k in ("fusion", *fused, "ensemble")}
    informative = {}
    for m in fused:
        k = sum(d["informative_p"][m] < INFORMATIVE_ALPHA for d in decisions)
        informative[m] = {"informative": bool(2 * k >= len(decisions)), "informative_folds": k}
    return {k: v for k, v in selected.items() if v}, informative


def robustness_summary(runs: dict[str, dict], fused: tuple[str, ...]) -> dict:
    """Mean over the trained fusion runs that fused every view in `fused` of the test accuracy
    clean, with each modality missing, and with noise of each std on each modality: every figure
    over the same runs (runs of folds that left a view out are not among them; `runs` counts)."""
    robust = [r["robustness"] for r in runs.values() if "robustness" in r and set(r["robustness"]["missing"]) == set(fused)]
    if not robust:
        return {}
    stds = dict.fromkeys(s for r in robust for by_std in r["noise"].values() for s in by_std)
    return {"model": "the trained fused model", "runs": len(robust),
            "clean": float(np.mean([r["clean"] for r in robust])),
            "missing": {m: float(np.mean([r["missing"][m] for r in robust])) for m in fused},
            "noise": {m: {s: float(np.mean([r["noise"][m][s] for r in robust])) for s in stds} for m in fused}}
