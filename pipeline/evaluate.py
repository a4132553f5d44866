"""Evaluation: scikit-learn metrics of every branch and the fusion on each fold's test
subjects, aggregated over folds and seeds, with collapse detection, per-fold and per-subject
tables and fusion diagnostics: the values of metrics.json (pipeline/report.py words them)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import entropy
from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             recall_score, roc_auc_score)

from pipeline.audit import audit_verdict, chance_accuracy
from pipeline.dataset import Trials
from pipeline.modalities import MODALITIES
from pipeline.selection import INFORMATIVE_ALPHA
from pipeline.split import fold_indices
from pipeline.stats import finite, paired_difference, sample_std, subject_interval

METRICS = ("acc", "balanced_acc", "f1_macro", "kappa", "auc")
SIGNED = {"kappa"}  # in [-1, 1]; the others in [0, 1]
# A model is flagged as collapsed when one class takes at least this share of its test predictions.
COLLAPSE_SHARE = 0.8


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted accuracy (UA, balanced accuracy): the recall of each class present in `y_true`,
    averaged (scikit-learn's balanced_accuracy_score, without its warning when a prediction names
    a class the trials do not have). Speech-emotion work reports it beside accuracy (WA)."""
    return float(recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """acc, balanced accuracy (UA), macro F1, Cohen's kappa and one-vs-rest macro AUC of
    probabilities (n, n_classes).

    Balanced accuracy, macro F1 and AUC average over the classes present in `y_true` (a class a fold or subject
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
    return {"acc": float(accuracy_score(y_true, y_pred)), "balanced_acc": balanced_accuracy(y_true, y_pred),
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
    (each the mean over seeds), `_ci` its 95% `stats.subject_interval` over subjects (seeded by `seed`),
    `_std` the sample std over subjects; `acc_seed_std` the std over seeds of the subject-mean
    accuracy (how much the seed alone moves it)."""
    summary: dict = {}
    for key in METRICS:
        values = [v for v in subject_scores(scored, key).values() if v is not None]
        summary[key] = _mean_or_none(values)
        summary[f"{key}_ci"] = subject_interval(values, seed, (-1.0, 1.0) if key in SIGNED else (0.0, 1.0))
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


def nondeterministic_kernels(histories: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Every kernel any training epoch of any model ran without a deterministic implementation
    (`training.fit` records them; none on CPU). histories: model -> run -> epochs."""
    return sorted({op for runs in histories.values() for epochs in runs.values() for epoch in epochs
                   for op in epoch.get("nondeterministic", [])})


def no_harm(model: dict, branch: dict) -> dict:
    """The test subjects `model` serves worse than `branch` (both scored by `score_model`): its
    accuracy on a subject below the branch's by more than one of the subject's trials (each
    accuracy a mean over seeds, so the difference times the subject's trial count > 1). A mean
    gain over subjects can hide them; a reviewer asks how many there are."""
    ours, theirs = subject_scores(model), subject_scores(branch)
    n_trials = {str(r["subject"]): r["n_trials"] for r in model["subjects"]}
    subjects = sorted(s for s in set(ours) & set(theirs) if ours[s] is not None and theirs[s] is not None)
    harmed = {s: ours[s] - theirs[s] for s in subjects if (theirs[s] - ours[s]) * n_trials[s] > 1 + 1e-9}
    return {"harmed": len(harmed), "share": len(harmed) / len(subjects) if subjects else None,
            "n_subjects": len(subjects), "subjects": harmed}


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
                       "best_branch_on_val": best, "below_best_branch": bool(gain["delta"] < 0),
                       "no_harm": no_harm(scored["fusion"], scored[best])},
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


def accuracy_summary(scored: dict, classes: list[str], seed: int) -> dict:
    """`acc`, `acc_ci` and `acc_std` of a model's test summary (`summarize_test`)."""
    return {k: v for k, v in summarize_test(scored, classes, seed).items() if k in ("acc", "acc_ci", "acc_std")}


def audit_metrics(scored_permuted: dict[str, dict], trials: Trials, seed: int, permute_labels: bool) -> dict:
    """The `audit` part of metrics.json (pipeline.audit): each baseline's test accuracy when
    trained on labels permuted within each training subject, `chance` (guessing from the
    training class shares), `passed` (no permuted-label interval wholly above chance) and the
    baselines that failed it; `permute_labels` echoes whether the whole run's labels were permuted."""
    folds = [fold_indices(trials.subjects, f) for f in trials.folds]
    chance = chance_accuracy(trials.labels, trials.subjects, folds, len(trials.classes))
    permuted = {name: accuracy_summary(s, trials.classes, seed) for name, s in scored_permuted.items()}
    passed, above = audit_verdict(permuted, chance)
    return {"permute_labels": permute_labels, "chance": chance, "passed": passed, "above_chance": above,
            "permuted": {name: {"test": test} for name, test in permuted.items()}}


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
